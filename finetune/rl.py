"""Our PPO loop for causal LMs (TRL removed `PPOTrainer`): sample responses, score them, penalise
the KL to the frozen reference per token, estimate advantages by GAE, then a few epochs of
clipped policy and value updates on shuffled minibatches. The arithmetic lives in `ppo.py`."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from driftline.finetune.ppo import (
    AdaptiveKL,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_penalised_rewards,
    masked_mean,
    masked_whiten,
)
from driftline.finetune.rewards import RewardFn

VALUE_HEAD_FILE = "value_head.safetensors"
FIGURES = (
    "reward",
    "kl",
    "kl_coef",
    "policy_loss",
    "value_loss",
    "clip_fraction",
    "entropy",
    "learning_rate",
    "response_length",
)


@dataclass
class PPOSettings:
    """PPO's knobs; `minibatch` is sequences per update and must divide `rollout_batch`."""

    steps: int = 100
    rollout_batch: int = 16
    minibatch: int = 4
    ppo_epochs: int = 4
    learning_rate: float = 1e-5
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0
    clip: float = 0.2
    value_clip: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    kl_coef: float = 0.2
    kl_target: float = 6.0
    kl_horizon: int = 10_000
    whiten_advantages: bool = True
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        at_least_one = ("steps", "rollout_batch", "minibatch", "ppo_epochs", "max_new_tokens")
        for name in (*at_least_one, "kl_horizon"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        positive = ("learning_rate", "temperature", "clip", "value_clip", "kl_target")
        for name in (*positive, "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("top_k", "vf_coef", "kl_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.rollout_batch % self.minibatch:
            raise ValueError(
                f"minibatch ({self.minibatch}) must divide rollout_batch ({self.rollout_batch})"
            )

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain values (for a run's record)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class PolicyWithValue(torch.nn.Module):
    """A causal LM with a linear value head on its last hidden state."""

    def __init__(self, model: Any, value_head: torch.nn.Linear | None = None) -> None:
        super().__init__()
        self.model = model
        hidden = model.config.get_text_config().hidden_size
        if value_head is None:
            value_head = torch.nn.Linear(hidden, 1)
            # Small initial values keep the first value loss from swamping the policy loss.
            torch.nn.init.normal_(value_head.weight, std=1 / (hidden + 1))
            torch.nn.init.zeros_(value_head.bias)
        self.value_head = value_head.to(next(model.parameters()).device)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [batch, tokens, vocab] and values [batch, tokens]."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions(attention_mask),
            output_hidden_states=True,
            use_cache=False,
        )
        hidden = out.hidden_states[-1]
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return out.logits, values

    def save_pretrained(self, folder: str | Path, tokenizer: Any | None = None) -> None:
        """A plain causal-LM folder (plus tokenizer) with the value head in its own file."""
        from safetensors.torch import save_file

        folder = Path(folder)
        self.model.save_pretrained(str(folder))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(folder))
        state = {k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()}
        save_file(state, str(folder / VALUE_HEAD_FILE))

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kwargs: Any) -> PolicyWithValue:
        """The LM of a folder, with its saved value head when there is one."""
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM

        folder = Path(folder)
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
        policy = cls(model)
        if (folder / VALUE_HEAD_FILE).exists():
            policy.value_head.load_state_dict(load_file(str(folder / VALUE_HEAD_FILE)))
        return policy


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding, as `generate` computes them."""
    ids = attention_mask.long().cumsum(-1) - 1
    return ids.masked_fill(attention_mask == 0, 0)


def response_mask(responses: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1 on each response token up to and including its first eos, 0 after it."""
    is_eos = (responses == eos_token_id).long()
    # Eos tokens strictly before a position; the first eos itself still counts.
    before = is_eos.cumsum(dim=1) - is_eos
    return (before == 0).float()


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probability of each token under logits at the same positions (scaled as sampled)."""
    logprobs = F.log_softmax(logits.float() / temperature, dim=-1)
    return logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_of(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Entropy of the sampling distribution at each position."""
    logprobs = F.log_softmax(logits.float() / temperature, dim=-1)
    return -(logprobs.exp() * logprobs).sum(-1)


@dataclass
class Rollout:
    """One batch of sampled responses and what PPO needs of them; [batch, response tokens]."""

    input_ids: torch.Tensor  # prompt then response, [batch, all tokens]
    attention_mask: torch.Tensor
    prompt_length: int
    mask: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor
    texts: list[str]
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    @property
    def responses(self) -> torch.Tensor:
        """The sampled response tokens."""
        return self.input_ids[:, self.prompt_length :]


def _response_slice(
    logits: torch.Tensor, values: torch.Tensor | None, prompt_length: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    # Position t predicts token t + 1, so response tokens are read one position earlier.
    end = logits.shape[1] - 1
    sliced = values[:, prompt_length - 1 : end] if values is not None else None
    return logits[:, prompt_length - 1 : end], sliced


def sample(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Prompt and sampled response ids, their attention mask and the (left-padded) prompt length."""
    device = next(model.parameters()).device
    batch = tokenizer(
        list(prompts),
        return_tensors="pt",
        padding=True,
        padding_side="left",
        add_special_tokens=False,  # the prompts are rendered already, special tokens included
    ).to(device)
    output = model.generate(
        **batch,
        do_sample=True,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=1.0,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    prompt_length = batch["input_ids"].shape[1]
    # Every generated position is attended, as during generation; the loss mask handles eos.
    ones = torch.ones_like(output[:, prompt_length:])
    attention_mask = torch.cat([batch["attention_mask"], ones], dim=1)
    return output, attention_mask, prompt_length


def decode_responses(tokenizer: Any, responses: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """Each response's text up to its first eos, special tokens dropped."""
    return [
        tokenizer.decode(row[live > 0].tolist(), skip_special_tokens=True).strip()
        for row, live in zip(responses, mask, strict=True)
    ]


def generate_responses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
) -> list[str]:
    """Sampled response texts for rendered prompts."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ids, _, prompt_length = sample(
            model, tokenizer, prompts, max_new_tokens, temperature, top_k
        )
    model.train(was_training)
    responses = ids[:, prompt_length:]
    return decode_responses(tokenizer, responses, response_mask(responses, tokenizer.eos_token_id))


@torch.no_grad()
def rollout(
    policy: PolicyWithValue,
    reference: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    reward: RewardFn,
    settings: PPOSettings,
) -> Rollout:
    """Sample, score and measure one batch of responses (no advantages yet)."""
    ids, attention, prompt_length = sample(
        policy.model, tokenizer, prompts, settings.max_new_tokens, settings.temperature,
        settings.top_k,
    )  # fmt: skip
    responses = ids[:, prompt_length:]
    mask = response_mask(responses, tokenizer.eos_token_id)
    all_logits, all_values = policy(ids, attention)
    logits, values = _response_slice(all_logits, all_values, prompt_length)
    assert values is not None
    ref_out = reference(input_ids=ids, attention_mask=attention, position_ids=positions(attention))
    ref_logits, _ = _response_slice(ref_out.logits, None, prompt_length)
    texts = decode_responses(tokenizer, responses, mask)
    scores = torch.tensor(reward(list(prompts), texts), dtype=torch.float32, device=ids.device)
    return Rollout(
        input_ids=ids,
        attention_mask=attention,
        prompt_length=prompt_length,
        mask=mask,
        logprobs=token_logprobs(logits, responses, settings.temperature),
        ref_logprobs=token_logprobs(ref_logits, responses, settings.temperature),
        values=values.float() * mask,
        scores=scores,
        texts=texts,
    )


def minibatch_step(
    policy: PolicyWithValue,
    optimizer: torch.optim.Optimizer,
    batch: Rollout,
    index: torch.Tensor,
    settings: PPOSettings,
) -> dict[str, float]:
    """One clipped policy + value update on the rows `index` of a scored rollout."""
    assert batch.advantages is not None and batch.returns is not None
    mask = batch.mask[index]
    logits, values = policy(batch.input_ids[index], batch.attention_mask[index])
    logits, values = _response_slice(logits, values, batch.prompt_length)
    assert values is not None
    logprobs = token_logprobs(logits, batch.responses[index], settings.temperature)
    policy_loss, clip_fraction = clipped_policy_loss(
        logprobs, batch.logprobs[index], batch.advantages[index], mask, settings.clip
    )
    value_loss = clipped_value_loss(
        values.float(), batch.values[index], batch.returns[index], mask, settings.value_clip
    )
    optimizer.zero_grad()
    (policy_loss + settings.vf_coef * value_loss).backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), settings.max_grad_norm)
    optimizer.step()
    with torch.no_grad():
        entropy = masked_mean(entropy_of(logits, settings.temperature), mask)
    return {
        "policy_loss": policy_loss.item(),
        "value_loss": value_loss.item(),
        "clip_fraction": clip_fraction.item(),
        "entropy": entropy.item(),
    }


def _seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def train_ppo(
    policy: PolicyWithValue,
    reference: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    reward: RewardFn,
    settings: PPOSettings,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> PolicyWithValue:
    """PPO against `reward` with a KL penalty to the frozen `reference`; prompts are rendered."""
    if not prompts:
        raise ValueError("train_ppo needs at least one prompt")
    _seed(settings.seed)
    # Dropout stays off throughout: old and new logprobs must come from the same function.
    policy.eval()
    reference.eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=settings.learning_rate)
    kl_control = AdaptiveKL(settings.kl_coef, settings.kl_target, settings.kl_horizon)
    prompts = list(prompts)
    order: list[str] = []
    for step in range(1, settings.steps + 1):
        batch_prompts: list[str] = []
        while len(batch_prompts) < settings.rollout_batch:
            if not order:
                order = random.sample(prompts, len(prompts))
            batch_prompts.append(order.pop())
        batch = rollout(policy, reference, tokenizer, batch_prompts, reward, settings)
        rewards, kl = kl_penalised_rewards(
            batch.scores, batch.logprobs, batch.ref_logprobs, batch.mask, kl_control.coef
        )
        advantages, batch.returns = gae(
            rewards, batch.values, batch.mask, settings.gamma, settings.lam
        )
        if settings.whiten_advantages:
            advantages = masked_whiten(advantages, batch.mask)
        batch.advantages = advantages
        figures: dict[str, list[float]] = {}
        for _ in range(settings.ppo_epochs):
            shuffled = torch.randperm(settings.rollout_batch)
            for start in range(0, settings.rollout_batch, settings.minibatch):
                index = shuffled[start : start + settings.minibatch]
                for key, value in minibatch_step(policy, optimizer, batch, index, settings).items():
                    figures.setdefault(key, []).append(value)
        report = {key: sum(values) / len(values) for key, values in figures.items()}
        report |= {
            "reward": batch.scores.mean().item(),
            "kl": kl.mean().item(),
            "kl_coef": kl_control.coef,
            "learning_rate": settings.learning_rate,
            "response_length": batch.mask.sum(dim=1).mean().item(),
        }
        kl_control.update(report["kl"], settings.rollout_batch)
        if on_step is not None:
            on_step(step, {key: report[key] for key in FIGURES})
    return policy
