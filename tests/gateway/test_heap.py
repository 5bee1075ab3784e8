"""heap: survivors get frozen, frozen cyclic garbage is still reclaimed by the periodic full pass."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from ecallgw.gateway import heap


class Node:
    def __init__(self) -> None:
        self.other: object = None


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def tracked(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())


def test_settle_freezes_what_exists_and_raises_the_young_threshold() -> None:
    survivor = Node()
    assert tracked(survivor)
    heap.settle()
    assert not tracked(survivor)  # in the permanent generation: no collection walks it
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[:2] == (heap.YOUNG_THRESHOLD, heap.MIDDLE_THRESHOLD)


async def test_survivors_are_frozen_every_interval() -> None:
    task = asyncio.create_task(heap.keep_frozen(0.01, 3600.0))
    survivor = Node()
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not tracked(survivor)


async def test_cyclic_garbage_frozen_while_reachable_is_reclaimed_by_the_full_pass() -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    dead = weakref.ref(a)
    task = asyncio.create_task(heap.keep_frozen(0.01, 3600.0))
    await asyncio.sleep(0.05)  # frozen while still referenced
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    del a, b
    gc.collect()
    assert dead() is not None  # a frozen cycle is beyond an ordinary collection ...
    task = asyncio.create_task(heap.keep_frozen(0.01, 0.02))
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert dead() is None  # ... but not beyond the periodic full one
