"""Fixtures of the console tests: the gateway tests' real mosquitto and PSAP webhook, the caller
tests' simulated SMS gateway."""

from __future__ import annotations

from tests.caller.conftest import sms
from tests.gateway.conftest import mosquitto, receiver

__all__ = ["mosquitto", "receiver", "sms"]
