"""The gate's other judges: an OpenAI-compatible LLM judge (a local server speaking the chat
completions wire format) trusted only when it ranks held-out answers as people did, and a
reward model trained with TRL's RewardTrainer by the pipeline."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.evaluators.judge import JudgeError
from driftline.finetune.config import FinetuneSettings, JudgeSettings
from driftline.finetune.gate.evaluation import Evidence, run_gate
from driftline.finetune.gate.judge import gate_judge
from driftline.finetune.gate.verdict import Verdict
from driftline.finetune.ledger import StoreLedger
from driftline.finetune.rewards import RewardModel
from driftline.finetune.train import Request, finetune
from driftline.store import Store
from tests.evaluators.judge_server import JudgeServer, completion
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
        judge = gate_judge(settings.gate.judge)
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
        judge = gate_judge(JudgeSettings(url=server.url, model="grader", criteria=["accuracy"]))
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
