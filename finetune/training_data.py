"""A snapshot as training data: the rows a method can use, refused with the reason when they
are too few or too one-sided to train on."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from driftline.finetune.config import DataRules
from driftline.finetune.dataset.rows import Row
from driftline.finetune.dataset.snapshots import Snapshot
from driftline.finetune.ledger import Ledger

# The snapshot formats each method reads; online RL needs only the prompts.
METHOD_FORMATS = {
    "dpo": ("dpo", "reward"),
    "reward": ("dpo", "reward"),
    "kto": ("kto",),
    "ppo": ("dpo", "reward", "kto"),
    "grpo": ("dpo", "reward", "kto"),
}


class DataError(ValueError):
    """The snapshot cannot train this method; the message says why."""


@dataclass(frozen=True)
class TrainingData:
    snapshot: Snapshot
    train: list[Row]
    test: list[Row]

    def prompts(self, split: str = "train") -> list[Any]:
        """Each distinct prompt of a split, in first-seen order."""
        seen: dict[str, Any] = {}
        for row in self.train if split == "train" else self.test:
            seen.setdefault(repr(row["prompt"]), row["prompt"])
        return list(seen.values())


def load_training_data(
    ledger: Ledger, snapshot_id: str, method: str, rules: DataRules
) -> TrainingData:
    """The snapshot's rows, checked for `method`."""
    snapshot, train, test = ledger.snapshot(snapshot_id)
    formats = METHOD_FORMATS[method]
    if snapshot.format not in formats:
        raise DataError(
            f"snapshot {snapshot_id} is in format {snapshot.format!r}; {method} needs "
            f"{' or '.join(formats)} (driftline export --format {formats[0]})"
        )
    check_training_rows(snapshot, train, rules)
    return TrainingData(snapshot, train, test)


def check_training_rows(snapshot: Snapshot, train: list[Row], rules: DataRules) -> None:
    """Refuse an empty, tiny or label-skewed set of training rows."""
    where = f"snapshot {snapshot.id} ({snapshot.format}, project {snapshot.project})"
    skipped = snapshot.counts.get("skipped") or {}
    if not train:
        raise DataError(
            f"{where} has no training rows: {snapshot.counts.get('feedback', 0)} feedback rows "
            f"made none (left out: {skipped or 'nothing'}); review more items first"
        )
    if len(train) < rules.min_rows:
        raise DataError(
            f"{where} has {len(train)} training rows, fewer than the {rules.min_rows} "
            "required (finetune.data.min_rows)"
        )
    if snapshot.format == "kto":
        labels = Counter(bool(row["label"]) for row in train)
        label, n = labels.most_common(1)[0]
        if n / len(train) > rules.max_label_share:
            raise DataError(
                f"{where} is label-skewed: {n} of {len(train)} rows are "
                f"{'desirable' if label else 'undesirable'} ({n / len(train):.0%}, more than "
                f"finetune.data.max_label_share {rules.max_label_share:.0%})"
            )
