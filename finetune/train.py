"""A fine-tune from a dataset snapshot to a candidate model folder: DPO, KTO and reward models
with TRL's trainers; PPO (ours) and GRPO (TRL) online. Every run is recorded, failures included,
and the result is registered as a candidate version for the gate."""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import PrinterCallback, TrainerCallback

from driftline.evaluators.agreement import JudgeTrust
from driftline.evaluators.config import EvaluatorSettings
from driftline.finetune import model_folders, registry
from driftline.finetune.config import METHODS, FinetuneSettings, TrainSettings
from driftline.finetune.dataset.rows import Row
from driftline.finetune.dataset.snapshots import Snapshot, SnapshotError
from driftline.finetune.ledger import Ledger, ModelVersion, Run, ScoredItem, VersionError
from driftline.finetune.model_folders import ModelError
from driftline.finetune.training_data import DataError, TrainingData, load_training_data
from driftline.store import env

log = logging.getLogger("driftline.finetune")

# TRL's log keys, as the run's curves name them.
_FIGURES = {
    "loss": "loss",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
    "rewards/chosen": "reward_chosen",
    "rewards/rejected": "reward_rejected",
    "rewards/margins": "reward_margin",
    "rewards/accuracies": "reward_accuracy",
    "kl": "kl",
    "accuracy": "reward_accuracy",
    "margin": "reward_margin",
    "reward": "reward",
}


class FinetuneError(RuntimeError):
    """A run failed; the message says why, and the run's row says so too."""


@dataclass(frozen=True)
class Request:
    """What to train: which snapshot, how, from which model, to which folder."""

    snapshot_id: str
    method: str
    model: Path
    out: Path
    reward_model: Path | None = None
    resume: str | None = None  # a run id to continue from its last checkpoint


@dataclass(frozen=True)
class Outcome:
    run: Run
    version: ModelVersion | None  # None for a reward model


RewardFactory = Callable[[Path | None], Any]


def finetune(
    ledger: Ledger,
    request: Request,
    settings: FinetuneSettings,
    *,
    online_reward: RewardFactory | None = None,
    progress: bool = True,
) -> Outcome:
    """Train, publish the model folder, register a policy as a candidate version; on any
    failure record the run as failed (or interrupted) and raise FinetuneError."""
    if request.method not in METHODS:
        raise FinetuneError(f"unknown method {request.method!r}; use one of {', '.join(METHODS)}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not (
        request.resume or os.environ.get(env.RUN_ID)
    ):
        raise FinetuneError(
            "several processes train this run (accelerate launch): set DRIFTLINE_RUN_ID to a new "
            "id, the same in every process, so they share its checkpoints"
        )
    if not main_process():
        ledger = _ReadOnly(ledger)
    run = _start(ledger, request, settings)
    try:
        model_folders.check_output(request.out)
        dataset = load_training_data(ledger, request.snapshot_id, request.method, settings.data)
        model_folders.check_causal_lm(request.model)
        figures = _train(ledger, run, dataset, request, settings, online_reward, progress)
    except (FinetuneError, DataError, SnapshotError, ModelError, VersionError, ValueError) as exc:
        raise _fail(ledger, run, str(exc)) from None
    except KeyboardInterrupt:
        run.status, run.error = "interrupted", "stopped by the user; resume with --resume " + run.id
        ledger.save_run(run)
        raise
    except Exception as exc:
        if _out_of_memory(exc):
            raise _fail(ledger, run, _oom_message(settings.train)) from None
        log.exception("fine-tune %s failed", run.id)
        raise _fail(ledger, run, f"{type(exc).__name__}: {exc}") from exc
    version = None
    if request.method != "reward":  # a reward model scores answers; it is not served
        version = registry.register(
            ledger,
            request.out,
            base_version=registry.baseline(ledger, request.model).version,
            run_id=run.id,
            snapshot_id=request.snapshot_id,
            method=request.method,
        )
    run.status = "succeeded"
    run.summary = {**figures, "version": version.version if version else ""}
    ledger.save_run(run)
    return Outcome(run, version)


def _start(ledger: Ledger, request: Request, settings: FinetuneSettings) -> Run:
    """A new run row, or the interrupted run being resumed."""
    if request.resume:
        found = ledger.runs(request.resume)
        if not found:
            raise FinetuneError(f"no run {request.resume!r} to resume in {ledger.project!r}")
        run = found[0]
        if run.status == "succeeded":
            raise FinetuneError(f"run {run.id} already succeeded; nothing to resume")
        run.status, run.error = "running", ""
    else:
        run = Run(
            id=os.environ.get(env.RUN_ID, "") or uuid.uuid4().hex,
            project=ledger.project,
            snapshot_id=request.snapshot_id,
            method=request.method,
            base_model=str(request.model.resolve()),
            output=str(request.out.resolve()),
            params=settings.train.model_dump(mode="json"),
        )
    ledger.save_run(run)
    return run


def main_process() -> bool:
    """Under `accelerate launch` (or torchrun) every rank runs the pipeline; only rank 0
    records the run and writes the model."""
    return int(os.environ.get("RANK", "0")) == 0


class _ReadOnly:
    """The ledger of a rank other than 0: it reads the snapshot, and records nothing."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger, self.project = ledger, ledger.project

    def snapshot(self, snapshot_id: str) -> tuple[Snapshot, list[Row], list[Row]]:
        return self._ledger.snapshot(snapshot_id)

    def held_out_scores(self, snapshot_id: str) -> list[ScoredItem]:
        return self._ledger.held_out_scores(snapshot_id)

    def runs(self, run_id: str | None = None) -> list[Run]:
        return self._ledger.runs(run_id)

    def versions(self) -> list[ModelVersion]:
        return self._ledger.versions()

    def save_run(self, run: Run) -> None:
        pass

    def save_metrics(self, run_id: str, step: int, figures: dict[str, float]) -> None:
        pass

    def save_version(self, version: ModelVersion) -> None:
        pass

    def judge_trust(self, name: str, config: EvaluatorSettings) -> JudgeTrust:
        return self._ledger.judge_trust(name, config)


def _fail(ledger: Ledger, run: Run, message: str) -> FinetuneError:
    run.status, run.error = "failed", message
    ledger.save_run(run)
    return FinetuneError(f"run {run.id} failed: {message}")


def _out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _oom_message(train: TrainSettings) -> str:
    return (
        f"out of memory at batch size {train.batch_size}, max length {train.max_length}: "
        "lower finetune.train.batch_size (raise gradient_accumulation_steps to keep the "
        "effective batch), lower max_length, or turn on lora and gradient_checkpointing"
    )


# --- training --------------------------------------------------------------------------------


def checkpoints_dir(settings: FinetuneSettings, run: Run) -> Path:
    return settings.runs_dir / run.id / "checkpoints"


def _train(
    ledger: Ledger,
    run: Run,
    dataset: TrainingData,
    request: Request,
    settings: FinetuneSettings,
    online_reward: RewardFactory | None,
    progress: bool,
) -> dict[str, Any]:
    """Train by the method, publish the folder; the last figures of the run."""
    import torch

    torch.manual_seed(settings.train.seed)
    model, tokenizer = model_folders.load_causal_lm(request.model)
    recorder = Recorder(ledger, run)
    manifest = {
        "run_id": run.id,
        "snapshot_id": request.snapshot_id,
        "method": request.method,
        "base_model": run.base_model,
        "project": ledger.project,
    }
    if request.method in ("ppo", "grpo"):
        if online_reward is None:
            raise FinetuneError(f"{request.method} needs a reward (pass --reward-model)")
        trained = _online(
            request, dataset, model, tokenizer, settings, online_reward, recorder, progress
        )
        save = _saver(trained, tokenizer)
    else:
        trainer = _trainer(request, dataset, model, tokenizer, settings, run, recorder, progress)
        trainer.remove_callback(PrinterCallback)  # stdout is the CLI's answer; figures are recorded
        checkpoint = _last_checkpoint(checkpoints_dir(settings, run)) if request.resume else None
        trainer.train(resume_from_checkpoint=checkpoint)
        trained = trainer.model
        if settings.train.lora and hasattr(trained, "merge_and_unload"):
            trained = trained.merge_and_unload()
        save = _saver(trained, tokenizer)
    if main_process():
        model_folders.publish_model(request.out, save, manifest)
    return recorder.last


def _saver(model: Any, tokenizer: Any) -> Callable[[Path], None]:
    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return save


def _last_checkpoint(folder: Path) -> str | None:
    """The newest `checkpoint-N` folder, to resume from."""
    found = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(found[-1]) if found else None


def _common_args(settings: FinetuneSettings, run: Run, progress: bool) -> dict[str, Any]:
    """TrainingArguments every TRL trainer takes, CPU or GPU."""
    import torch

    train = settings.train
    gpu = torch.cuda.is_available()
    return {
        "output_dir": str(checkpoints_dir(settings, run)),
        "learning_rate": train.learning_rate,
        "num_train_epochs": train.epochs,
        "max_steps": train.max_steps,
        "per_device_train_batch_size": train.batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "gradient_checkpointing": train.gradient_checkpointing,
        "save_strategy": "steps",
        "save_steps": train.save_steps,
        "save_total_limit": 2,
        "logging_steps": 1,
        "report_to": [],
        "seed": train.seed,
        "use_cpu": not gpu,
        "bf16": gpu and torch.cuda.is_bf16_supported(),
        "disable_tqdm": not progress,
        "dataloader_num_workers": 0,
        "max_length": train.max_length,
    }


def _peft_config(train: TrainSettings) -> Any:
    if not train.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=train.lora_r,
        lora_alpha=train.lora_alpha,
        lora_dropout=train.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def _trainer(
    request: Request,
    dataset: TrainingData,
    model: Any,
    tokenizer: Any,
    settings: FinetuneSettings,
    run: Run,
    recorder: Recorder,
    progress: bool,
) -> Any:
    """The TRL trainer for an offline method, with the reference loaded from the model's own
    folder (LoRA needs none: the adapters off are the reference)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    train = settings.train
    args = _common_args(settings, run, progress)
    rows = Dataset.from_list(dataset.train)
    peft = _peft_config(train)
    reference = (
        None
        if peft is not None
        else AutoModelForCausalLM.from_pretrained(request.model, local_files_only=True)
    )
    if request.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOTrainer(
            model=model, ref_model=reference, train_dataset=rows,
            args=DPOConfig(**args, beta=train.beta, loss_type=[train.loss_type]),
            processing_class=tokenizer, peft_config=peft, callbacks=[recorder],
        )  # fmt: skip
    if request.method == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOTrainer(
            model=model, ref_model=reference, args=KTOConfig(**args, beta=train.beta),
            train_dataset=rows,
            processing_class=tokenizer, peft_config=peft, callbacks=[recorder],
        )  # fmt: skip
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    scorer = AutoModelForSequenceClassification.from_pretrained(
        request.model, num_labels=1, local_files_only=True
    )
    scorer.config.pad_token_id = tokenizer.pad_token_id
    peft_seq = None
    if peft is not None:
        peft.task_type = "SEQ_CLS"
        peft_seq = peft
    return RewardTrainer(
        model=scorer, args=RewardConfig(**args), train_dataset=rows,
        processing_class=tokenizer, peft_config=peft_seq, callbacks=[recorder],
    )  # fmt: skip


def _online(
    request: Request,
    dataset: TrainingData,
    model: Any,
    tokenizer: Any,
    settings: FinetuneSettings,
    online_reward: RewardFactory,
    recorder: Recorder,
    progress: bool,
) -> Any:
    """PPO (ours) or GRPO (TRL) on the snapshot's prompts; the trained causal LM."""
    from transformers import AutoModelForCausalLM

    train = settings.train
    reward = online_reward(request.reward_model)
    prompts = [render_prompt(tokenizer, p) for p in dataset.prompts()]
    if request.method == "ppo":
        from driftline.finetune.rl import PolicyWithValue, PPOSettings, train_ppo

        reference = AutoModelForCausalLM.from_pretrained(request.model, local_files_only=True)
        with tqdm(total=train.rl_steps, desc="ppo", disable=not progress) as bar:

            def on_step(step: int, figures: dict[str, float]) -> None:
                recorder.step(step, figures, train.rl_steps)
                bar.update(1)
                bar.set_postfix(reward=figures["reward"], kl=figures["kl"])

            policy = train_ppo(
                PolicyWithValue(model), reference, tokenizer, prompts, reward,
                PPOSettings(
                    steps=train.rl_steps, rollout_batch=train.rollout_batch,
                    learning_rate=train.learning_rate, max_new_tokens=train.max_new_tokens,
                    seed=train.seed,
                ),
                on_step=on_step,
            )  # fmt: skip
        return policy.model
    import torch

    from driftline.finetune.grpo import train_grpo

    return train_grpo(
        model, tokenizer, prompts, reward, out_dir=checkpoints_dir(settings, recorder.run),
        steps=train.rl_steps, learning_rate=train.learning_rate, num_generations=4,
        max_completion_length=train.max_new_tokens, on_step=recorder.step,
        use_cpu=not torch.cuda.is_available(), seed=train.seed,
    )  # fmt: skip


def render_prompt(tokenizer: Any, prompt: Any) -> str:
    """A prompt as the model reads it: chat messages through the chat template, text as is."""
    if isinstance(prompt, str):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError("the snapshot holds chat messages but the tokenizer has no chat template")
    return str(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False))


# --- recording -------------------------------------------------------------------------------


class Recorder(TrainerCallback):
    """Writes the trainer's logs to the run's curves and its progress to the run row."""

    def __init__(self, ledger: Ledger, run: Run, every: float = 2.0) -> None:
        self.ledger, self.run, self.every = ledger, run, every
        self.last: dict[str, float] = {}
        self._saved = 0.0

    def step(self, step: int, logs: dict[str, Any], total: int | None = None) -> None:
        """One step's figures (TRL's names or ours)."""
        figures = {
            _FIGURES.get(k, k.replace("/", "_")): float(v)
            for k, v in logs.items()
            if isinstance(v, int | float) and math.isfinite(v) and k not in ("epoch", "step")
        }
        if figures:
            self.ledger.save_metrics(self.run.id, step, figures)
            self.last.update(figures)
        self.run.step = step
        if total:
            self.run.total_steps = total
        if time.monotonic() - self._saved > self.every:
            self._saved = time.monotonic()
            self.run.summary = dict(self.last)
            self.ledger.save_run(self.run)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        self.step(state.global_step, logs or {}, state.max_steps)
