"""The maintained online-RL alternative to our PPO: TRL's GRPOTrainer driven with our RewardFn."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from driftline.finetune.rewards import RewardFn

# TRL's log key for each figure we report.
LOG_KEYS = {"reward": "reward", "kl": "kl", "loss": "loss", "learning_rate": "learning_rate"}


class _ForwardLogs(TrainerCallback):
    """Hands each training log's figures to `on_step`."""

    def __init__(self, on_step: Callable[[int, dict[str, float]], None]) -> None:
        self.on_step = on_step

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
    ) -> None:
        """Forward the figures of a log that carries a reward (the end-of-run summary does not)."""
        if not logs or logs.get("reward") is None:
            return
        figures = {
            ours: float(logs[theirs])
            for ours, theirs in LOG_KEYS.items()
            if logs.get(theirs) is not None
        }
        self.on_step(state.global_step, figures)


def train_grpo(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    reward: RewardFn,
    out_dir: str | Path,
    steps: int,
    learning_rate: float = 1e-6,
    num_generations: int = 8,
    max_completion_length: int = 64,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    use_cpu: bool = True,
    beta: float = 0.0,
    seed: int = 0,
) -> Any:
    """GRPO on rendered prompts; `beta` > 0 (a KL term) needs `model` as a folder path."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    if not prompts:
        raise ValueError("train_grpo needs at least one prompt")

    def reward_fn(prompts: list[str], completions: list[str], **_: Any) -> list[float | None]:
        return list(reward(prompts, completions))

    reward_fn.__name__ = "reward"  # TRL names the reward's log columns after the function
    args = GRPOConfig(
        output_dir=str(out_dir),
        max_steps=steps,
        learning_rate=learning_rate,
        num_generations=num_generations,
        per_device_train_batch_size=num_generations,
        max_completion_length=max_completion_length,
        beta=beta,
        seed=seed,
        use_cpu=use_cpu,
        # bf16 autocast on a CPU is slow and lossy; on an accelerator keep TRL's default (None).
        bf16=False if use_cpu else None,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_fn,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": list(prompts)}),
        processing_class=tokenizer,
        callbacks=[_ForwardLogs(on_step)] if on_step is not None else None,
    )
    trainer.train()
    return trainer.model
