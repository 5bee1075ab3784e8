"""Random MSD values: hypothesis strategies for tests, and a seeded plain generator for bench/.

``msds(version=None)`` draws any valid :class:`~ecallgw.model.Msd` of one version (or of any
version): every OPTIONAL present or absent, the full range of every INTEGER, v3-only vehicle types
only in v3, ``otherStorage`` only from v2 on, N1/N2 always present in v3, and optional additional
data that is either a known scheme (ERA-GLONASS 1.4.1/1.4.2, Euro NCAP 8.1, with ``data`` its
canonical encoding and ``decoded`` its value) or an unknown OID with arbitrary octets (some long
enough to need the two-octet length form). ``random_msd(rng, version)`` draws from the same space
with a ``random.Random``, fast enough for 100,000 values.
"""

from __future__ import annotations

import random
from typing import Literal, TypeAlias, cast

from hypothesis import strategies as st

from ecallgw.codecs import oad
from ecallgw.model import (
    AdditionalData,
    ControlType,
    CoordinateSystemType,
    CrashInfo,
    DiagnosticResult,
    EraAdditionalData,
    IIDeltaV,
    IILocations,
    IncInfo,
    Msd,
    MsdMessage,
    MsdStructure,
    VehicleIdentificationNumber,
    VehicleLocation,
    VehicleLocationDelta,
    VehiclePropulsionStorageType,
    VehicleType,
)

__all__ = [
    "VIN_ALPHABET",
    "Version",
    "additional_data",
    "era_additional_data",
    "inc_infos",
    "msds",
    "random_msd",
    "vins",
]

Version: TypeAlias = Literal[1, 2, 3]
VIN_ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
_KNOWN_OIDS = frozenset({"1.4.1", "1.4.2", "8.1"})
_DIAG_FIELDS = tuple(DiagnosticResult.__dataclass_fields__)
_CRASH_FIELDS = tuple(CrashInfo.__dataclass_fields__)
_PROPULSION_FIELDS = tuple(VehiclePropulsionStorageType.__dataclass_fields__)


def _vehicle_types(version: int) -> list[VehicleType]:
    return [t for t in VehicleType if version == 3 or t <= 13]


def vins() -> st.SearchStrategy[VehicleIdentificationNumber]:
    """Any VIN of the EN 15722 alphabet."""
    return st.text(VIN_ALPHABET, min_size=17, max_size=17).map(VehicleIdentificationNumber.from_vin)


def _deltas() -> st.SearchStrategy[VehicleLocationDelta]:
    d = st.integers(-512, 511)
    return st.builds(VehicleLocationDelta, latitude_delta=d, longitude_delta=d)


def era_additional_data(fmt: Literal[1, 2]) -> st.SearchStrategy[EraAdditionalData]:
    """ERA-GLONASS additional data of format 1 or 2 (any subset of the optional flags)."""
    flag = st.one_of(st.none(), st.booleans())
    diag = st.builds(DiagnosticResult, **{f: flag for f in _DIAG_FIELDS})
    crash = st.builds(CrashInfo, **{f: flag for f in _CRASH_FIELDS})
    return st.builds(
        EraAdditionalData,
        format=st.just(fmt),
        crash_severity=st.one_of(st.none(), st.integers(0, 2047)),
        diagnostic_result=st.one_of(st.none(), diag),
        crash_info=st.one_of(st.none(), crash),
        coordinate_system_type=st.sampled_from(CoordinateSystemType) if fmt == 2 else st.none(),
    )


def inc_infos() -> st.SearchStrategy[IncInfo]:
    """Euro NCAP INCINFO values."""
    dv = st.integers(-255, 255)
    return st.builds(
        IncInfo,
        location_of_impact=st.sampled_from(IILocations),
        rollover_detected=st.one_of(st.none(), st.booleans()),
        delta_v=st.builds(IIDeltaV, range_limit=st.integers(100, 255), delta_vx=dv, delta_vy=dv),
    )


def _known(decoded: EraAdditionalData | IncInfo) -> AdditionalData:
    return AdditionalData(oid=oad.oad_oid(decoded), data=oad.encode_oad(decoded), decoded=decoded)


def _known_oid_any_data(oid: str, data: bytes) -> AdditionalData:
    return AdditionalData(oid=oid, data=data, decoded=oad.decode_oad(oid, data))


def additional_data() -> st.SearchStrategy[AdditionalData]:
    """Optional additional data: a known scheme, or an unknown OID with arbitrary octets.

    Also a known OID with arbitrary octets: they may decode (a non-canonical or Legato-style
    encoding) or not (``decoded`` None), and the MSD must carry them either way.
    """
    arc = st.one_of(st.integers(0, 2**28), st.integers(0, 2**64 - 1))  # 2^64 - 1 = MAX_ARC
    arcs = st.lists(arc, min_size=1, max_size=5).map(lambda a: ".".join(map(str, a)))
    octets = st.one_of(st.binary(max_size=24), st.binary(min_size=120, max_size=200))
    unknown = st.builds(AdditionalData, oid=arcs.filter(lambda o: o not in _KNOWN_OIDS), data=octets)
    known = st.one_of(era_additional_data(1), era_additional_data(2), inc_infos()).map(_known)
    known_any = st.builds(_known_oid_any_data, st.sampled_from(sorted(_KNOWN_OIDS)), st.binary(max_size=12))
    return st.one_of(known, unknown, known_any)


@st.composite
def _msd(draw: st.DrawFn, version: Version) -> Msd:
    v3 = version == 3
    propulsion = {f: draw(st.booleans()) for f in _PROPULSION_FIELDS}
    if version == 1:
        propulsion["other_storage"] = False
    i32 = st.integers(-(2**31), 2**31 - 1)
    structure = MsdStructure(
        message_identifier=draw(st.integers(0, 255)),
        control=ControlType(
            automatic_activation=draw(st.booleans()),
            test_call=draw(st.booleans()),
            position_can_be_trusted=draw(st.booleans()),
            vehicle_type=draw(st.sampled_from(_vehicle_types(version))),
        ),
        vehicle_identification_number=draw(vins()),
        vehicle_propulsion_storage_type=VehiclePropulsionStorageType(**propulsion),
        timestamp=draw(st.integers(0, 2**32 - 1)),
        vehicle_location=VehicleLocation(position_latitude=draw(i32), position_longitude=draw(i32)),
        vehicle_direction=draw(st.integers(0, 255)),
        recent_vehicle_location_n1=draw(_deltas() if v3 else st.one_of(st.none(), _deltas())),
        recent_vehicle_location_n2=draw(_deltas() if v3 else st.one_of(st.none(), _deltas())),
        number_of_passengers=draw(st.one_of(st.none(), st.integers(0, 255))),
    )
    extra = draw(st.one_of(st.none(), additional_data()))
    return Msd(version=version, msd=MsdMessage(msd_structure=structure, optional_additional_data=extra))


def msds(version: Version | None = None) -> st.SearchStrategy[Msd]:
    """Any valid MSD of ``version`` (1, 2 or 3), or of any version when None."""
    if version is None:
        return st.sampled_from((1, 2, 3)).flatmap(lambda v: _msd(cast(Version, v)))
    return _msd(version)


# --- Plain seeded generator (bench/) ------------------------------------------------------------


def _random_oad(rng: random.Random) -> AdditionalData:
    kind = rng.randrange(5)
    if kind == 4:  # a known OID with arbitrary octets: decodable (non-canonically) or not
        oid = rng.choice(sorted(_KNOWN_OIDS))
        return _known_oid_any_data(oid, rng.randbytes(rng.randint(0, 12)))
    if kind == 3:
        while True:
            oid = ".".join(
                str(rng.randrange(2 ** rng.choice((3, 7, 14, 28, 64)))) for _ in range(rng.randint(1, 5))
            )
            if oid not in _KNOWN_OIDS:
                break
        size = rng.randint(0, 24) if rng.random() < 0.9 else rng.randint(120, 200)
        return AdditionalData(oid=oid, data=rng.randbytes(size))
    if kind == 2:
        decoded: EraAdditionalData | IncInfo = IncInfo(
            location_of_impact=rng.choice(list(IILocations)),
            rollover_detected=rng.choice((None, False, True)),
            delta_v=IIDeltaV(
                range_limit=rng.randint(100, 255),
                delta_vx=rng.randint(-255, 255),
                delta_vy=rng.randint(-255, 255),
            ),
        )
    else:
        fmt: Literal[1, 2] = 1 if kind == 0 else 2
        flags = (None, False, True)
        decoded = EraAdditionalData(
            format=fmt,
            crash_severity=rng.choice((None, rng.randint(0, 2047))),
            diagnostic_result=rng.choice(
                (None, DiagnosticResult(**{f: rng.choice(flags) for f in _DIAG_FIELDS}))
            ),
            crash_info=rng.choice((None, CrashInfo(**{f: rng.choice(flags) for f in _CRASH_FIELDS}))),
            coordinate_system_type=rng.choice(list(CoordinateSystemType)) if fmt == 2 else None,
        )
    return _known(decoded)


def random_msd(rng: random.Random, version: Version) -> Msd:
    """One random valid MSD from the same space as :func:`msds`, drawn with ``rng``."""
    v3 = version == 3

    def delta() -> VehicleLocationDelta:
        return VehicleLocationDelta(
            latitude_delta=rng.randint(-512, 511), longitude_delta=rng.randint(-512, 511)
        )

    propulsion = {f: rng.random() < 0.5 for f in _PROPULSION_FIELDS}
    if version == 1:
        propulsion["other_storage"] = False
    structure = MsdStructure(
        message_identifier=rng.randrange(256),
        control=ControlType(
            automatic_activation=rng.random() < 0.5,
            test_call=rng.random() < 0.5,
            position_can_be_trusted=rng.random() < 0.5,
            vehicle_type=rng.choice(_vehicle_types(version)),
        ),
        vehicle_identification_number=VehicleIdentificationNumber.from_vin(
            "".join(rng.choice(VIN_ALPHABET) for _ in range(17))
        ),
        vehicle_propulsion_storage_type=VehiclePropulsionStorageType(**propulsion),
        timestamp=rng.randrange(2**32),
        vehicle_location=VehicleLocation(
            position_latitude=rng.randrange(-(2**31), 2**31),
            position_longitude=rng.randrange(-(2**31), 2**31),
        ),
        vehicle_direction=rng.randrange(256),
        recent_vehicle_location_n1=delta() if v3 or rng.random() < 0.7 else None,
        recent_vehicle_location_n2=delta() if v3 or rng.random() < 0.7 else None,
        number_of_passengers=rng.randrange(256) if rng.random() < 0.7 else None,
    )
    extra = _random_oad(rng) if rng.random() < 0.3 else None
    return Msd(version=version, msd=MsdMessage(msd_structure=structure, optional_additional_data=extra))


# --- Mutations of valid encodings (fuzzing) -----------------------------------------------------

MUTATIONS = ("random", "bit_flips", "truncate", "append", "splice")


def mutate(rng: random.Random, data: bytes, kind: str) -> bytes:
    """A damaged copy of ``data``: the fuzz inputs of tests and bench/msd_fuzz.py.

    Kinds: random bytes behind a valid version octet, 1-8 flipped bits, a truncation, bytes
    appended (zero or random, sometimes filling a 140-octet frame), or a random run overwritten.
    """
    if kind == "random":
        return bytes([rng.choice((1, 2, 3))]) + rng.randbytes(rng.randrange(0, 160))
    if kind == "bit_flips":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            bit = rng.randrange(8 * len(out))
            out[bit // 8] ^= 0x80 >> (bit % 8)
        return bytes(out)
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    if kind == "append":
        fill = 140 - len(data) if rng.random() < 0.3 and len(data) < 140 else rng.randint(1, 8)
        tail = bytes(fill) if rng.random() < 0.5 else rng.randbytes(fill)
        return data + tail
    if kind == "splice":
        start = rng.randrange(len(data))
        size = rng.randint(1, 6)
        return data[:start] + rng.randbytes(size) + data[start + size :]
    raise ValueError(kind)
