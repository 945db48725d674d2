"""Helpers shared by several routers: id patterns and the fine-tune ledger."""

from __future__ import annotations

import re

from fastapi import Request

from driftline.api.runtime import runtime
from driftline.finetune.ledger import StoreLedger
from driftline.store.keys import Principal

HEX32 = re.compile(r"^[0-9a-f]{32}$")
"""A trace id: 32 lowercase hex characters."""


def project_ledger(request: Request, principal: Principal) -> StoreLedger:
    """The key's project's models and fine-tune runs, as the store records them."""
    return StoreLedger(runtime(request).store, principal.project or "")
