"""The rooms import only the rooms before them in the data flow, and `lint-imports` (run by
`make lint`) fails the build when one does not."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROOMS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache", str(tree / "pyproject.toml")],
        cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The package as `driftline/<room>` folders (what an install makes), and the contracts.
    A regular package here, so the installed namespace portions are not merged into it."""
    (tmp_path / "driftline").mkdir()
    (tmp_path / "driftline" / "__init__.py").touch()
    skip = shutil.ignore_patterns("__pycache__", "static", "templates")
    for package, folder in ROOMS.items():
        shutil.copytree(ROOT / folder, tmp_path / package.replace(".", "/"), ignore=skip)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_tree_keeps_the_layers(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "says"),
    [
        # ingest reaching up to the alerts, as a lazy import inside a function
        (
            "ingest/writer.py",
            "def _late():\n    from driftline.alerts import rules\n",
            "driftline.ingest is not allowed to import driftline.alerts",
        ),
        # the review room reaching the API (what the old collector/ did)
        (
            "review/queue.py",
            "from driftline.api import runtime\n",
            "driftline.review is not allowed to import driftline.api",
        ),
        # the SDK importing the server's store
        (
            "sdk/config.py",
            "import driftline.store\n",
            "driftline.sdk is not allowed to import driftline.store",
        ),
        # the demo's own process loading the SDK: only its app (a user's app) may
        (
            "demo/run.py",
            "from driftline import sdk\n",
            "driftline.demo is not allowed to import driftline.sdk",
        ),
        # ... nor by importing the app, whose own import of the SDK the lint lets through
        (
            "cli/demo.py",
            "def _late():\n    from driftline.demo import app\n",
            "driftline.cli is not allowed to import driftline.demo.app",
        ),
        # the SDK loading a heavy library the app did not ask for
        (
            "sdk/observe.py",
            "def _late():\n    import numpy\n",
            "driftline.sdk is not allowed to import numpy",
        ),
    ],
)
def test_an_import_against_the_flow_fails_the_lint(
    tree: Path, module: str, bad_import: str, says: str
) -> None:
    path = tree / "driftline" / module
    path.write_text(path.read_text() + "\n\n" + bad_import)
    result = lint(tree)
    assert result.returncode != 0
    assert says in result.stdout, result.stdout
