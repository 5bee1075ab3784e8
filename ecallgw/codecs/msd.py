"""Decode and encode the EN 15722 MSD (versions 1, 2, 3), and map it to and from JSON.

The schemas live in :mod:`ecallgw.codecs._msd_schema`. Decoding first runs the shift-and-mask
code generated from them (:mod:`ecallgw.codecs._fastpath`); on any doubt it re-parses with the
interpreted construct schema, which either succeeds or raises a :class:`~ecallgw.errors.DecodeError`
naming the ASN.1 path and the bit offset where the input went wrong.

Framing rules (docs/msd-codec.md): byte 0 is the version; v1 carries MSDMessage directly, v2/v3
inside an OCTET STRING with a UPER length determinant (short or long form). After the encoding,
a 140-octet frame may be filled with zero octets (in-band modem captures); any other trailing
octet is an error. Padding bits inside the last octet are ignored.

>>> msd = decode(bytes.fromhex(
...     "015c0681d54970d65c3597ca0420c41464583ade68ac52e9bb8413f149c07414fb414f6010180813e82181823230"))
>>> msd.version, msd.vin, msd.direction_deg
(1, 'WM9VDSVDSYA123456', 28)
"""

from __future__ import annotations

from typing import Any

from construct import ConstructError

from ecallgw.codecs import _fastpath, oad
from ecallgw.codecs._msd_schema import SCHEMAS
from ecallgw.codecs._uper import (
    SchemaValueError,
    UperError,
    build_bits,
    container_to_model,
    dotted_path,
    json_to_model,
    model_to_container,
    model_to_json,
    parse_bits,
)
from ecallgw.errors import DecodeError, EncodeError
from ecallgw.model import Msd

__all__ = [
    "FRAME_OCTETS",
    "MAX_OCTETS",
    "decode",
    "decode_msd",
    "encode",
    "encode_msd",
    "from_json_dict",
    "to_json_dict",
]

FRAME_OCTETS = _fastpath.FRAME_OCTETS
"""Size of the in-band modem MSD frame; only such a frame may carry zero octets after the MSD."""

MAX_OCTETS = 2 * (3 + 0x3FFF) + 64
"""Longer input cannot be an MSD: at most two unfragmented OCTET STRINGs plus fixed fields."""

_CODEC = "msd"
_FAST = {version: _fastpath.FastCodec(schema, Msd, f"msd_v{version}") for version, schema in SCHEMAS.items()}
_FAST_DECODE = {version: fast.decode_or_raise for version, fast in _FAST.items()}


def _check_tail(data: bytes, end: int) -> None:
    """Reject octets after the encoding unless they are the zero fill of a 140-octet frame."""
    if end < len(data) and (len(data) != FRAME_OCTETS or any(data[end:])):
        raise DecodeError(
            _CODEC,
            f"{len(data) - end} octet{'s' if len(data) - end > 1 else ''} after the end of the encoding "
            f"(only zero fill of a {FRAME_OCTETS}-octet frame is accepted)",
            bit_offset=8 * end,
        )


def _decode_interpreted(data: bytes) -> Msd:
    """Decode with the interpreted construct schema (the reference; precise errors)."""
    schema = SCHEMAS[data[0]]
    try:
        value, used = parse_bits(schema, data)
    except UperError as exc:
        raise DecodeError(_CODEC, exc.reason, path=dotted_path(exc.path), bit_offset=exc.bit_offset) from exc
    _check_tail(data, (used + 7) // 8)
    msd: Msd = container_to_model(schema, value)
    return Msd(version=msd.version, msd=msd.msd, raw=bytes(data))


def decode(data: bytes) -> Msd:
    """Decode one MSD.

    Args:
        data: the UPER-encoded ECallMessage, as the vehicle sent it.

    Returns:
        The MSD, with ``raw`` set to ``data``.

    Raises:
        DecodeError: the input is not a valid MSD of version 1, 2 or 3 (``path`` and
            ``bit_offset`` say where).
    """
    if data.__class__ is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(_CODEC, f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    try:
        msd: Msd = _FAST_DECODE[data[0]](data)
        return msd
    except _fastpath.GIVE_UP_DECODE:  # unusual or bad input (or no such version): the schema decides
        pass
    if not data:
        raise DecodeError(_CODEC, "empty input", bit_offset=0)
    if len(data) > MAX_OCTETS:  # before the interpreted parse, which needs a byte per bit
        raise DecodeError(_CODEC, f"{len(data)} octets is longer than any MSD ({MAX_OCTETS} at most)")
    if data[0] not in SCHEMAS:
        raise DecodeError(
            _CODEC, f"unknown MSD version {data[0]} in byte 0 (known: 1, 2, 3)", path="id", bit_offset=0
        )
    return _decode_interpreted(data)


def _encode_interpreted(msd: Msd, *, canonical: bool = True) -> bytes:
    """Encode with the construct schema's build (the reference for the generated encoder)."""
    schema = SCHEMAS.get(msd.version) if isinstance(msd, Msd) else None
    if schema is None:
        raise EncodeError(f"not an MSD of version 1, 2 or 3: {msd!r}")
    try:
        return build_bits(schema, model_to_container(schema, msd), all_defaults=not canonical)
    except SchemaValueError as exc:
        raise EncodeError(f"MSD v{msd.version}: {exc}") from exc
    except ConstructError as exc:
        where = dotted_path(exc.path or "")
        raise EncodeError(f"MSD v{msd.version}: {str(exc).splitlines()[-1]} in {where}") from exc


def encode(msd: Msd, *, canonical: bool = True) -> bytes:
    """Canonical UPER encoding of an MSD (DEFAULT components equal to their default left out).

    Args:
        msd: the value; ``raw`` is ignored.
        canonical: False sends every DEFAULT component with its presence bit set, as the Legato
            and Qualcomm encoders do (docs/msd.md §3.5); for simulating such senders.

    Returns:
        The ECallMessage octets.

    Raises:
        EncodeError: a value the version cannot carry (VIN letters I, O, Q, an integer out of its
            range, a v3-only vehicle type in v1/v2, otherStorage in v1, N1/N2 missing in v3).
    """
    if not canonical:
        return _encode_interpreted(msd, canonical=False)
    fast = _FAST.get(getattr(msd, "version", None))  # type: ignore[arg-type]
    out = fast.encode(msd) if fast is not None and isinstance(msd, Msd) else None
    if out is not None:
        return out
    return _encode_interpreted(msd)


def to_json_dict(msd: Msd) -> dict[str, Any]:
    """The JSON form of docs/interfaces.md: ASN.1 names, enum identifiers, hex octets, dotted OIDs.

    Known optional additional data gets a ``decoded`` object beside ``oid`` and ``data``.
    """
    out: dict[str, Any] = model_to_json(SCHEMAS[msd.version], msd)
    extra = msd.msd.optional_additional_data
    if extra is not None and extra.decoded is not None:
        out["msd"]["optionalAdditionalData"]["decoded"] = oad.oad_to_json(extra.decoded)
    return out


def from_json_dict(d: dict[str, Any]) -> Msd:
    """The MSD of a JSON object in the form :func:`to_json_dict` gives.

    ``decoded`` is derived again from ``oid`` and ``data``. Shapes and types are checked here;
    ranges and the VIN alphabet are checked by :func:`encode`.

    Raises:
        DecodeError: the object does not have the shape of an MSD (``path`` names the key).
    """
    if not isinstance(d, dict):
        raise DecodeError(_CODEC, "expected a JSON object")
    if "id" in d:
        version = d["id"]
    elif "msdVersion" in d:
        version = d["msdVersion"]
    else:
        raise DecodeError(_CODEC, "missing 'id' (v1) or 'msdVersion' (v2, v3)")
    schema = SCHEMAS.get(version) if isinstance(version, int) and not isinstance(version, bool) else None
    if schema is None or ("id" in d) != (version == 1):
        raise DecodeError(_CODEC, f"unsupported version {version!r} (v1 uses 'id', v2/v3 'msdVersion')")
    try:
        msd: Msd = json_to_model(schema, d)
    except SchemaValueError as exc:
        raise DecodeError(_CODEC, exc.reason, path=exc.path) from exc
    return msd


decode_msd = decode
encode_msd = encode
