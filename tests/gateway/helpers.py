"""Small helpers of the gateway tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ecallgw.model import IncidentSnapshot, Position, Reason, Severity


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0, interval_s: float = 0.01) -> None:
    """Wait until ``predicate()`` is true, failing the test after ``timeout_s``.

    Polling is deliberate: the state watched belongs to real brokers, servers and subprocesses,
    which offer no event to wait on.
    """
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(interval_s)


def make_snapshot(
    incident_id: str = "inc-1", revision: int = 1, at: float = 1000.0, status: str = "open"
) -> IncidentSnapshot:
    """An incident revision without an MSD (store and forwarder tests need no codec)."""
    return IncidentSnapshot(
        incident_id=incident_id,
        revision=revision,
        status=status,  # type: ignore[arg-type]
        severity=Severity(
            level="high", score=70, reasons=(Reason(code="automatic", text="automatic trigger"),)
        ),
        tps="acme",
        vehicle="v1",
        call_id="c1",
        automatic=True,
        test=False,
        received_at=at,
        updated_at=at + revision,
        position=Position(lat=48.1, lon=11.5, trusted=True, source="nmea", at=at, quality="gps"),
        callback="+4912345",
        reasons=(Reason(code="new", text="new incident"),),
    )


_VIN_ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"


def vin_for(n: int) -> str:
    """A valid-alphabet VIN unique per ``n``."""
    tail = ""
    for _ in range(6):
        n, d = divmod(n, 10)
        tail = str(d) + tail
    return "WVWZZZ1KZ" + "A" + "W" + tail


def make_msd(
    *,
    vin: str,
    timestamp: int,
    automatic: bool = True,
    test: bool = False,
    message_identifier: int = 1,
    lat: float = 48.137,
    lon: float = 11.575,
    passengers: int = 2,
) -> bytes:
    """Encode an EN 15722 v2 MSD with the given essentials (canonical UPER)."""
    from ecallgw.codecs import msd as msd_codec
    from ecallgw.model import (
        MAS_PER_DEGREE,
        ControlType,
        Msd,
        MsdMessage,
        MsdStructure,
        VehicleIdentificationNumber,
        VehicleLocation,
        VehiclePropulsionStorageType,
        VehicleType,
    )

    value = Msd(
        version=2,
        msd=MsdMessage(
            msd_structure=MsdStructure(
                message_identifier=message_identifier,
                control=ControlType(
                    automatic_activation=automatic,
                    test_call=test,
                    position_can_be_trusted=True,
                    vehicle_type=VehicleType.passengerVehicleClassM1,
                ),
                vehicle_identification_number=VehicleIdentificationNumber.from_vin(vin),
                vehicle_propulsion_storage_type=VehiclePropulsionStorageType(gasoline_tank_present=True),
                timestamp=timestamp,
                vehicle_location=VehicleLocation(
                    position_latitude=round(lat * MAS_PER_DEGREE),
                    position_longitude=round(lon * MAS_PER_DEGREE),
                ),
                vehicle_direction=10,
                number_of_passengers=passengers,
            )
        ),
    )
    return msd_codec.encode(value)


def msd_envelope(
    msd: bytes, *, call_id: str, sent_at: float, callback: str | None = "+4915112345678"
) -> bytes:
    """The msgpack envelope of an ``msd`` signal, as a provider publishes it."""
    import msgpack

    fields: dict[str, object] = {"call_id": call_id, "msd": msd, "sent_at": sent_at}
    if callback is not None:
        fields["callback"] = callback
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def cancel_envelope(*, call_id: str, sent_at: float, reason: str = "occupant cancelled") -> bytes:
    """The msgpack envelope of a ``cancel`` signal."""
    import msgpack

    packed: bytes = msgpack.packb(
        {"call_id": call_id, "sent_at": sent_at, "reason": reason}, use_bin_type=True
    )
    return packed
