"""Model folders: check that one holds a causal LM before loading it, and write a trained one
so that a folder either holds a whole model or does not exist."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

MANIFEST = "driftline.json"


class ModelError(ValueError):
    """A model folder is missing, unreadable or not a causal LM; the message says which."""


def check_causal_lm(path: str | Path) -> None:
    """Raise ModelError unless `path` is a folder with a causal-LM config and a tokenizer."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    folder = Path(path)
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder")
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: not a model folder (no config.json)")
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder}: unreadable config.json: {exc}") from None
    kind = getattr(config, "model_type", "")
    architectures = getattr(config, "architectures", None) or []
    if kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (
        architectures and not any(a.endswith("ForCausalLM") for a in architectures)
    ):
        raise ModelError(
            f"{folder}: not a causal language model (model_type {kind!r}, architectures "
            f"{architectures}); DPO, KTO and PPO train a causal LM (e.g. *ForCausalLM)"
        )
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise ModelError(f"{folder}: no tokenizer saved beside the model")


def load_causal_lm(path: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) from a checked folder; the tokenizer gets a pad token if it lacks one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_causal_lm(path)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    return model, tokenizer


def check_output(out: Path) -> None:
    """A trained model goes only to a folder that does not exist yet (or is empty)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ModelError(f"{out} already exists; a fine-tune never overwrites a model folder")


def publish_model(out: Path, save: Callable[[Path], None], manifest: dict[str, Any]) -> None:
    """Save into a hidden folder beside `out`, then rename it to `out` in one step, so a crash
    leaves no half-written model behind."""
    check_output(out)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        save(partial)
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
