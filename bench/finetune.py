"""Fine-tune benchmark: DPO steps/s, samples/s and peak memory of the real pipeline, with the
held-out preference accuracy the gate measures afterwards, so each speed comes with proof that
the run learned.

Every configuration runs in a fresh subprocess (so its peak memory is its own): a chDB store in
a temp folder seeded with the tests' learnable synthetic preference (tests/finetune/world.py:
40 topics, one corrected call each, 25% held out), a base model saved to a folder, then
`driftline.finetune.train.finetune` (DPO through TRL's DPOTrainer, reference model loaded from
the base folder, exactly what `driftline finetune` does) on a `StoreLedger`, then
`driftline.finetune.gate.evaluation.run_gate` on the held-out pairs.

* **steps/s** is TRL's `train_steps_per_second` (optimizer steps / `train_runtime`): model
  load, base-model build, publish and gate are outside it; no checkpoint is written inside it;
* **samples/s** is preference pairs per second (steps x batch / `train_runtime`);
* **peak memory**: CPU: the subprocess's peak RSS (`ru_maxrss`: policy, reference, optimizer,
  store and gate together); CUDA: `torch.cuda.max_memory_allocated` over the training run
  (reserved in brackets).

Sizes: `tiny` is the tests' Llama (2 layers, hidden 32); `100m` is a Llama built from a config
(hidden 768, 12 layers, 12 heads, intermediate 2560, vocabulary of the word-level tokenizer
padded up to 128 (63 words and specials): 99,306,240 parameters, untied embeddings). Sequences
are short (prompt and answer ~20 tokens), so the figures are per-step costs of small batches, not
of long contexts. The 1-minute load average before and after training is recorded: on a shared
machine other processes' load slows the CPU figures.

    python bench/finetune.py --size tiny                            # CPU, batch 8
    python bench/finetune.py --size 100m --device cpu --max-steps 4

One-shot GPU run (both sizes on CUDA, bf16), its record (with that machine's description) to
bring back into docs/benchmarks/:

    python bench/finetune.py --size tiny 100m --device cuda --record "$OUT/finetune-cuda.json"

Without a GPU a CUDA row says "not run: no GPU here"; nothing is ever estimated.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import record  # noqa: E402

BATCH = 8
MAX_LENGTH = 64
# Per size: the model's shape and how it trains (learning rate, passes over the ~30 pairs).
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"learning_rate": 5e-3, "epochs": 10, "cpu_max_steps": -1},
    "100m": {
        "learning_rate": 1e-4,
        "epochs": 10,
        "cpu_max_steps": 4,  # a 100M-parameter step takes seconds on a small CPU
        "config": {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "num_key_value_heads": 12,
            "intermediate_size": 2560,
        },
    },
}
VOCAB_MULTIPLE = 128
NOT_RUN = "not run: no GPU here"


# ----------------------------------------------------------------------------- one configuration


def base_model(size: str, folder: Path) -> int:
    """Save the size's base model with the world's tokenizer to `folder`; its parameter count."""
    if size == "tiny":
        from tests.finetune.world import base_model as tiny_base

        tiny_base(folder)
        from transformers import AutoModelForCausalLM

        return int(AutoModelForCausalLM.from_pretrained(folder).num_parameters())
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.finetune.tiny_model import tokenizer_for
    from tests.finetune.world import BAD, GOOD, TOPICS

    words = [{"text": f"tell me about {t} {GOOD} {BAD}".format(topic=t)} for t in TOPICS]
    tokenizer = tokenizer_for(words)
    vocab = -(-len(tokenizer) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=None,
        tie_word_embeddings=False,
        **SIZES[size]["config"],
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return int(model.num_parameters())


def run_one(size: str, device: str, max_steps: int) -> dict[str, Any]:
    """The whole pipeline for one configuration, in this (fresh) process."""
    import torch

    from driftline.finetune.config import FinetuneSettings
    from driftline.finetune.gate.evaluation import run_gate
    from driftline.finetune.ledger import StoreLedger
    from driftline.finetune.train import Request, finetune
    from driftline.store import migrate, open_store
    from tests.finetune import world

    spec = SIZES[size]
    cuda = device == "cuda"
    with tempfile.TemporaryDirectory(prefix="driftline-ft-bench-") as tmp:
        folder = Path(tmp)
        store = open_store(folder / "data")
        try:
            migrate(store)
            world.insert_world(store, "bench")
            snap = world.snapshot(store, "bench")
            params = base_model(size, folder / "base")
            settings = FinetuneSettings.model_validate(
                {
                    "runs_dir": str(folder / "runs"),
                    "train": {
                        "learning_rate": spec["learning_rate"],
                        "epochs": spec["epochs"],
                        "max_steps": max_steps,
                        "batch_size": BATCH,
                        "max_length": MAX_LENGTH,
                        "save_steps": 10**6,  # no checkpoint inside the timed loop
                    },
                }
            )
            ledger = StoreLedger(store, "bench")
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            load_before = os.getloadavg()[0]
            started = time.perf_counter()
            outcome = finetune(
                ledger, Request(snap.id, "dpo", folder / "base", folder / "tuned"), settings,
                progress=False,
            )  # fmt: skip
            wall = time.perf_counter() - started
            load_after = os.getloadavg()[0]
            gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
            gpu_reserved = torch.cuda.max_memory_reserved() / 2**20 if cuda else None
            _, verdict, evidence = run_gate(
                ledger, folder / "tuned", folder / "base", snap.id, settings
            )
        finally:
            store.close()
    run = outcome.run
    summary = run.summary
    runtime = float(summary["train_runtime"])
    steps = run.step
    return {
        "size": size,
        "device": device,
        "device_name": torch.cuda.get_device_name(0)
        if cuda
        else f"cpu ({torch.get_num_threads()} threads)",
        "precision": "bf16 mixed" if cuda and torch.cuda.is_bf16_supported() else "fp32",
        "parameters": params,
        "train_rows": snap.counts["rows"]["train"],
        "test_rows": snap.counts["rows"]["test"],
        "batch": BATCH,
        "learning_rate": spec["learning_rate"],
        "steps": steps,
        "train_runtime_s": runtime,
        "steps_per_s": steps / runtime,
        "trl_steps_per_s": float(summary.get("train_steps_per_second", float("nan"))),
        "samples_per_s": steps * BATCH / runtime,
        "finetune_wall_s": wall,
        "load_average": [load_before, load_after],
        "cores": os.cpu_count(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "gpu_peak_mib": gpu_peak,
        "gpu_reserved_mib": gpu_reserved,
        "final_loss": summary.get("loss"),
        "train_reward_accuracy": summary.get("reward_accuracy"),
        "held_out_accuracy": evidence.preference_accuracy,
        "gate_promote": verdict.promote,
    }


def spawn(size: str, device: str, max_steps: int) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter; its result (or why it failed)."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the pipeline trains on CUDA whenever it sees one
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        command = [sys.executable, __file__, "--worker", size, device, str(max_steps), result.name]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
            print("\n".join(tail), file=sys.stderr)
            return {"size": size, "device": device, "error": tail[-1] if tail else "failed"}
        return dict(json.loads(Path(result.name).read_text()))


# ----------------------------------------------------------------------------- record


def table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = []
    for r in rows:
        if "error" in r or "note" in r:
            reason = r.get("note") or f"failed: {r['error']}"
            out.append([r["size"], None, r["device"], reason, *[None] * 11])
            continue
        out.append(
            [r["size"], r["parameters"], r["device_name"], r["precision"], r["batch"], r["steps"],
             r["steps_per_s"], r["samples_per_s"], r["peak_rss_mib"], r["gpu_peak_mib"],
             r["gpu_reserved_mib"], r["held_out_accuracy"], r["test_rows"],
             "promoted" if r["gate_promote"] else "not promoted",
             " / ".join(f"{x:.1f}" for x in r["load_average"])]
        )  # fmt: skip
    return record.table(
        "DPO through `driftline.finetune.train.finetune`: steps/s = optimizer steps / TRL's "
        "`train_runtime` (model load, publish and gate excluded); held-out accuracy is the gate's "
        "preference accuracy (the base model scores 50%)",
        [record.col("size"), record.col("parameters", fmt=",d"), record.col("device"),
         record.col("precision"), record.col("batch"), record.col("steps"),
         record.col("steps/s", fmt="~3"), record.col("samples/s", fmt="~3"),
         record.col("peak RSS", "MiB", ",.0f"), record.col("GPU allocated", "MiB", ",.0f"),
         record.col("GPU reserved", "MiB", ",.0f"), record.col("held-out accuracy", fmt=".0%"),
         record.col("held-out pairs"), record.col("gate"),
         record.col("1-min load before / after training")],
        out,
    )  # fmt: skip


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", nargs="+", choices=list(SIZES), default=["tiny"])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--max-steps", type=int, default=None,
        help="stop after this many optimizer steps (default: 10 epochs; 100m on CPU: 4)",
    )  # fmt: skip
    record.add_argument(parser)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        size, device, steps, out = args.worker
        Path(out).write_text(json.dumps(run_one(size, device, int(steps))))
        return
    recorder = record.Recorder("finetune", args.record, ["torch", "transformers", "trl", "peft"])
    import torch

    gpu = torch.cuda.is_available()
    device = ("cuda" if gpu else "cpu") if args.device == "auto" else args.device
    rows = []
    for size in args.size:
        if device == "cuda" and not gpu:
            rows.append({"size": size, "device": "cuda", "note": NOT_RUN})
            continue
        steps = args.max_steps
        if steps is None:
            steps = SIZES[size]["cpu_max_steps"] if device == "cpu" else -1
        print(f"running {size} on {device} ...", file=sys.stderr, flush=True)
        rows.append(spawn(size, device, steps))
    if not gpu and "100m" in args.size and device == "cpu":
        rows.append({"size": "100m", "device": "cuda", "note": NOT_RUN})
    ran = [r for r in rows if "steps" in r]
    settings = {
        "sizes": args.size,
        "device": device,
        "batch": BATCH,
        "max_length": MAX_LENGTH,
        "learning_rate": {r["size"]: r["learning_rate"] for r in ran},
        "train_pairs": ran[0]["train_rows"] if ran else None,
    }
    recorder.write([table(rows)], settings)


if __name__ == "__main__":
    main()
