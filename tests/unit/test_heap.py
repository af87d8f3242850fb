"""The server's heap policy: freeze as connections grow, thaw and collect after churn."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sleap_rtc.server.heap import HeapPolicy


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_growth_freezes_and_churn_thaws_collects_and_freezes_again() -> None:
    policy = HeapPolicy(freeze_every=10)
    policy.tick(5)
    assert (policy.freezes, gc.get_freeze_count()) == (0, 0)
    policy.tick(12)  # grew by 10 or more: what exists now is frozen
    assert policy.freezes == 1 and gc.get_freeze_count() > 0

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    policy.tick(13)
    garbage = Cycle()
    gc.freeze()  # as if frozen while its connection was alive
    del garbage
    for _ in range(10):
        policy.left()
    policy.tick(3)  # ten left (over a quarter of those frozen): thawed and collected
    assert policy.collections == 1
    assert not any(isinstance(o, Cycle) for o in gc.get_objects())
    assert gc.get_freeze_count() > 0  # and frozen again
