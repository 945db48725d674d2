"""The reward for online RL: a trained reward model's score, prompt-response relevance from an
injected embedder (the detectors' one; `finetune` may not import `driftline.detectors`), and a
weighted sum of such signals."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

RewardFn = Callable[[Sequence[str], Sequence[str]], list[float]]


def _check_pairs(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")


class RewardModel:
    """A sequence-classification reward model (one logit) scoring prompt + response."""

    def __init__(
        self, model: Any, tokenizer: Any, batch_size: int = 16, max_length: int | None = None
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        # The classifier reads the last token that is not padding, so it must know the pad id.
        model.config.get_text_config().pad_token_id = tokenizer.pad_token_id

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None, **kwargs: Any) -> RewardModel:
        """A reward model saved as a folder (e.g. by TRL's RewardTrainer)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), tokenizer, **kwargs)

    def _text(self, prompt: str, response: str) -> str:
        # TRL's RewardTrainer trains on prompt + completion ending in eos; score the same shape.
        text = prompt + response
        eos = self.tokenizer.eos_token
        return text if not eos or text.endswith(eos) else text + eos

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """The model's scalar score of each prompt-response pair."""
        _check_pairs(prompts, responses)
        self.model.eval()
        device = next(self.model.parameters()).device
        texts = [self._text(p, r) for p, r in zip(prompts, responses, strict=True)]
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                padding_side="right",
                truncation=self.max_length is not None,
                max_length=self.max_length,
                add_special_tokens=False,
            ).to(device)
            logits = self.model(**batch).logits
            scores.extend(logits[:, 0].float().cpu().tolist())
        return scores

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """Same as `score`, so a RewardModel is a RewardFn."""
        return self.score(prompts, responses)


def relevance(embed: Callable[[list[str]], np.ndarray]) -> RewardFn:
    """A reward: cosine similarity of each prompt's and response's embeddings."""

    def score(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        _check_pairs(prompts, responses)
        if not prompts:
            return []
        a = np.asarray(embed(list(prompts)), dtype=np.float64)
        b = np.asarray(embed(list(responses)), dtype=np.float64)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosine = (a * b).sum(axis=1) / np.maximum(norms, 1e-12)
        return [float(x) for x in cosine]

    return score


def combine(parts: Sequence[tuple[float, RewardFn]]) -> RewardFn:
    """A reward: the weighted sum of several rewards."""
    if not parts:
        raise ValueError("combine needs at least one (weight, reward) part")
    parts = list(parts)

    def score(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        total = [0.0] * len(prompts)
        for weight, part in parts:
            values = part(prompts, responses)
            if len(values) != len(prompts):
                raise ValueError(f"a reward returned {len(values)} scores for {len(prompts)} pairs")
            total = [t + weight * v for t, v in zip(total, values, strict=True)]
        return total

    return score
