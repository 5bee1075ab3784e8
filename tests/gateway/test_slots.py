"""Slots: the hot path's semaphore keeps its count, its order and its slots through cancellations."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecallgw.gateway.slots import Slots


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0)


async def test_waiters_are_served_in_arrival_order() -> None:
    slots = Slots(1)
    await slots.acquire()
    order: list[int] = []

    async def take(i: int) -> None:
        await slots.acquire()
        order.append(i)

    tasks = [asyncio.create_task(take(i)) for i in range(5)]
    await asyncio.sleep(0)
    assert slots.waiting == 5
    assert not slots.try_acquire()  # never jumps the queue
    for _ in range(5):
        slots.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert slots.free == 0


async def test_try_acquire_refuses_while_someone_waits_even_with_a_free_slot() -> None:
    slots = Slots(1)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # handed to the waiter, not put back
    assert slots.free == 0
    assert not slots.try_acquire()
    await waiter
    slots.release()
    assert slots.try_acquire()


async def test_a_cancelled_waiter_gives_up_its_place() -> None:
    slots = Slots(1)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert slots.waiting == 0
    slots.release()
    assert slots.free == 1


async def test_a_waiter_cancelled_after_being_handed_a_slot_passes_it_on() -> None:
    slots = Slots(1)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # the slot goes to `first` ...
    first.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # so `second` gets it
    assert slots.free == 0


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 4),
    plan=st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=25),
)
def test_never_more_holders_than_slots_and_every_slot_comes_back(
    limit: int, plan: list[tuple[int, bool]]
) -> None:
    async def scenario() -> None:
        slots = Slots(limit)
        holding = 0
        peak = 0

        async def worker(hold_turns: int) -> None:
            nonlocal holding, peak
            await slots.acquire()
            holding += 1
            peak = max(peak, holding)
            try:
                for _ in range(hold_turns):
                    await asyncio.sleep(0)
            finally:
                holding -= 1
                slots.release()

        tasks = [asyncio.create_task(worker(turns)) for turns, _ in plan]
        await asyncio.sleep(0)
        for task, (_, cancel) in zip(tasks, plan, strict=True):
            if cancel:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert peak <= limit
        assert holding == 0
        assert slots.waiting == 0
        assert slots.free == limit

    asyncio.run(scenario())
