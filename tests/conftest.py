"""Shared fixtures. Tests never reach a model hub."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The test process imports torch before any CLI call could pin the instruction sets, so the
# engine processes the tests start (torchrun ranks, subprocesses) run unpinned as well and
# compute exactly what the test process computes; tests/test_numerics.py sets the variable
# itself for the processes whose pinning it checks (engine/numerics.py).
os.environ.setdefault("RELINK_NUMERICS", "native")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def seeded(tmp_path_factory):
    """A small seeded results database (tests/seed_db.py): 3 models, DP heads 1 and inf."""
    from seed_db import build

    return build(tmp_path_factory.mktemp("seeded"))
