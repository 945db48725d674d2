"""The gate's other judges: an OpenAI-compatible LLM judge (a local server speaking the chat
completions wire format) trusted only when it ranks held-out answers as people did, and a
reward model trained with TRL's RewardTrainer by the pipeline."""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from pydantic import ValidationError
from scipy.stats import spearmanr

from driftline.api.config import Settings
from driftline.cli.ledger import ApiLedger
from driftline.evaluators.config import EvaluatorSettings
from driftline.evaluators.judge import JudgeError, LLMJudge
from driftline.finetune.config import FinetuneSettings, JudgeSettings
from driftline.finetune.gate.evaluation import Evidence, run_gate
from driftline.finetune.gate.judge import GateJudgeError, gate_judge
from driftline.finetune.gate.verdict import Verdict
from driftline.finetune.ledger import StoreLedger
from driftline.finetune.rewards import RewardModel
from driftline.finetune.train import Request, finetune
from driftline.review.feedback import FeedbackIn, store_feedback
from driftline.store import Store, keys
from tests.evaluators.judge_server import JudgeServer, completion
from tests.factory import auth
from tests.finetune import world


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


class ChatServer(JudgeServer):
    """A chat-completions endpoint whose model grades answers by their wording."""

    def __init__(self, inverted: bool = False, reply: str | None = None) -> None:
        self.inverted, self.reply = inverted, reply
        super().__init__(lambda prompt, _n: completion(self.grade(prompt)))

    def grade(self, content: str) -> str:
        answer = content.rsplit("Answer:\n", 1)[-1]
        good = "well documented" in answer
        score = 3 if "documented" not in answer and "maybe" not in answer else 5 if good else 1
        score = 6 - score if self.inverted else score
        return self.reply or json.dumps({"accuracy": score, "helpfulness": score})


@pytest.fixture
def scored(store: Store, tmp_path: Path) -> Iterator[tuple[StoreLedger, str, Path]]:
    world.insert_world(store, "alpha")
    world.insert_scores(store, "alpha")
    snap = world.snapshot(store, "alpha")
    base = world.base_model(tmp_path / "base")
    yield StoreLedger(store, "alpha"), snap.id, base


def judged(url: str) -> FinetuneSettings:
    judge = JudgeSettings(url=url, model="grader", criteria=["accuracy", "helpfulness"])
    return FinetuneSettings.model_validate(
        {"gate": {"judge": judge.model_dump(), "max_new_tokens": 12}}
    )


def gate_judged_by(
    server: ChatServer, scored: tuple[StoreLedger, str, Path], tmp_path: Path
) -> tuple[Verdict, Evidence]:
    """Gate an untrained copy of the base model with `server` as the LLM judge."""
    ledger, snapshot, base = scored
    try:
        settings = judged(server.url)
        assert settings.gate.judge is not None
        candidate = world.untrained(base, tmp_path / "same")
        judge, audit = gate_judge(settings.gate, {}, ledger, [])
        assert audit is None  # the gate's own judge: checked on the held-out scores
        _, verdict, evidence = run_gate(ledger, candidate, base, snapshot, settings, judge=judge)
    finally:
        server.close()
    return verdict, evidence


def test_a_judge_that_agrees_with_people_decides_the_win_rate(
    scored: tuple[StoreLedger, str, Path], tmp_path: Path
) -> None:
    ledger, snapshot, _ = scored
    people = ledger.held_out_scores(snapshot)
    assert len(people) >= 5 and {s for item in people for s in item.scores} == {
        "accuracy",
        "helpfulness",
    }
    server = ChatServer()
    verdict, evidence = gate_judged_by(server, scored, tmp_path)
    assert evidence.judge is not None
    assert evidence.judge["spearman"] == pytest.approx(1.0) and evidence.judge["trusted"]
    assert evidence.judge["items"] == len(people)
    assert evidence.win_rate["source"] == "LLM judge"
    # The same model on both sides: every answer ties, so the rate is a coin's and it is blocked.
    assert evidence.win_rate["rate"] == 0.5 and not verdict.promote
    assert evidence.criteria_before == evidence.criteria_after
    assert set(evidence.criteria_before) == {"accuracy", "helpfulness"}
    asked = [p for p in server.prompts if "tell me about" in p]
    assert len(asked) == len(server.prompts) and "Criteria: accuracy, helpfulness." in asked[0]


def test_a_judge_that_disagrees_with_people_is_not_trusted(
    scored: tuple[StoreLedger, str, Path], tmp_path: Path
) -> None:
    _, evidence = gate_judged_by(ChatServer(inverted=True), scored, tmp_path)
    assert evidence.judge is not None
    assert evidence.judge["spearman"] == pytest.approx(-1.0) and not evidence.judge["trusted"]
    assert evidence.win_rate["source"] == "held-out pairs (implicit reward)"
    assert evidence.criteria_before == {}


def test_a_judge_reply_without_scores_is_an_error() -> None:
    server = ChatServer(reply="I think it is fine.")
    try:
        judge = LLMJudge(JudgeSettings(url=server.url, model="grader"), ["accuracy"])
        with pytest.raises(JudgeError, match="no JSON object of scores"):
            judge.score("q", "a")
        server.reply = json.dumps({"accuracy": 9})
        with pytest.raises(JudgeError, match="no score 1-5 for 'accuracy'"):
            judge.score("q", "a")
    finally:
        server.close()
    with pytest.raises(JudgeError, match=re.escape(f"judge at {server.url}/chat/completions")):
        judge.score("q", "a")


def test_the_reward_model_learns_the_preference_and_judges_generations(
    scored: tuple[StoreLedger, str, Path], tmp_path: Path
) -> None:
    ledger, snapshot, base = scored
    settings = FinetuneSettings.model_validate(
        {
            "runs_dir": str(tmp_path / "runs"),
            "train": {"learning_rate": 5e-3, "epochs": 3, "batch_size": 8, "max_length": 64},
            "gate": {"max_new_tokens": 12},
        }
    )
    trained = finetune(ledger, Request(snapshot, "reward", base, tmp_path / "rm"), settings)
    assert trained.run.summary["reward_accuracy"] > 0.5
    reward = RewardModel.load(tmp_path / "rm")
    _, _, test = ledger.snapshot(snapshot)
    from driftline.finetune.train import render_prompt

    prompts = [render_prompt(reward.tokenizer, row["prompt"]) for row in test]
    chosen = reward.score(prompts, [row["chosen"][0]["content"] for row in test])
    rejected = reward.score(prompts, [row["rejected"][0]["content"] for row in test])
    right = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(test)
    assert right >= 0.9  # held-out pairs it never saw

    _, _, evidence = run_gate(
        ledger,
        world.untrained(base, tmp_path / "same"),
        base,
        snapshot,
        settings,
        reward=reward.score,
    )
    assert evidence.win_rate["source"] == "reward model"
    assert evidence.win_rate["rate"] == 0.5  # identical greedy answers tie
    assert evidence.criteria_before["reward_model"] == evidence.criteria_after["reward_model"]
    assert len(evidence.examples) == min(5, len({repr(r["prompt"]) for r in test}))


AUDITED = 40


CALLS = [(os.urandom(16).hex(), os.urandom(8).hex()) for _ in range(AUDITED)]


def plant_audits(store: Store, rho: float, seed: int, when: datetime) -> float:
    """The online judge `quality@1` graded the AUDITED CALLS and people scored them too (again,
    at `when`), their scores drawn to rank-correlate with the judge's near `rho`; the Spearman
    found."""
    rng = random.Random(seed)
    judge = [1 + i % 5 for i in range(AUDITED)]
    noise = math.sqrt(1 / rho**2 - 1) * 1.2  # the spread that leaves about `rho`
    people = [round(min(5, max(1, j + rng.gauss(0, noise)))) for j in judge]
    calls = CALLS
    for source, user, values in (("judge", "quality@1", judge), ("review", "ann", people)):
        records = [
            FeedbackIn.model_validate({"trace_id": t, "span_id": s, "name": name, "value": v,
                                       "user": user, "created_at": when})
            for (t, s), v in zip(calls, values, strict=True) for name in ("accuracy", "helpfulness")
        ]  # fmt: skip
        store_feedback(store, "alpha", records, source)  # type: ignore[arg-type]
    return float(spearmanr(judge, people).statistic)


def test_an_online_judge_decides_while_people_agree_with_it_and_is_ignored_after(
    scored: tuple[StoreLedger, str, Path], tmp_path: Path
) -> None:
    ledger, snapshot, base = scored
    server = ChatServer()
    quality = EvaluatorSettings.model_validate(
        {"kind": "llm_judge", "judge": {"url": server.url, "model": "grader"},
         "criteria": ["accuracy", "helpfulness"], "min_audited": 30}
    )  # fmt: skip
    settings = FinetuneSettings.model_validate(
        {"gate": {"evaluator": "quality", "max_new_tokens": 12}}
    )
    candidate = world.untrained(base, tmp_path / "same")

    def gate() -> Evidence:
        judge, audit = gate_judge(settings.gate, {"quality": quality}, ledger, [])
        assert judge is not None and audit is not None
        return run_gate(ledger, candidate, base, snapshot, settings, judge=judge, audit=audit)[2]

    try:
        # undecided (no audits yet): the held-out scores decide, as for the gate's own judge
        evidence = gate()
        assert evidence.judge is not None and evidence.judge["source"] == "held-out scores"
        assert evidence.win_rate["source"] == "LLM judge"

        start = datetime.now(UTC) - timedelta(minutes=5)
        close = plant_audits(ledger.store, 0.9, seed=1, when=start)
        assert 0.85 <= close <= 0.95
        evidence = gate()
        assert evidence.judge == {"spearman": pytest.approx(close), "items": AUDITED,
                                  "trusted": True, "source": "online audit"}  # fmt: skip
        assert evidence.win_rate["source"] == "LLM judge"
        assert set(evidence.criteria_before) == {"accuracy", "helpfulness"}

        # people re-score the same calls, now agreeing far less: the gate stops asking it
        loose = plant_audits(ledger.store, 0.5, seed=2, when=start + timedelta(minutes=1))
        assert 0.4 <= loose <= 0.6
        asked = len(server.prompts)
        evidence = gate()
    finally:
        server.close()
    assert evidence.judge is not None and not evidence.judge["trusted"]
    assert evidence.judge == {"spearman": pytest.approx(loose), "items": AUDITED,
                              "trusted": False, "source": "online audit"}  # fmt: skip
    assert evidence.win_rate["source"] == "held-out pairs (implicit reward)"
    assert evidence.criteria_before == {} and len(server.prompts) == asked


def test_the_gate_s_evaluator_must_be_a_configured_judge(tmp_path: Path) -> None:
    judge = {"url": "http://judge.invalid", "model": "grader"}
    with pytest.raises(ValidationError, match="give judge or evaluator, not both"):
        FinetuneSettings.model_validate({"gate": {"evaluator": "quality", "judge": judge}})
    with pytest.raises(ValidationError, match="'quality' names no llm_judge evaluator; "
                       "the judges configured: none"):  # fmt: skip
        Settings.model_validate({"finetune": {"gate": {"evaluator": "quality"}},
                                 "evaluators": {"quality": {"kind": "refusal"}}})  # fmt: skip
    found = Settings.model_validate({"finetune": {"gate": {"evaluator": "quality"}},
                                     "evaluators": {"quality": {"kind": "llm_judge",
                                                                "judge": judge}}})  # fmt: skip
    assert found.finetune.gate.evaluator == "quality"


def test_through_the_api_the_ledger_reads_the_collector_s_audit(collector_factory) -> None:
    config = {"kind": "llm_judge", "judge": {"url": "http://judge.invalid", "model": "grader"},
              "criteria": ["accuracy", "helpfulness"], "min_audited": 30}  # fmt: skip
    collector = collector_factory(evaluators={"quality": config}, evaluation={"enabled": False})
    store = collector.runtime.store
    plant_audits(store, 0.9, seed=1, when=datetime.now(UTC) - timedelta(minutes=1))
    _, key = keys.create_key(store, "alpha", "admin")
    remote = ApiLedger("http://testserver", key, "alpha")
    collector.client.headers.update(auth(key))
    remote.api._http = collector.client  # the collector's app, in process
    settings = EvaluatorSettings.model_validate(config)
    assert remote.judge_trust("quality", settings) == StoreLedger(store, "alpha").judge_trust(
        "quality", settings
    )
    assert remote.judge_trust("quality", settings).trusted is True
    other = EvaluatorSettings.model_validate({**config, "version": "2"})
    with pytest.raises(click.ClickException, match="audits evaluator 'quality' at version 1, "
                       "this config names version 2"):  # fmt: skip
        remote.judge_trust("quality", other)


def test_an_online_judge_of_other_projects_cannot_decide_this_one(store: Store) -> None:
    config = {"kind": "llm_judge", "judge": {"url": "http://judge.invalid", "model": "grader"},
              "projects": ["beta"]}  # fmt: skip
    gate = FinetuneSettings.model_validate({"gate": {"evaluator": "quality"}}).gate
    evaluators = {"quality": EvaluatorSettings.model_validate(config)}
    with pytest.raises(GateJudgeError, match="grades only beta, not 'alpha'"):
        gate_judge(gate, evaluators, StoreLedger(store, "alpha"), [])
