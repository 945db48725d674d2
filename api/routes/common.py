"""Helpers shared by several routers: id patterns and the fine-tune ledger."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Request
from pydantic import Field

from driftline.api.runtime import runtime
from driftline.finetune.ledger import StoreLedger
from driftline.store.keys import Principal
from driftline.store.times import MAX_NS, NS_PER_SECOND

HEX32 = re.compile(r"^[0-9a-f]{32}$")
"""A trace id: 32 lowercase hex characters."""

UINT32_MAX = 2**32 - 1
"""The largest count a UInt32 column (a run's step) holds."""

UnixSeconds = Annotated[
    float, Field(ge=0, le=MAX_NS / NS_PER_SECOND, allow_inf_nan=False, description="Unix seconds")
]
"""A moment the store's DateTime64 columns hold: a finite number of seconds, 1970 to 2262."""


def project_ledger(request: Request, principal: Principal) -> StoreLedger:
    """The key's project's models and fine-tune runs, as the store records them."""
    return StoreLedger(runtime(request).store, principal.project or "")
