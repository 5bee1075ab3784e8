"""Builders of signals for triage tests: Msd values made directly from ecallgw.model types."""

from __future__ import annotations

from ecallgw.model import (
    MAS_PER_DEGREE,
    POSITION_UNKNOWN,
    AdditionalData,
    CancelSignal,
    ControlType,
    EraAdditionalData,
    IncInfo,
    Msd,
    MsdMessage,
    MsdSignal,
    MsdStructure,
    Position,
    PositionSignal,
    VehicleIdentificationNumber,
    VehicleLocation,
    VehiclePropulsionStorageType,
    VehicleType,
)
from ecallgw.triage import TriagePolicy

KEY = b"triage-test-key-0123456789abcdef"
T0 = 1_764_150_000.0  # 2025-11-26 09:40 UTC: MSD timestamps near receipt are fresh
VIENNA = (48.2082, 16.3738)
GRAZ = (47.0707, 15.4395)

VIENNA_BOX = {
    "type": "Polygon",
    "coordinates": [[[16.18, 48.12], [16.58, 48.12], [16.58, 48.33], [16.18, 48.33], [16.18, 48.12]]],
}
STYRIA_BOX = {
    "type": "Polygon",
    "coordinates": [[[13.5, 46.6], [16.2, 46.6], [16.2, 47.9], [13.5, 47.9], [13.5, 46.6]]],
}

POLICY = TriagePolicy.from_mapping(
    {
        "psap_areas": [
            {"receiver": "psap-vienna", "geometry": VIENNA_BOX},
            {"receiver": "psap-styria", "geometry": STYRIA_BOX},
        ]
    }
)


def vin_for(n: int) -> str:
    """A valid-alphabet 17-character VIN, distinct per n."""
    return f"WVWZZZ1JZ{n:08d}"


def make_msd(
    *,
    vin: str = "WVWZZZ1JZXW000001",
    automatic: bool = True,
    test: bool = False,
    trusted: bool = True,
    position: tuple[float, float] | None = VIENNA,
    timestamp: int | None = None,
    mid: int = 1,
    vehicle_type: VehicleType = VehicleType.passengerVehicleClassM1,
    occupants: int | None = 1,
    propulsion: VehiclePropulsionStorageType | None = None,
    oad: EraAdditionalData | IncInfo | None = None,
    raw: bytes = b"",
) -> Msd:
    """An MSD v2 with the given facts; position None means 0x7FFFFFFF (unknown)."""
    if position is None:
        loc = VehicleLocation(position_latitude=POSITION_UNKNOWN, position_longitude=POSITION_UNKNOWN)
    else:
        loc = VehicleLocation(
            position_latitude=round(position[0] * MAS_PER_DEGREE),
            position_longitude=round(position[1] * MAS_PER_DEGREE),
        )
    additional = None
    if oad is not None:
        oid = "8.1" if isinstance(oad, IncInfo) else f"1.4.{oad.format}"
        additional = AdditionalData(oid=oid, data=b"\x00", decoded=oad)
    structure = MsdStructure(
        message_identifier=mid,
        control=ControlType(
            automatic_activation=automatic,
            test_call=test,
            position_can_be_trusted=trusted,
            vehicle_type=vehicle_type,
        ),
        vehicle_identification_number=VehicleIdentificationNumber.from_vin(vin),
        vehicle_propulsion_storage_type=propulsion
        or VehiclePropulsionStorageType(gasoline_tank_present=True),
        timestamp=int(T0) if timestamp is None else timestamp,
        vehicle_location=loc,
        vehicle_direction=45,
        number_of_passengers=occupants,
    )
    return Msd(
        version=2, msd=MsdMessage(msd_structure=structure, optional_additional_data=additional), raw=raw
    )


def msd_signal(
    msd: Msd | None = None,
    *,
    tps: str = "acme",
    vehicle: str = "veh-1",
    call_id: str = "call-1",
    sent_at: float = T0,
    callback: str | None = None,
    **msd_kwargs: object,
) -> MsdSignal:
    """An MSD envelope; extra keyword arguments go to ``make_msd``."""
    if msd is None:
        msd = make_msd(**msd_kwargs)  # type: ignore[arg-type]
    return MsdSignal(tps=tps, vehicle=vehicle, call_id=call_id, sent_at=sent_at, msd=msd, callback=callback)


def cancel_signal(
    *, tps: str = "acme", vehicle: str = "veh-1", call_id: str = "call-1", sent_at: float = T0 + 5
) -> CancelSignal:
    """A cancel envelope."""
    return CancelSignal(tps=tps, vehicle=vehicle, call_id=call_id, sent_at=sent_at, reason="user")


def position_signal(
    lat: float,
    lon: float,
    *,
    trusted: bool = True,
    tps: str = "acme",
    vehicle: str = "veh-1",
    call_id: str = "call-1",
    sent_at: float = T0 + 10,
) -> PositionSignal:
    """A position envelope with an NMEA-sourced position."""
    pos = Position(lat=lat, lon=lon, trusted=trusted, source="nmea", at=sent_at, quality="gps")
    return PositionSignal(tps=tps, vehicle=vehicle, call_id=call_id, sent_at=sent_at, position=pos)
