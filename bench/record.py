"""The record a bench script leaves of one run: what it measured (tables of figures, each column
with its unit, peers side by side), on what machine, with which versions, by which command, when.

`bench/run_all.py` collects the records into docs/benchmarks/ and renders docs/benchmarks.md
from them; a script run by hand writes bench/results/<bench>.json (or `--record PATH`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--record", type=Path, help="write the run's record (JSON) here; default bench/results/"
    )


def col(name: str, unit: str = "", fmt: str = "") -> dict[str, str]:
    """A table column: its name, its unit, and the format spec its numbers are shown with."""
    return {"name": name, "unit": unit, "format": fmt}


def table(title: str, columns: Sequence[dict[str, str]], rows: Iterable[Sequence[Any]]) -> dict:
    rows = [list(r) for r in rows]
    assert all(len(r) == len(columns) for r in rows), title
    return {"title": title, "columns": list(columns), "rows": rows}


def machine() -> dict[str, Any]:
    """CPU model, cores this process may use, memory, GPUs, Python and OS."""
    cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    memory = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M)
    gpus = None
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]
        listed = subprocess.run(query, capture_output=True, text=True, check=False).stdout
        gpus = ", ".join(line.strip() for line in listed.splitlines() if line.strip()) or None
    return {
        "cpu": cpu.group(1).strip() if cpu else platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(int(memory.group(1)) / 2**20) if memory else None,
        "gpu": gpus,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def versions(packages: Iterable[str]) -> dict[str, str]:
    """Installed versions of `packages` (those missing are left out)."""
    found = {}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def revision() -> str:
    """The checkout's commit (`-dirty` with uncommitted changes)."""
    command = ["git", "-C", str(ROOT), "describe", "--always", "--dirty"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def command_line(argv: Sequence[str]) -> list[str]:
    """The script's arguments without `--record PATH` (where a record goes is not the run)."""
    args, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--record="):
            skip = False
            continue
        if arg == "--record":
            skip = True
            continue
        args.append(arg)
    return args


def rounded(value: Any) -> Any:
    """`value` with every float cut to 6 significant digits (measurements carry no more)."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    return value


class Recorder:
    """Made when the run starts; `write` makes the record when it ends. `path` None: the
    default place; `argv` None: this process's arguments."""

    def __init__(
        self,
        bench: str,
        path: Path | None,
        packages: Iterable[str] = (),
        argv: Sequence[str] | None = None,
    ):
        self.bench = bench
        self.path = path or RESULTS / f"{bench}.json"
        self.args = command_line(sys.argv[1:] if argv is None else argv)
        self.packages = ("driftline", *packages)
        self.started = time.time()
        self.load_start = os.getloadavg()[0]

    def write(
        self,
        tables: Sequence[dict],
        settings: dict[str, Any],
        figures: dict[str, Any] | None = None,
        notes: Sequence[str] = (),
        extra_versions: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Write the record (JSON) and return it. `settings` are the run's parameters, `figures`
        named results the doc's prose quotes, `notes` sentences the run wrote about itself."""
        record = {
            "bench": self.bench,
            "command": shlex.join(["python", f"bench/{self.bench}.py", *self.args]),
            "args": self.args,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.started)),
            "seconds": round(time.time() - self.started, 1),
            "revision": revision(),
            "machine": machine(),
            "load_average": [round(self.load_start, 1), round(os.getloadavg()[0], 1)],
            "versions": {**versions(self.packages), **(extra_versions or {})},
            "settings": settings,
            "figures": figures or {},
            "tables": list(tables),
            "notes": list(notes),
        }
        record = rounded(record)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        print(f"record: {self.path}", file=sys.stderr)
        return record
