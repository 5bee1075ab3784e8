"""Frozen types that cross package boundaries: the MSD value, positions and decoded signals.

The MSD types mirror the EN 15722 ASN.1 modules field by field (``tests/codecs/asn1/msd-v*.asn``):
attribute names are the mechanical snake_case of the ASN.1 identifiers and enum members keep the
standard's identifiers, so the JSON form maps back without a lookup table. Units are the standard's
(milliarcseconds, 2-degree steps, seconds since 1970); convenience properties give degrees.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "MAS_PER_DEGREE",
    "POSITION_UNKNOWN",
    "Activation",
    "AdditionalData",
    "Call",
    "CancelSignal",
    "ControlType",
    "CoordinateSystemType",
    "CrashInfo",
    "DiagnosticResult",
    "EraAdditionalData",
    "IIDeltaV",
    "IILocations",
    "IncInfo",
    "IncidentSnapshot",
    "Level",
    "Msd",
    "MsdMessage",
    "MsdSignal",
    "MsdStructure",
    "Position",
    "PositionSignal",
    "Reason",
    "Severity",
    "Signal",
    "Status",
    "VehicleIdentificationNumber",
    "VehicleLocation",
    "VehicleLocationDelta",
    "VehiclePropulsionStorageType",
    "VehicleType",
]

MAS_PER_DEGREE = 3_600_000
"""Milliarcseconds per degree (EN 15722 positions are WGS84 milliarcseconds)."""

POSITION_UNKNOWN = 0x7FFFFFFF
"""positionLatitude/positionLongitude value meaning invalid or unknown (docs/msd.md §3.2)."""

_frozen = {"frozen": True, "slots": True, "kw_only": True}


class VehicleType(enum.IntEnum):
    """EN 15722 VehicleType; values are the ASN.1 values (1-based), not the wire index.

    Members 1..13 exist in every version; 14..23 only in v3 (EN 15722:2020).
    """

    passengerVehicleClassM1 = 1
    busesAndCoachesClassM2 = 2
    busesAndCoachesClassM3 = 3
    lightCommercialVehiclesClassN1 = 4
    heavyDutyVehiclesClassN2 = 5
    heavyDutyVehiclesClassN3 = 6
    motorcyclesClassL1e = 7
    motorcyclesClassL2e = 8
    motorcyclesClassL3e = 9
    motorcyclesClassL4e = 10
    motorcyclesClassL5e = 11
    motorcyclesClassL6e = 12
    motorcyclesClassL7e = 13
    trailersClassO = 14
    agriVehiclesClassR = 15
    agriVehiclesClassS = 16
    agriVehiclesClassT = 17
    offRoadVehiclesG = 18
    specialPurposeMotorCaravanClassSA = 19
    specialPurposeArmouredVehicleClassSB = 20
    specialPurposeAmbulanceClassSC = 21
    specialPurposeHearseClassSD = 22
    otherVehicleClass = 23


@dataclass(**_frozen)
class ControlType:
    """EN 15722 ControlType."""

    automatic_activation: bool
    test_call: bool
    position_can_be_trusted: bool
    vehicle_type: VehicleType


@dataclass(**_frozen)
class VehicleIdentificationNumber:
    """ISO 3779 VIN in the four EN 15722 parts (alphabet 0-9, A-Z without I, O, Q)."""

    isowmi: str
    isovds: str
    isovis_modelyear: str
    isovis_seq_plant: str

    @property
    def vin(self) -> str:
        """The 17-character VIN as one string."""
        return self.isowmi + self.isovds + self.isovis_modelyear + self.isovis_seq_plant

    @classmethod
    def from_vin(cls, vin: str) -> VehicleIdentificationNumber:
        """Split a 17-character VIN into its parts (no alphabet check; the encoder checks)."""
        return cls(isowmi=vin[0:3], isovds=vin[3:9], isovis_modelyear=vin[9:10], isovis_seq_plant=vin[10:17])

    def __repr__(self) -> str:
        # A VIN is personal data: keep it out of logs and tracebacks by default.
        return f"VehicleIdentificationNumber(isowmi={self.isowmi!r}, ...)"


@dataclass(**_frozen)
class VehiclePropulsionStorageType:
    """EN 15722 VehiclePropulsionStorageType; every flag BOOLEAN DEFAULT FALSE.

    ``other_storage`` exists from v2 on; a v1 MSD always has it False.
    """

    gasoline_tank_present: bool = False
    diesel_tank_present: bool = False
    compressed_natural_gas: bool = False
    liquid_propane_gas: bool = False
    electric_energy_storage: bool = False
    hydrogen_storage: bool = False
    other_storage: bool = False


@dataclass(**_frozen)
class VehicleLocation:
    """WGS84 position in milliarcseconds; 0x7FFFFFFF in either field means unknown."""

    position_latitude: int
    position_longitude: int

    @property
    def is_valid(self) -> bool:
        """True when both coordinates are known and within ±90° / ±180°."""
        # 0x7FFFFFFF (unknown) is far outside both ranges, so the range check covers it.
        return (
            abs(self.position_latitude) <= 90 * MAS_PER_DEGREE
            and abs(self.position_longitude) <= 180 * MAS_PER_DEGREE
        )

    @property
    def degrees(self) -> tuple[float, float] | None:
        """(latitude, longitude) in decimal degrees, or None when unknown or out of range."""
        if not self.is_valid:
            return None
        return (self.position_latitude / MAS_PER_DEGREE, self.position_longitude / MAS_PER_DEGREE)


@dataclass(**_frozen)
class VehicleLocationDelta:
    """Offset from the previous location, in units of 100 milliarcseconds (-512..511 each)."""

    latitude_delta: int
    longitude_delta: int


@dataclass(**_frozen)
class MsdStructure:
    """EN 15722 MSDStructure.

    ``number_of_passengers`` carries v1/v2 numberOfPassengers and v3 numberOfOccupants (one value,
    named by version on the wire and in JSON). In v3 N1 and N2 are mandatory.
    """

    message_identifier: int
    control: ControlType
    vehicle_identification_number: VehicleIdentificationNumber
    vehicle_propulsion_storage_type: VehiclePropulsionStorageType
    timestamp: int
    vehicle_location: VehicleLocation
    vehicle_direction: int
    recent_vehicle_location_n1: VehicleLocationDelta | None = None
    recent_vehicle_location_n2: VehicleLocationDelta | None = None
    number_of_passengers: int | None = None


# --- Optional additional data: ERA-GLONASS (relative OID 1.4.1 / 1.4.2), GOST 33464 -------------


class CoordinateSystemType(enum.IntEnum):
    """ERA-GLONASS format 2 CoordinateSystemType (ASN.1 values)."""

    wgs84 = 1
    pz90 = 2


@dataclass(**_frozen)
class DiagnosticResult:
    """ERA-GLONASS DiagnosticResult: 21 BOOLEAN OPTIONAL flags; None = absent."""

    mic_connection_failure: bool | None = None
    mic_failure: bool | None = None
    right_speaker_failure: bool | None = None
    left_speaker_failure: bool | None = None
    speakers_failure: bool | None = None
    ignition_line_failure: bool | None = None
    uim_failure: bool | None = None
    status_indicator_failure: bool | None = None
    battery_failure: bool | None = None
    battery_voltage_low: bool | None = None
    crash_sensor_failure: bool | None = None
    firmware_image_corruption: bool | None = None
    comm_module_interface_failure: bool | None = None
    gnss_receiver_failure: bool | None = None
    raim_problem: bool | None = None
    gnss_antenna_failure: bool | None = None
    comm_module_failure: bool | None = None
    events_memory_overflow: bool | None = None
    crash_profile_memory_overflow: bool | None = None
    other_critical_failures: bool | None = None
    other_not_critical_failures: bool | None = None


@dataclass(**_frozen)
class CrashInfo:
    """ERA-GLONASS CrashInfo: 8 BOOLEAN OPTIONAL flags; None = absent."""

    crash_front: bool | None = None
    crash_left: bool | None = None
    crash_right: bool | None = None
    crash_rear: bool | None = None
    crash_rollover: bool | None = None
    crash_side: bool | None = None
    crash_front_or_side: bool | None = None
    crash_another_type: bool | None = None


@dataclass(**_frozen)
class EraAdditionalData:
    """ERA-GLONASS ERAAdditionalData, formats 1 (OID 1.4.1) and 2 (OID 1.4.2).

    ``crash_severity`` is ASI15 (0..2047). ``coordinate_system_type`` is None in format 1 and
    defaults to wgs84 in format 2.
    """

    format: Literal[1, 2]
    crash_severity: int | None = None
    diagnostic_result: DiagnosticResult | None = None
    crash_info: CrashInfo | None = None
    coordinate_system_type: CoordinateSystemType | None = None


# --- Optional additional data: Euro NCAP TB 040 INCINFO (relative OID 8.1) ----------------------


class IILocations(enum.IntEnum):
    """Euro NCAP IILocations (ASN.1 values)."""

    unknown = 0
    none = 1
    front = 2
    rear = 3
    driverSide = 4
    nonDriverSide = 5
    other = 6


@dataclass(**_frozen)
class IIDeltaV:
    """Euro NCAP IIDeltaV: range limit 100..255, delta-V along vehicle X and Y, -255..255 each."""

    range_limit: int
    delta_vx: int
    delta_vy: int


@dataclass(**_frozen)
class IncInfo:
    """Euro NCAP TB 040 INCINFO."""

    location_of_impact: IILocations
    delta_v: IIDeltaV
    rollover_detected: bool | None = None


@dataclass(**_frozen)
class AdditionalData:
    """EN 15722 AdditionalData: a relative OID (dotted string) and its UPER-encoded data.

    ``decoded`` holds the decoded scheme for the OIDs we know (1.4.1, 1.4.2, 8.1) and None for
    others, which are kept undecoded.
    """

    oid: str
    data: bytes
    decoded: EraAdditionalData | IncInfo | None = None


@dataclass(**_frozen)
class MsdMessage:
    """EN 15722 MSDMessage."""

    msd_structure: MsdStructure
    optional_additional_data: AdditionalData | None = None


@dataclass(**_frozen)
class Msd:
    """One decoded MSD (ECallMessage): version, message, and the raw bytes as received.

    ``raw`` is what the vehicle sent (possibly non-canonical or zero-padded); it is kept so that
    forwarded documents carry the original bytes. It is excluded from equality so that values
    compare by meaning.
    """

    version: Literal[1, 2, 3]
    msd: MsdMessage
    raw: bytes = field(default=b"", compare=False, repr=False)

    # Convenience views for users; the ASN.1 structure above stays the source of truth.
    def to_json_dict(self) -> dict[str, Any]:
        """The JSON form of docs/interfaces.md (see :func:`ecallgw.codecs.msd.to_json_dict`)."""
        from ecallgw.codecs import msd as codec

        return codec.to_json_dict(self)

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> Msd:
        """The MSD of that JSON form (see :func:`ecallgw.codecs.msd.from_json_dict`)."""
        from ecallgw.codecs import msd as codec

        return codec.from_json_dict(d)

    @property
    def structure(self) -> MsdStructure:
        """The MSDStructure."""
        return self.msd.msd_structure

    @property
    def vin(self) -> str:
        """The VIN as one 17-character string."""
        return self.msd.msd_structure.vehicle_identification_number.vin

    @property
    def position(self) -> tuple[float, float] | None:
        """(lat, lon) in decimal degrees WGS84, or None when unknown."""
        return self.msd.msd_structure.vehicle_location.degrees

    @property
    def recent_positions(self) -> tuple[tuple[float, float], ...]:
        """Earlier positions N1 then N2 in decimal degrees (N1 relative to the location, N2 to N1)."""
        s = self.msd.msd_structure
        if not s.vehicle_location.is_valid:
            return ()
        lat, lon = s.vehicle_location.position_latitude, s.vehicle_location.position_longitude
        out: list[tuple[float, float]] = []
        for delta in (s.recent_vehicle_location_n1, s.recent_vehicle_location_n2):
            if delta is None:
                break
            lat += delta.latitude_delta * 100
            lon += delta.longitude_delta * 100
            out.append((lat / MAS_PER_DEGREE, lon / MAS_PER_DEGREE))
        return tuple(out)

    @property
    def direction_deg(self) -> int | None:
        """Heading in degrees clockwise (2-degree resolution), or None when unknown (255 or > 179)."""
        d = self.msd.msd_structure.vehicle_direction
        return d * 2 if d <= 179 else None

    @property
    def occupants(self) -> int | None:
        """Number of passengers/occupants, or None when absent or unknown (255)."""
        n = self.msd.msd_structure.number_of_passengers
        return None if n is None or n == 255 else n

    @property
    def automatic(self) -> bool:
        """True for an automatic activation."""
        return self.msd.msd_structure.control.automatic_activation

    @property
    def test(self) -> bool:
        """True for a test call."""
        return self.msd.msd_structure.control.test_call


# --- Positions and decoded signals ---------------------------------------------------------------


@dataclass(**_frozen)
class Position:
    """A position in decimal degrees WGS84, from the MSD or from NMEA.

    ``at`` is the fix time in epoch seconds (UTC) when known. ``quality`` is a short text such as
    "gps", "dgps", "rtk", "estimated" (NMEA), or "msd".
    """

    lat: float
    lon: float
    trusted: bool
    source: Literal["msd", "nmea", "caller_link"]
    at: float | None = None
    quality: str | None = None
    heading_deg: float | None = None
    speed_kmh: float | None = None
    altitude_m: float | None = None
    satellites: int | None = None
    hdop: float | None = None
    accuracy_m: float | None = None  # a caller's browser position: its stated accuracy (95 %)


@dataclass(**_frozen)
class MsdSignal:
    """An ``msd`` envelope: an eCall raised, or an MSD of an open call resent or updated."""

    tps: str
    vehicle: str
    call_id: str
    sent_at: float
    msd: Msd
    callback: str | None = None
    lang: str | None = None


@dataclass(**_frozen)
class CancelSignal:
    """A ``cancel`` envelope: the vehicle or its occupants cancelled the call."""

    tps: str
    vehicle: str
    call_id: str
    sent_at: float
    reason: str | None = None


@dataclass(**_frozen)
class PositionSignal:
    """A ``position`` envelope: a fresh position for an open call."""

    tps: str
    vehicle: str
    call_id: str
    sent_at: float
    position: Position


Signal = MsdSignal | CancelSignal | PositionSignal


# --- Incidents as receivers see them -------------------------------------------------------------

Level = Literal["critical", "high", "medium", "low"]
Status = Literal["open", "updated", "cancelled", "resolved"]


@dataclass(**_frozen)
class Reason:
    """One explained reason: a stable machine code (safe as a metric label) and a text for people."""

    code: str
    text: str


@dataclass(**_frozen)
class Severity:
    """Triage severity: score 0..100, its level, and the reasons that made it."""

    level: Level
    score: int
    reasons: tuple[Reason, ...] = ()


Activation = Literal["automatic", "manual", "test"]


@dataclass(**_frozen)
class Call:
    """One eCall of an incident: a provider's call, as of the revision that carries it.

    An incident holds every call that joined it (a redial of the vehicle, the same VIN reported by
    a second provider); the first is the primary call, whose fields are the snapshot's own
    (``tps``, ``vehicle``, ``call_id``, ``callback``, ``lang``). Every field here is of this call
    alone, so a document never mixes two calls. ``activation`` is its latest MSD's; ``first_at`` and
    ``last_at`` are receipt times of its first and latest signal (MSD, cancel or position).
    """

    tps: str
    vehicle: str
    call_id: str
    activation: Activation
    first_at: float
    last_at: float
    msd_version: int | None = None
    callback: str | None = None
    lang: str | None = None


@dataclass(**_frozen)
class IncidentSnapshot:
    """One revision of an incident, as triage decided it and as documents render it.

    ``received_at`` is when the first signal of the incident was received (epoch seconds UTC);
    ``updated_at`` when this revision was decided. ``scene_id`` links incidents of different
    vehicles at one scene. ``reasons`` are triage's reasons for this revision (dedup, false-trigger
    checks, routing), shown to operators. ``calls`` are the incident's calls, the primary first
    (empty in revisions stored before calls were kept). ``members`` are the incident ids a storm
    aggregate (``incident_id`` starting ``storm-``, for the operator desk only) stands for.
    ``operator_note`` is the latest note an operator wrote on the incident by the time of this
    revision (plain text, the gateway's API), so that it reaches receivers with the next revision.
    """

    incident_id: str
    revision: int
    status: Status
    severity: Severity
    tps: str
    vehicle: str
    call_id: str
    automatic: bool
    test: bool
    received_at: float
    updated_at: float
    msd: Msd | None = None
    position: Position | None = None
    callback: str | None = None
    lang: str | None = None
    scene_id: str | None = None
    reasons: tuple[Reason, ...] = ()
    calls: tuple[Call, ...] = ()
    members: tuple[str, ...] = ()
    operator_note: str | None = None
