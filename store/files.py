"""Folders and files that hold what users sent: readable by the service's user only."""

from __future__ import annotations

from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_folder(path: Path) -> Path:
    """`path`, created with the folders it needs (0700) if missing; an existing folder keeps
    the mode its owner gave it."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=FOLDER_MODE, exist_ok=True)
    return path
