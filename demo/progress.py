"""What the demo shows as it goes: each stage's start, what happens in it, and what it ended
with; as terminal lines, or (`--json`) as one JSON object per line for programs."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO


class Progress:
    """Stages are numbered as they start; `data` travels with each line in JSON mode."""

    def __init__(self, stages: int, as_json: bool = False, out: TextIO | None = None) -> None:
        self.stages, self.as_json = stages, as_json
        self.out = out or sys.stdout
        self.live = not as_json and self.out.isatty()
        self._started = time.monotonic()
        self._number = 0
        self._stage = ""
        self._ticking = ""

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def start(self, stage: str, title: str) -> None:
        self._number += 1
        self._stage = stage
        self._emit("start", title, {}, f"\n[{self._number}/{self.stages}] {title}")

    def note(self, text: str, **data: Any) -> None:
        """Something that happened in the current stage."""
        self._emit("note", text, data, f"  {self.elapsed:6.1f}s  {text}")

    def tick(self, text: str, **data: Any) -> None:
        """A count that goes on changing: rewritten in place on a terminal, sent when it
        changes in JSON mode, left out otherwise."""
        if text == self._ticking:
            return
        self._ticking = text
        if self.as_json:
            self._emit("tick", text, data, "")
        elif self.live:
            self.out.write(f"\r\033[K  {self.elapsed:6.1f}s  {text}")
            self.out.flush()

    def done(self, text: str, **data: Any) -> None:
        """The stage's outcome; `data` holds its facts."""
        self._emit("done", text, data, f"  {self.elapsed:6.1f}s  = {text}")

    def fail(self, text: str) -> None:
        self._emit("failed", text, {}, f"  {self.elapsed:6.1f}s  FAILED: {text}")

    def _emit(self, event: str, text: str, data: dict[str, Any], line: str) -> None:
        if self._ticking and event != "tick":
            self._ticking = ""
            if self.live:
                self.out.write("\r\033[K")
        if self.as_json:
            record = {"stage": self._stage, "event": event, "text": text,
                      "t": round(self.elapsed, 2), **({"data": data} if data else {})}  # fmt: skip
            self.out.write(json.dumps(record, default=str) + "\n")
        else:
            self.out.write(line + "\n")
        self.out.flush()
