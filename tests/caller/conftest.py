"""Fixtures of the caller tests: the gateway tests' real receivers and store backends, an SMS gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ecallgw.simulators.sms import SimulatedSmsGateway
from tests.gateway.conftest import mosquitto, receiver, store_backend

__all__ = ["mosquitto", "receiver", "sms", "store_backend"]


@pytest.fixture
async def sms() -> AsyncIterator[SimulatedSmsGateway]:
    """The simulated SMS gateway on 127.0.0.1 (records each message once per idempotency key)."""
    async with SimulatedSmsGateway() as gateway:
        yield gateway
