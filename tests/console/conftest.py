"""Fixtures of the console tests: the gateway tests' real mosquitto and PSAP webhook."""

from __future__ import annotations

from tests.gateway.conftest import mosquitto, receiver

__all__ = ["mosquitto", "receiver"]
