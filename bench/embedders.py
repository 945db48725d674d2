"""Embedders for driftline's detectors, side by side: speed, drift power and relevance.

On the Debian fixture (prompt = "What is {package}? {synopsis}", response = the description,
section = topic), for each embedder:

* **texts/s** embedding the prompts and the responses of a pool of calls, as the embedding job
  does (one call = two texts), and the CPU seconds (all threads) that costs per 500 calls;
* **drift power** of driftline's `mmd_test` on the response vectors (as the runner tests them),
  on paired trials (the same row draws for every embedder) at n = m = 500: no shift (the
  false-alarm rate at alpha 0.05), a mild and a clear topic-mix tilt (bench/drift.py's) and a
  new topic making up 10% of the current window;
* the same **at equal CPU time**: the window the static model affords in the CPU time the plain
  transformer spends on a 500-call window (embedding its calls plus the test), capped by what the
  fixture holds; the n each other embedder would afford is reported, not tested;
* **relevance**: AUC of the prompt-response cosine separating genuine pairs from shuffled
  (off-topic: another section's answer) pairs.

Embedders: plain `SentenceTransformer.encode` at max_seq_length 256 (the baseline), 128 and 64;
ONNX Runtime fp32 and int8 (dynamic quantization) of the same model, exported by torch.onnx
(needs bench/requirements-onnx.txt; those rows are skipped without it); and driftline's static
embedder (model2vec, distilled from the same model into serve's model cache). All on CPU.

    .venv/bin/pip install -r bench/requirements-onnx.txt   # once, for the ONNX rows
    .venv/bin/python bench/embedders.py [--trials 30] [--quick] [--record PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import drift, record  # drift: the fixture, its trials and mmd_test

RESULTS = drift.RESULTS
PACKAGES = ("torch", "sentence-transformers", "model2vec", "onnxruntime", "numpy")
ALPHA = drift.ALPHA
# A topic the reference never sees, 10% of the current window: science and engineering.
NEW_TOPIC = ("science", "math", "electronics", "hamradio")
NEW_TOPIC_SHARE = 0.10
CONDITIONS = (*drift.SHIFTS, "new topic (10%)")
BASELINE = "st256"


@dataclass
class Variant:
    key: str
    label: str
    encode: Callable[[list[str]], np.ndarray]
    setup_s: float
    note: str = ""
    rounds: int = 1
    out: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- embedders


def sentence_transformer(max_len: int) -> Variant:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    start = time.perf_counter()
    model = SentenceTransformer(drift.model_folder(), device="cpu", local_files_only=True)
    model.max_seq_length = max_len

    def encode(texts: list[str]) -> np.ndarray:
        vectors = model.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )  # fmt: skip
        return np.asarray(vectors, dtype=np.float32)

    label = f"SentenceTransformer.encode, max {max_len} tokens"
    return Variant(f"st{max_len}", label, encode, time.perf_counter() - start)


def onnx_export(folder: Path) -> tuple[Path, Path, float, float]:
    """MiniLM's transformer as ONNX (torch.onnx, dynamo exporter), and its int8 dynamic
    quantization. Returns both paths and the seconds each step took."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    folder.mkdir(parents=True, exist_ok=True)
    fp32, int8 = folder / "minilm.onnx", folder / "minilm-int8.onnx"
    start = time.perf_counter()
    # Eager attention: the SDPA path exports masks that ONNX Runtime then gets wrong.
    model = AutoModel.from_pretrained(drift.model_folder(), attn_implementation="eager").eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    ids = torch.ones((2, 8), dtype=torch.long)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=512)
    dims = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq},
            "token_type_ids": {0: batch, 1: seq}}  # fmt: skip
    torch.onnx.export(
        Hidden(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(fp32),
        input_names=list(dims), output_names=["last_hidden_state"], dynamic_shapes=dims,
        opset_version=18, dynamo=True, external_data=False, verbose=False,
    )  # fmt: skip
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return fp32, int8, export_s, time.perf_counter() - start


def onnx_runtime(path: Path, key: str, label: str, setup_s: float, max_len: int = 256) -> Variant:
    """Tokenize (the model's tokenizer.json), sort by length, batches of 64, mean-pool, normalise:
    what sentence-transformers does, with ONNX Runtime running the transformer."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    start = time.perf_counter()
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(Path(drift.model_folder()) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_len)

    def encode(texts: list[str]) -> np.ndarray:
        encodings = tokenizer.encode_batch(texts)
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        out: np.ndarray | None = None
        for at in range(0, len(texts), 64):
            rows = order[at : at + 64]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                ids[r, : len(encodings[i].ids)] = encodings[i].ids
                mask[r, : len(encodings[i].ids)] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = session.run(None, feeds)[0]
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
            if out is None:
                out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            out[rows] = pooled
        assert out is not None
        return out

    return Variant(key, label, encode, setup_s + time.perf_counter() - start)


def static() -> Variant:
    """The static embedder as `driftline serve` makes it (and caches it, in its model cache)."""
    from driftline.detectors.config import DetectorSettings
    from driftline.detectors.embedder import make_embedder

    start = time.perf_counter()
    embedder = make_embedder(DetectorSettings())
    setup_s = time.perf_counter() - start
    marker = json.loads((embedder.model_path / "driftline.json").read_text())
    how = "distilled in this run" if getattr(embedder, "distilled", False) else "cached"
    note = f"{embedder.name}; distillation took {marker['seconds']:.0f} s ({how})"
    label = f"driftline static (model2vec, {embedder.dimension}-d)"
    return Variant("static", label, embedder.encode, setup_s, note, rounds=3)


def stored_int8(v: Variant) -> Variant:
    """The static vectors as call_vectors keeps them: int8, normalised again when read."""
    import pyarrow as pa

    from driftline.detectors.embeddings import dequantize, quantize

    def encode(texts: list[str]) -> np.ndarray:
        return dequantize(pa.table({"v": quantize(v.encode(texts))}), "v")

    label = f"{v.label}, stored as int8"
    return Variant("static-int8", label, encode, v.setup_s, "as call_vectors stores it", 3)


def build_variants(args: argparse.Namespace) -> tuple[list[Variant], str]:
    shorter = [] if args.short else [sentence_transformer(128), sentence_transformer(64)]
    variants = [sentence_transformer(256), *shorter]
    onnx_note = ""
    if args.no_onnx or args.short:
        onnx_note = "ONNX rows: not run (--no-onnx)."
    else:
        try:
            import onnxruntime  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError as exc:
            onnx_note = f"ONNX rows: not run ({exc}; pip install -r bench/requirements-onnx.txt)."
        else:
            fp32, int8, export_s, quant_s = onnx_export(RESULTS / "onnx")
            onnx_note = (
                f"ONNX export (torch.onnx, dynamo) took {export_s:.0f} s, int8 dynamic "
                f"quantization {quant_s:.0f} s; files {fp32.stat().st_size / 2**20:.0f} MiB and "
                f"{int8.stat().st_size / 2**20:.0f} MiB."
            )
            variants.append(onnx_runtime(fp32, "onnx", "ONNX Runtime fp32, max 256", export_s))
            variants.append(
                onnx_runtime(int8, "onnx-int8", "ONNX Runtime int8 (dynamic), max 256",
                             export_s + quant_s)
            )  # fmt: skip
    ours = static()
    variants += [ours, stored_int8(ours)]
    return variants, onnx_note


# ----------------------------------------------------------------------------- measurements


def embed_pool(v: Variant, prompts: list[str], responses: list[str]) -> None:
    """Embed prompts then responses of the pool (`rounds` times; the median round counts)."""
    v.encode(prompts[:16] + responses[:16])  # warm-up, untimed
    walls, cpus = [], []
    for _ in range(v.rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        p = v.encode(prompts)
        r = v.encode(responses)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    calls = len(prompts)
    v.out.update(
        prompts=p,
        responses=r,
        wall_s=statistics.median(walls),
        cpu_s=statistics.median(cpus),
        texts_per_s=2 * calls / statistics.median(walls),
        cpu_s_per_500_calls=statistics.median(cpus) * 500 / calls,
    )


def relevance_auc(prompts: np.ndarray, responses: np.ndarray, partner: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    genuine = np.einsum("ij,ij->i", prompts, responses)
    shuffled = np.einsum("ij,ij->i", prompts, responses[partner])
    labels = np.r_[np.ones(len(genuine)), np.zeros(len(shuffled))]
    return float(roc_auc_score(labels, np.r_[genuine, shuffled]))


def off_topic_partner(sections: list[str]) -> np.ndarray:
    """For each row, a row of another section (rows sorted by section, shifted by half)."""
    order = np.argsort(np.array(sections), kind="stable")
    partner = np.empty(len(order), dtype=np.int64)
    partner[order] = order[(np.arange(len(order)) + len(order) // 2) % len(order)]
    assert all(sections[i] != sections[j] for i, j in enumerate(partner))
    return partner


def new_topic_trials(
    sections: list[str], n: int, trials: int, seed: int
) -> list[tuple[list[int], list[int]]]:
    """Reference: n rows outside NEW_TOPIC; current: 90% other such rows, 10% NEW_TOPIC rows."""
    rng = np.random.default_rng(seed)
    topic = np.array([s in NEW_TOPIC for s in sections])
    inside, outside = np.flatnonzero(topic), np.flatnonzero(~topic)
    k = round(NEW_TOPIC_SHARE * n)
    out = []
    for _ in range(trials):
        shuffled = rng.permutation(outside)
        ref, cur_old = shuffled[:n], shuffled[n : 2 * n - k]
        cur = np.r_[cur_old, rng.choice(inside, size=k, replace=False)]
        out.append((ref.tolist(), rng.permutation(cur).tolist()))
    return out


def conditions(sections: list[str], n: int, trials: int) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for c, (name, tilt) in enumerate(drift.SHIFTS.items()):
        out[name] = drift.make_trials(sections, n, tilt, trials, seed=100 + c)
    out["new topic (10%)"] = new_topic_trials(sections, n, trials, seed=200)
    return out


def group_share(sections: list[str], trials: list[Any]) -> float:
    return statistics.mean(
        float(np.mean([sections[i] in drift.SHIFT_GROUP for i in cur])) for _, cur in trials
    )


def run_trials(
    mmd_test: Any, vectors: np.ndarray, trials: list[Any], permutations: int
) -> dict[str, Any]:
    p_values, cpu = [], []
    for i, (ref, cur) in enumerate(trials):
        start = time.process_time()
        res = mmd_test(vectors[ref], vectors[cur], permutations=permutations, seed=i)
        cpu.append(time.process_time() - start)
        p_values.append(res.p_value)
    return {
        "rate": float(np.mean(np.array(p_values) < ALPHA)),
        "p_values": p_values,
        "cpu_s_median": statistics.median(cpu),
    }


def affordable_n(budget_s: float, cpu_per_call: float, mmd_s_500: float) -> int:
    """Largest n with n calls embedded plus the test within `budget_s` CPU seconds; the test's
    cost grows as n² from its measured cost at 500 (an over-estimate below a few thousand)."""
    lo, hi = 2, 10_000_000
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if mid * cpu_per_call + mmd_s_500 * (mid / 500) ** 2 <= budget_s:
            lo = mid
        else:
            hi = mid - 1
    return lo


# ----------------------------------------------------------------------------- record


def tables(res: dict[str, Any], n: int) -> list[dict[str, Any]]:
    base = res["variants"][BASELINE]
    eq = res["equal_cpu"]
    rates = [record.col(c, fmt=".2f") for c in CONDITIONS]
    main = record.table(
        f"Speed, drift power at n = m = {n} (rejection rate) and relevance",
        [record.col("embedder"), record.col("texts/s", fmt=",.0f"),
         record.col("speed-up", "times", ",.1f"), record.col("CPU s / 500 calls", fmt=".2f"),
         *rates, record.col("relevance AUC", fmt=".3f"), record.col("cos to plain-256", fmt=".3f")],
        [[v["label"], v["texts_per_s"], v["texts_per_s"] / base["texts_per_s"],
          v["cpu_s_per_500_calls"], *(v["power"][c]["rate"] for c in CONDITIONS), v["auc"],
          v["cos_to_plain"]] for v in res["variants"].values()],
    )  # fmt: skip
    afford = record.table(
        f"Window each embedder could take in the CPU time the plain transformer spends on a "
        f"{n}-call window (n², test cost extrapolated from n = {n})",
        [record.col("embedder"), record.col("n = m", fmt=",d")],
        [[res["variants"][k]["label"], a] for k, a in eq["affordable"].items()],
    )
    capped = "capped: the fixture or --max-n" if eq["n"] < eq["affordable"]["static"] else ""
    equal = record.table(
        "At equal CPU time (rejection rate)",
        [record.col("embedder"), record.col("n = m", fmt=",d"), record.col("window size"),
         record.col("CPU s per window (measured)", fmt=".1f"), *rates],
        [[base["label"], n, "", eq["budget_s"], *(base["power"][c]["rate"] for c in CONDITIONS)],
         [res["variants"]["static"]["label"], eq["n"], capped, eq["static_window_s"],
          *(eq["power"][c]["rate"] for c in CONDITIONS)]],
    )  # fmt: skip
    shares = record.table(
        "Share of the tilted sections in the current window (the reference takes rows the tilt "
        "would draw, so a larger window's tilt is weaker)",
        [record.col("n = m", fmt=",d"), *(record.col(c, fmt=".0%") for c in CONDITIONS)],
        [[int(size), *(share[c] for c in CONDITIONS)] for size, share in res["shares"].items()],
    )
    return [main, afford, equal, shares]


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30, help="paired trials per cell")
    parser.add_argument("--permutations", type=int, default=200)
    parser.add_argument("--n", type=int, default=500, help="window size for the equal-n table")
    parser.add_argument("--pool", type=int, default=1600, help="calls every embedder embeds")
    parser.add_argument("--max-n", type=int, default=1980, help="cap on the equal-CPU window")
    parser.add_argument("--quick", action="store_true", help="small run: a smoke test")
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument(
        "--short", action="store_true", help="the baseline and the static rows only (no ONNX)"
    )
    record.add_argument(parser)
    args = parser.parse_args()
    if args.quick:
        args.trials, args.permutations, args.n = min(args.trials, 2), 50, 30
        args.pool, args.max_n = 100, 200
    recorder = record.Recorder("embedders", args.record, PACKAGES)
    RESULTS.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []

    rows = drift.fixture_rows()
    pool_idx = np.sort(np.random.default_rng(0).permutation(len(rows))[: args.pool])
    pool = [rows[i] for i in pool_idx]
    prompts = [f"What is {r['package']}? {r['synopsis']}" for r in pool]
    responses = [r["description"] for r in pool]
    sections = [r["section"] for r in pool]
    all_sections = [r["section"] for r in rows]
    partner = off_topic_partner(sections)

    variants, onnx_note = build_variants(args)
    if onnx_note:
        notes.append(onnx_note)
    mmd_test = drift.load_mmd()
    mmd_test(drift.random_unit(300, 1), drift.random_unit(300, 2), permutations=10)  # warm-up
    trials = conditions(sections, args.n, args.trials)
    res: dict[str, Any] = {"pool": len(pool), "variants": {}, "shares": {}}
    res["shares"][str(args.n)] = {c: group_share(sections, t) for c, t in trials.items()}
    for v in variants:
        embed_pool(v, prompts, responses)
        print(f"{v.label}: {v.out['texts_per_s']:,.1f} texts/s", flush=True)
        v.out["auc"] = relevance_auc(v.out["prompts"], v.out["responses"], partner)
        v.out["power"] = {
            c: run_trials(mmd_test, v.out["responses"], t, args.permutations)
            for c, t in trials.items()
        }
        print(
            f"  AUC {v.out['auc']:.3f}; power "
            + ", ".join(f"{c} {p['rate']:.2f}" for c, p in v.out["power"].items()),
            flush=True,
        )
        if v.note:
            notes.append(f"{v.label}: {v.note}.")
    base = next(v for v in variants if v.key == BASELINE)
    for v in variants:
        same_dim = v.out["responses"].shape[1] == base.out["responses"].shape[1]
        v.out["cos_to_plain"] = (
            float(np.mean(np.einsum("ij,ij->i", v.out["responses"], base.out["responses"])))
            if same_dim and v.key.startswith(("st", "onnx"))
            else None
        )

    # Equal CPU time: the baseline's cost for one window of n calls, embedding plus the test.
    def mmd_cost(v: Variant) -> float:
        return statistics.median(p["cpu_s_median"] for p in v.out["power"].values())

    per_call = {v.key: v.out["cpu_s_per_500_calls"] / 500 for v in variants}
    budget_embed = per_call[BASELINE] * args.n
    budget = budget_embed + mmd_cost(base)
    affordable = {v.key: affordable_n(budget, per_call[v.key], mmd_cost(v)) for v in variants}
    stat = next(v for v in variants if v.key == "static")
    n_eq = min(affordable["static"], args.max_n, len(rows) // 3)
    print(f"equal CPU time: static affords n ≈ {affordable['static']:,}; testing n = {n_eq:,}")
    all_vectors = stat.encode([r["description"] for r in rows])
    eq_trials = conditions(all_sections, n_eq, args.trials)
    res["shares"][str(n_eq)] = {c: group_share(all_sections, t) for c, t in eq_trials.items()}
    eq_power = {
        c: run_trials(mmd_test, all_vectors, t, args.permutations) for c, t in eq_trials.items()
    }
    static_window = per_call["static"] * n_eq + statistics.median(
        p["cpu_s_median"] for p in eq_power.values()
    )
    res["equal_cpu"] = {
        "budget_s": budget,
        "budget_embed_s": budget_embed,
        "budget_mmd_s": mmd_cost(base),
        "affordable": affordable,
        "n": n_eq,
        "static_window_s": static_window,
        "power": eq_power,
    }
    for v in variants:
        out = {k: val for k, val in v.out.items() if k not in ("prompts", "responses")}
        res["variants"][v.key] = {"label": v.label, "setup_s": v.setup_s, "note": v.note, **out}
    settings = {
        "pool": len(pool),
        "trials": args.trials,
        "permutations": args.permutations,
        "alpha": ALPHA,
        "n": args.n,
        "max_n": args.max_n,
        "short": args.short,
    }
    figures = {k: res["equal_cpu"][k] for k in ("budget_s", "budget_embed_s", "budget_mmd_s")}
    recorder.write(tables(res, args.n), settings, figures, notes)


if __name__ == "__main__":
    main()
