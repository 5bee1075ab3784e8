"""Simulated vehicles: class, propulsion, VIN, MSD version and optional additional data.

Shares, with where they come from (docs/simulators.md has the full table):

- Vehicle classes: our assumption for the vehicles that send eCalls through a provider. eCall is
  mandatory in new M1 and N1 types since 31 March 2018 (Regulation (EU) 2015/758), so cars and vans
  dominate; buses, trucks and L-category riders appear through aftermarket and fleet services. The
  EU fleet counts (ACEA "Vehicles on European Roads": ~256 million cars, ~30 million vans, ~6.5 million
  trucks, ~0.7 million buses) bound these from above for the heavy classes.
- Car propulsion: ACEA "Vehicles on European Roads" 2024 data (electrive.com, 15 January 2026): petrol
  49.2 %, diesel 28.4 %, hybrid 5 %, LPG 2.7 %, battery-electric 2.3 %, plug-in hybrid 1.4 %, others
  below 1 %; renormalised over the named powertrains, with CNG 0.6 % and hydrogen 0.02 % as our
  assumption for "others".
- Vans: ~90 % diesel, 1.3 % battery-electric (ACEA, same report and the 2022 edition). Trucks: ~97 %
  diesel, 0.3 % battery-electric. Buses: ~94.5 % diesel in the older edition, 3.2 % battery-electric in
  2024; CNG buses are our assumption (4 %).
- MSD versions and optional additional data: our assumption (v2, EN 15722:2015, is what 2018 type
  approvals used; v3 appears in newer units; ERA-GLONASS data only from units built for the EAEU
  market; Euro NCAP TB 040 data from newer cars).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from ecallgw.model import VehiclePropulsionStorageType, VehicleType
from ecallgw.simulators.trajectory import random_place
from ecallgw.simulators.vin import WMIS, Segment, random_vin

__all__ = [
    "CLASS_SHARES",
    "MSD_VERSION_SHARES",
    "OAD_SHARES",
    "PROPULSION_SHARES",
    "TPS_NAMES",
    "Oad",
    "Propulsion",
    "Vehicle",
    "random_vehicle",
    "weighted_choice",
]

Propulsion = Literal["petrol", "diesel", "hybrid", "plugin_hybrid", "electric", "lpg", "cng", "hydrogen"]
Oad = Literal["none", "era", "euroncap"]

TPS_NAMES: tuple[str, ...] = ("northstar", "vialink", "carecall", "teleassist", "roadguard")
"""Provider names used for ``{tps}`` (invented, opaque)."""

# Share of eCall-sending vehicles per class (our assumption; see the module docstring).
CLASS_SHARES: Mapping[VehicleType, float] = {
    VehicleType.passengerVehicleClassM1: 0.845,
    VehicleType.lightCommercialVehiclesClassN1: 0.09,
    VehicleType.heavyDutyVehiclesClassN2: 0.008,
    VehicleType.heavyDutyVehiclesClassN3: 0.012,
    VehicleType.busesAndCoachesClassM2: 0.002,
    VehicleType.busesAndCoachesClassM3: 0.008,
    VehicleType.motorcyclesClassL1e: 0.005,
    VehicleType.motorcyclesClassL3e: 0.02,
    VehicleType.motorcyclesClassL5e: 0.003,
    VehicleType.motorcyclesClassL7e: 0.002,
    # Classes only MSD v3 can name (EN 15722:2020).
    VehicleType.specialPurposeMotorCaravanClassSA: 0.003,
    VehicleType.agriVehiclesClassT: 0.002,
}

_CAR: Mapping[Propulsion, float] = {
    "petrol": 0.492,
    "diesel": 0.284,
    "hybrid": 0.05,
    "lpg": 0.027,
    "electric": 0.023,
    "plugin_hybrid": 0.014,
    "cng": 0.006,
    "hydrogen": 0.0002,
}
_VAN: Mapping[Propulsion, float] = {
    "diesel": 0.90,
    "petrol": 0.07,
    "electric": 0.013,
    "cng": 0.01,
    "lpg": 0.007,
}
_TRUCK: Mapping[Propulsion, float] = {"diesel": 0.97, "cng": 0.02, "electric": 0.003, "hydrogen": 0.0005}
_BUS: Mapping[Propulsion, float] = {
    "diesel": 0.915,
    "cng": 0.04,
    "electric": 0.032,
    "hybrid": 0.01,
    "hydrogen": 0.003,
}
_MOTORCYCLE: Mapping[Propulsion, float] = {"petrol": 0.96, "electric": 0.04}

PROPULSION_SHARES: Mapping[Segment, Mapping[Propulsion, float]] = {
    "car": _CAR,
    "van": _VAN,
    "truck": _TRUCK,
    "bus": _BUS,
    "motorcycle": _MOTORCYCLE,
}
"""Propulsion shares per segment (sources in the module docstring)."""

MSD_VERSION_SHARES: Mapping[int, float] = {1: 0.25, 2: 0.60, 3: 0.15}
OAD_SHARES: Mapping[Oad, float] = {"none": 0.80, "euroncap": 0.15, "era": 0.05}

_T = TypeVar("_T")

_SEGMENT: Mapping[VehicleType, Segment] = {
    VehicleType.passengerVehicleClassM1: "car",
    VehicleType.specialPurposeMotorCaravanClassSA: "van",
    VehicleType.lightCommercialVehiclesClassN1: "van",
    VehicleType.heavyDutyVehiclesClassN2: "truck",
    VehicleType.heavyDutyVehiclesClassN3: "truck",
    VehicleType.agriVehiclesClassT: "truck",
    VehicleType.busesAndCoachesClassM2: "bus",
    VehicleType.busesAndCoachesClassM3: "bus",
}
_SEATS: Mapping[Segment, tuple[int, int]] = {
    "car": (1, 5),
    "van": (1, 3),
    "truck": (1, 2),
    "bus": (1, 60),
    "motorcycle": (1, 2),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Vehicle:
    """One simulated vehicle and its eCall unit.

    ``key`` is the provider's opaque vehicle key used in topics; ``home`` is where it usually drives.
    """

    tps: str
    key: str
    vin: str
    vehicle_type: VehicleType
    propulsion: Propulsion
    msd_version: Literal[1, 2, 3]
    oad: Oad
    model_year: int
    home: tuple[float, float]

    @property
    def segment(self) -> Segment:
        """Car, van, truck, bus or motorcycle."""
        return _SEGMENT.get(self.vehicle_type, "motorcycle")

    def storage(self) -> VehiclePropulsionStorageType:
        """EN 15722 vehiclePropulsionStorageType flags for this vehicle's propulsion."""
        p = self.propulsion
        # Every propulsion we simulate has its own flag, so otherStorage (v2 on) stays False.
        return VehiclePropulsionStorageType(
            gasoline_tank_present=p in ("petrol", "hybrid", "plugin_hybrid", "lpg", "cng"),
            diesel_tank_present=p == "diesel",
            compressed_natural_gas=p == "cng",
            liquid_propane_gas=p == "lpg",
            electric_energy_storage=p in ("electric", "hybrid", "plugin_hybrid", "hydrogen"),
            hydrogen_storage=p == "hydrogen",
        )

    def seats(self) -> tuple[int, int]:
        """Plausible (min, max) occupants."""
        return _SEATS[self.segment]


def weighted_choice(rng: random.Random, shares: Mapping[_T, float]) -> _T:
    """Pick a key of ``shares`` with probability proportional to its value."""
    keys: Sequence[_T] = list(shares)
    return rng.choices(keys, weights=[shares[k] for k in keys], k=1)[0]


def random_vehicle(
    rng: random.Random,
    *,
    tps: str | None = None,
    vehicle_type: VehicleType | None = None,
    home: tuple[float, float] | None = None,
) -> Vehicle:
    """One random vehicle drawn from the documented shares.

    Args:
        rng: the seeded source of randomness.
        tps: the provider; drawn from ``TPS_NAMES`` when None.
        vehicle_type: force a class (e.g. M1 for a multi-car crash); drawn when None.
        home: force a home position; drawn from ``trajectory.PLACES`` when None.
    """
    vtype = vehicle_type if vehicle_type is not None else weighted_choice(rng, CLASS_SHARES)
    segment = _SEGMENT.get(vtype, "motorcycle")
    version: Literal[1, 2, 3]
    drawn = weighted_choice(rng, MSD_VERSION_SHARES)
    version = 3 if vtype >= VehicleType.trailersClassO or drawn == 3 else (2 if drawn == 2 else 1)
    oad = weighted_choice(rng, OAD_SHARES)
    if oad == "euroncap" and version == 1:
        oad = "none"  # TB 040 data rides on v2/v3 MSDs (docs/msd.md §6)
    if oad == "era" and version == 3:
        oad = "none"  # no ERA-GLONASS OID is known for v3
    model_year = rng.randint(2018, 2026)
    makers = [w for w in WMIS if segment in w.segments]
    wmi = rng.choice(makers).code
    return Vehicle(
        tps=tps if tps is not None else rng.choice(TPS_NAMES),
        key=f"v{rng.getrandbits(48):012x}",
        vin=random_vin(rng, wmi, model_year),
        vehicle_type=vtype,
        propulsion=weighted_choice(rng, PROPULSION_SHARES[segment]),
        msd_version=version,
        oad=oad,
        model_year=model_year,
        home=home if home is not None else random_place(rng),
    )
