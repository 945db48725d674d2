"""The store tests run on every backend (tests/conftest.py's BACKENDS)."""

from __future__ import annotations

import pytest

from driftline.store import Store


@pytest.fixture
def store(backend_store: Store) -> Store:
    return backend_store
