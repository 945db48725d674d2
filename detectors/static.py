"""Static embeddings: a model2vec token table distilled from a sentence-transformers model.

A static model keeps one vector per token of the teacher's vocabulary (the teacher's output for
that token alone, reduced by PCA to 256 dimensions and weighted by token frequency); a text's
vector is the mean of its tokens' vectors. Encoding is a table look-up, thousands of texts a
second on one CPU core, with no torch at all (see `bench/embedders.py` for its speed, drift power
and relevance against the transformer it comes from).

The model is distilled from the teacher (all-MiniLM-L6-v2 by default) on first use, which takes
about 20 s and needs torch and transformers, and is kept in `<model_cache>/models/<name>`;
later starts load that folder with model2vec alone. The folder is written under a temporary name
and renamed into place, so a process never sees half a model. `<name>` (also the name recorded on
every stored vector) carries the dimension and a hash of the teacher's files and of the recipe,
so a different teacher or recipe gives a different name and its own folder.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from driftline.detectors.embedder import Embedder, EmbedderError, default_model_path

__all__ = [
    "PCA_DIMS",
    "StaticEmbedder",
    "cache_root",
    "distil",
    "is_static_folder",
    "is_transformer_folder",
    "static_name",
]

log = logging.getLogger("driftline.detectors")

PCA_DIMS = 256
SIF_COEFFICIENT = 1e-4
RECIPE = 1  # bump when the way driftline distils changes: the name, and so the folder, change
MARKER = "driftline.json"  # written last, inside the temporary folder, before the rename
DEFAULT_STATIC_BATCH = 1024
_SKIP = {"README.md", ".gitattributes", MARKER}
_INSTALL = "pip install 'driftline[detectors]'"


def cache_root(model_cache: str | Path | None = None) -> Path:
    """Where distilled models live: `<model_cache>/models`, default ~/.cache/driftline/models."""
    if model_cache:
        return Path(model_cache).expanduser() / "models"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "driftline" / "models"


def _says_model2vec(path: Path) -> bool:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "model2vec"


def is_static_folder(path: Path) -> bool:
    """A model2vec folder: config.json saying model_type model2vec, weights and tokenizer."""
    return _says_model2vec(path) and not _missing(path)


def _missing(path: Path) -> list[str]:
    return [f for f in ("model.safetensors", "tokenizer.json") if not (path / f).is_file()]


def is_transformer_folder(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "modules.json").is_file()


def _label(path: Path) -> str:
    return path.name if path.name != "model" else path.parent.name


def _files_digest(folder: Path, extra: str = "") -> str:
    """sha256 of every file under `folder` (relative path and bytes, sorted), then `extra`."""
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name not in _SKIP and ".git" not in p.relative_to(folder).parts
    )
    for file in files:
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    digest.update(extra.encode())
    return digest.hexdigest()


def _recipe() -> str:
    try:
        version = importlib.metadata.version("model2vec")
    except importlib.metadata.PackageNotFoundError:
        version = "absent"
    major_minor = ".".join(version.split(".")[:2])
    return f"recipe={RECIPE};pca={PCA_DIMS};sif={SIF_COEFFICIENT};model2vec={major_minor}"


def static_name(source: Path) -> str:
    """`<teacher>-static<dims>-<hash of the teacher's files and the recipe>`."""
    return f"{_label(source)}-static{PCA_DIMS}-{_files_digest(source, _recipe())[:10]}"


def _fsync_tree(folder: Path) -> None:
    for path in [*folder.rglob("*"), folder]:
        flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
        fd = os.open(path, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def distil(source: Path, target: Path, name: str, device: str | None = None) -> None:
    """Distil a model2vec model from the sentence-transformers folder `source` into `target`,
    atomically: built in a temporary sibling folder, then renamed. If another process renamed its
    copy into place first, that copy is kept."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        from model2vec.distill import distill as model2vec_distill
    except ImportError as exc:
        raise EmbedderError(
            f"distilling the static model needs model2vec with torch, transformers and skeletoken "
            f"({exc}): {_INSTALL}, or set model_path to a distilled model2vec folder"
        ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=target.parent))
    try:
        log.info("distilling a static embedding model from %s into %s (once)", source, target)
        started = time.perf_counter()
        model = model2vec_distill(
            model_name=str(source),
            pca_dims=PCA_DIMS,
            sif_coefficient=SIF_COEFFICIENT,
            device=device or "cpu",
        )
        model.save_pretrained(str(tmp))
        marker = {
            "name": name,
            "source": str(source),
            "recipe": _recipe(),
            "seconds": round(time.perf_counter() - started, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp made it private; the model is readable like any cache
        _fsync_tree(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / MARKER).is_file():
                raise
            log.info("another process distilled %s first; using its copy", target)
        else:
            _fsync_tree(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class StaticEmbedder(Embedder):
    """model2vec vectors, with the surface of `Embedder`: `name`, `dimension`, `model_path`,
    `batch_size`, `encode(texts)` -> float32 L2-normalised (n, dimension).

    `model_path` is a model2vec folder (used as is) or a sentence-transformers folder to distil
    from (default: the bundled all-MiniLM-L6-v2); distilled models are kept under
    `cache_root(model_cache)`. `distilled` says whether this instance had to distil.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        batch_size: int = DEFAULT_STATIC_BATCH,
        model_cache: str | Path | None = None,
        device: str | None = None,
    ) -> None:
        self.device = "cpu"
        self.batch_size = batch_size
        self.distilled = False
        given = Path(model_path).expanduser() if model_path else None
        if given is not None and not given.is_dir():
            raise EmbedderError(f"model_path {given} is not a folder")
        if given is not None and _says_model2vec(given):
            if _missing(given):
                raise EmbedderError(
                    f"model_path {given} is an incomplete model2vec folder: "
                    f"{', '.join(_missing(given))} missing"
                )
            folder = given
        else:
            source = given or default_model_path()
            if not is_transformer_folder(source):
                raise EmbedderError(
                    f"model_path {source} is neither a model2vec folder (config.json with "
                    "model_type model2vec, model.safetensors, tokenizer.json) nor a "
                    "sentence-transformers model folder to distil one from"
                )
            name = static_name(source)
            folder = cache_root(model_cache) / name
            if not (folder / MARKER).is_file():
                if folder.exists():
                    raise EmbedderError(
                        f"{folder} is not a complete static model (no {MARKER}); "
                        "delete it to distil the model again"
                    )
                distil(source, folder, name, device)
                self.distilled = True
        self.model_path = folder
        self.model: Any = _load(folder)
        vectors = np.asarray(self.model.embedding, dtype=np.float32)
        self.dimension = int(vectors.shape[1])
        self.name = _static_folder_name(folder, self.dimension)
        # A text with no known token (an empty one) gets the mean token direction, so every row
        # is a unit vector, as the transformer gives for any text.
        mean = vectors.mean(axis=0)
        self._fallback = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Shape (len(texts), dimension), float32, each row of unit length."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        raw = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            show_progress_bar=False,
            use_multiprocessing=False,
        )
        vectors = np.asarray(raw, dtype=np.float32)  # model2vec returns float16 here
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        empty = norms[:, 0] < 1e-6
        vectors = vectors / np.maximum(norms, 1e-12)
        if empty.any():
            vectors[empty] = self._fallback
        return vectors


def _static_folder_name(folder: Path, dimension: int) -> str:
    """The name in the folder's marker (a model driftline distilled), else one from its files."""
    try:
        marker = json.loads((folder / MARKER).read_text())
        name = marker.get("name") if isinstance(marker, dict) else None
        if isinstance(name, str) and name:
            return name
    except (OSError, ValueError):
        pass
    return f"{_label(folder)}-static{dimension}-{_files_digest(folder)[:10]}"


def _load(folder: Path) -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"  # model2vec falls back to the hub for a missing folder
    try:
        from model2vec import StaticModel
    except ImportError:
        raise EmbedderError(
            f"the static embedder needs the package model2vec: {_INSTALL}, "
            'or set embedder = "transformer"'
        ) from None
    if not is_static_folder(folder):
        raise EmbedderError(
            f"{folder} is not a model2vec folder (config.json with model_type model2vec, "
            "model.safetensors, tokenizer.json)"
        )
    try:
        return StaticModel.from_pretrained(str(folder), force_download=False)
    except Exception as exc:  # a damaged file: say which folder
        raise EmbedderError(f"{folder} could not be loaded as a model2vec model: {exc}") from exc
