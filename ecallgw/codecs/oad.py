"""Optional additional data (OAD) of the MSD: ERA-GLONASS (1.4.1, 1.4.2) and Euro NCAP (8.1).

MSDMessage.optionalAdditionalData carries a relative OID and octets holding a complete UPER
encoding of the scheme that OID names (docs/msd.md §6). The schemas below follow
tests/codecs/asn1/era-glonass-oad.asn and euroncap-oad.asn field by field. Decoding is lenient in
one place on purpose: padding bits after the last field are ignored, because Legato writes
ERA-GLONASS coordinateSystemType as 2 bits whose second bit lands there (docs/msd.md §6.1).
Data that does not decode is kept undecoded (``decoded`` = None): the MSD itself is still valid.
"""

from __future__ import annotations

from construct import ConstructError

from ecallgw.codecs._fastpath import FastSequence
from ecallgw.codecs._uper import (
    Boolean,
    Enumerated,
    Integer,
    SchemaValueError,
    Sequence,
    UperError,
    build_bits,
    container_to_model,
    default,
    extension_bit,
    model_to_container,
    model_to_json,
    optional,
    parse_bits,
    presence,
)
from ecallgw.errors import EncodeError
from ecallgw.model import (
    CoordinateSystemType,
    CrashInfo,
    DiagnosticResult,
    EraAdditionalData,
    IIDeltaV,
    IILocations,
    IncInfo,
)

__all__ = [
    "ERA_FORMAT1",
    "ERA_FORMAT2",
    "INCINFO",
    "OID_ERA_FORMAT1",
    "OID_ERA_FORMAT2",
    "OID_EURO_NCAP",
    "decode_oad",
    "encode_oad",
    "oad_oid",
    "oad_schema",
    "oad_to_json",
]

OID_ERA_FORMAT1 = "1.4.1"
OID_ERA_FORMAT2 = "1.4.2"
OID_EURO_NCAP = "8.1"

# --- ERA-GLONASS, GOST 33464 (era-glonass-oad.asn) ---------------------------------------------

_DIAGNOSTIC = (
    "micConnectionFailure",
    "micFailure",
    "rightSpeakerFailure",
    "leftSpeakerFailure",
    "speakersFailure",
    "ignitionLineFailure",
    "uimFailure",
    "statusIndicatorFailure",
    "batteryFailure",
    "batteryVoltageLow",
    "crashSensorFailure",
    "firmwareImageCorruption",
    "commModuleInterfaceFailure",
    "gnssReceiverFailure",
    "raimProblem",
    "gnssAntennaFailure",
    "commModuleFailure",
    "eventsMemoryOverflow",
    "crashProfileMemoryOverflow",
    "otherCriticalFailures",
    "otherNotCriticalFailures",
)
_CRASH = (
    "crashFront",
    "crashLeft",
    "crashRight",
    "crashRear",
    "crashRollover",
    "crashSide",
    "crashFrontOrSide",
    "crashAnotherType",
)

# DiagnosticResult ::= SEQUENCE { <21 x> BOOLEAN OPTIONAL }, no `...`
DiagnosticResultSchema = Sequence(
    *(presence(n) for n in _DIAGNOSTIC),
    *(optional(n, Boolean) for n in _DIAGNOSTIC),
    model=DiagnosticResult,
)

# CrashInfo ::= SEQUENCE { <8 x> BOOLEAN OPTIONAL }, no `...`
CrashInfoSchema = Sequence(
    *(presence(n) for n in _CRASH),
    *(optional(n, Boolean) for n in _CRASH),
    model=CrashInfo,
)

# ERAAdditionalData (format 1) ::= SEQUENCE { crashSeverity INTEGER (0..2047) OPTIONAL,
#     diagnosticResult OPTIONAL, crashInfo OPTIONAL, ... }
ERA_FORMAT1 = Sequence(
    extension_bit(),
    presence("crashSeverity"),
    presence("diagnosticResult"),
    presence("crashInfo"),
    optional("crashSeverity", Integer(0, 2047)),
    optional("diagnosticResult", DiagnosticResultSchema),
    optional("crashInfo", CrashInfoSchema),
    model=EraAdditionalData,
    constants={"format": 1},
)

# ERAAdditionalData (format 2) adds coordinateSystemType CoordinateSystemType DEFAULT wgs84,
# CoordinateSystemType ::= ENUMERATED { wgs84 (1), pz90 (2) } (no `...`: 1 bit).
ERA_FORMAT2 = Sequence(
    extension_bit(),
    presence("crashSeverity"),
    presence("diagnosticResult"),
    presence("crashInfo"),
    presence("coordinateSystemType", has_default=True, default_value=CoordinateSystemType.wgs84),
    optional("crashSeverity", Integer(0, 2047)),
    optional("diagnosticResult", DiagnosticResultSchema),
    optional("crashInfo", CrashInfoSchema),
    default(
        "coordinateSystemType",
        Enumerated([CoordinateSystemType.wgs84, CoordinateSystemType.pz90], extensible=False),
        CoordinateSystemType.wgs84,
    ),
    model=EraAdditionalData,
    constants={"format": 2},
)

# --- Euro NCAP TB 040 INCINFO (euroncap-oad.asn) -----------------------------------------------

# IIDeltaV ::= SEQUENCE { rangeLimit INTEGER (100..255), deltaVX, deltaVY INTEGER (-255..255), ... }
IIDeltaVSchema = Sequence(
    extension_bit(),
    "rangeLimit" / Integer(100, 255),
    "deltaVX" / Integer(-255, 255),
    "deltaVY" / Integer(-255, 255),
    model=IIDeltaV,
)

# INCINFO ::= SEQUENCE { locationOfImpact IILocations, rolloverDetected BOOLEAN OPTIONAL,
#     deltaV IIDeltaV, ... }; IILocations ::= ENUMERATED { unknown (0) .. other (6), ... }
INCINFO = Sequence(
    extension_bit(),
    presence("rolloverDetected"),
    "locationOfImpact" / Enumerated(list(IILocations), extensible=True),
    optional("rolloverDetected", Boolean),
    "deltaV" / IIDeltaVSchema,
    model=IncInfo,
)

_BY_OID: dict[str, Sequence] = {
    OID_ERA_FORMAT1: ERA_FORMAT1,
    OID_ERA_FORMAT2: ERA_FORMAT2,
    OID_EURO_NCAP: INCINFO,
}
_FAST = {oid: FastSequence(schema, f"oad_{oid.replace('.', '_')}") for oid, schema in _BY_OID.items()}


def decode_oad(oid: str, data: bytes) -> EraAdditionalData | IncInfo | None:
    """Decode the data of a known OID, or None for unknown OIDs and data that does not decode.

    Args:
        oid: the relative OID, dotted ("1.4.2").
        data: the octets of AdditionalData.data.

    Returns:
        The decoded scheme, or None.
    """
    fast = _FAST.get(oid)
    if fast is None:
        return None
    # The generated decoder alone decides: these schemas have nothing it leaves to the interpreted
    # parse (no fragmented lengths), so "gave up" means "does not decode", which is all an OAD
    # needs; the tests hold it to _decode_interpreted on arbitrary octets. Asking the interpreted
    # parse as well cost ~100 us for every MSD carrying undecodable data under a known OID.
    decoded: EraAdditionalData | IncInfo | None = fast.decode(data)
    return decoded


def _decode_interpreted(oid: str, data: bytes) -> EraAdditionalData | IncInfo | None:
    """The interpreted construct parse of a known OID's data: the reference for :func:`decode_oad`."""
    schema = _BY_OID.get(oid)
    if schema is None:
        return None
    try:
        value, used = parse_bits(schema, data)
    except UperError:
        return None
    if (used + 7) // 8 != len(data):  # whole octets left over: not one complete encoding
        return None
    decoded: EraAdditionalData | IncInfo = container_to_model(schema, value)
    return decoded


def oad_schema(decoded: EraAdditionalData | IncInfo) -> Sequence:
    """The schema of a decoded OAD value."""
    if isinstance(decoded, IncInfo):
        return INCINFO
    return ERA_FORMAT1 if decoded.format == 1 else ERA_FORMAT2


def oad_oid(decoded: EraAdditionalData | IncInfo) -> str:
    """The relative OID that names a decoded OAD value's scheme."""
    if isinstance(decoded, IncInfo):
        return OID_EURO_NCAP
    return OID_ERA_FORMAT1 if decoded.format == 1 else OID_ERA_FORMAT2


def encode_oad(decoded: EraAdditionalData | IncInfo) -> bytes:
    """Canonical UPER encoding of an OAD value, for AdditionalData.data.

    Raises:
        EncodeError: a value out of its range.
    """
    schema = oad_schema(decoded)
    try:
        return build_bits(schema, model_to_container(schema, decoded))
    except SchemaValueError as exc:
        raise EncodeError(f"OAD {oad_oid(decoded)}: {exc}") from exc
    except ConstructError as exc:  # construct's build errors, translated at this boundary
        raise EncodeError(f"OAD {oad_oid(decoded)}: {str(exc).splitlines()[-1]}") from exc


def oad_to_json(decoded: EraAdditionalData | IncInfo) -> dict[str, object]:
    """JSON form of a decoded OAD value (ASN.1 names; DEFAULT fields always present)."""
    out: dict[str, object] = model_to_json(oad_schema(decoded), decoded)
    return out
