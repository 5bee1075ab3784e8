"""A vehicle's breakdown call for the demo: an ``msd`` envelope (manual activation) at a position."""

from __future__ import annotations

import random
import time

from ecallgw.codecs.envelope import encode_envelope
from ecallgw.model import (
    MAS_PER_DEGREE,
    ControlType,
    Msd,
    MsdMessage,
    MsdSignal,
    MsdStructure,
    VehicleIdentificationNumber,
    VehicleLocation,
    VehiclePropulsionStorageType,
    VehicleType,
)
from ecallgw.simulators.fleet import random_vehicle

__all__ = ["bcall_envelope"]


def bcall_envelope(rng: random.Random, lat: float, lon: float) -> bytes:
    now = time.time()
    vehicle = random_vehicle(rng)
    structure = MsdStructure(
        message_identifier=1,
        control=ControlType(
            automatic_activation=False,
            test_call=False,
            position_can_be_trusted=True,
            vehicle_type=VehicleType.passengerVehicleClassM1,
        ),
        vehicle_identification_number=VehicleIdentificationNumber.from_vin(vehicle.vin),
        vehicle_propulsion_storage_type=VehiclePropulsionStorageType(gasoline_tank_present=True),
        timestamp=int(now),
        vehicle_location=VehicleLocation(
            position_latitude=round(lat * MAS_PER_DEGREE), position_longitude=round(lon * MAS_PER_DEGREE)
        ),
        vehicle_direction=0,
        number_of_passengers=1,
    )
    msd = Msd(version=2, msd=MsdMessage(msd_structure=structure))
    signal = MsdSignal(
        tps="-",
        vehicle="-",
        call_id=f"b{rng.getrandbits(48):012x}",
        sent_at=now,
        msd=msd,
        callback="+447700900555",
    )
    return encode_envelope(signal)
