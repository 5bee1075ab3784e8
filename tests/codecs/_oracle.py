"""asn1tools as an independent UPER oracle for the MSD and its optional additional data.

asn1tools has no RELATIVE-OID, so the modules are compiled with OCTET STRING in its place (the
same bits on the wire) and the arcs are converted here, independently of ecallgw's code. The
v2/v3 wrapper ``OCTET STRING (CONTAINING MSDMessage)`` is plain octets to asn1tools, so the
oracle encodes and decodes MSDMessage itself and wraps it. Values go in and out in the JSON form
of docs/interfaces.md (without ``decoded``), so they compare directly with ``to_json_dict``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import asn1tools

__all__ = [
    "ASN1_DIR",
    "decode",
    "decode_oad",
    "encode",
    "encode_message",
    "encode_oad",
    "oid_arcs",
    "oid_octets",
]

ASN1_DIR = Path(__file__).parent / "asn1"

_OAD_MODULES = {"1.4.1": "EraOadFormat1", "1.4.2": "EraOadFormat2", "8.1": "EuroNcapOad1"}
_OAD_TYPES = {"1.4.1": "ERAAdditionalData", "1.4.2": "ERAAdditionalData", "8.1": "INCINFO"}


@functools.cache
def _spec(version: int) -> Any:
    text = (ASN1_DIR / f"msd-v{version}.asn").read_text().replace("RELATIVE-OID", "OCTET STRING")
    return asn1tools.compile_string(text, "uper")


@functools.cache
def _oad_spec() -> Any:
    text = (ASN1_DIR / "era-glonass-oad.asn").read_text() + (ASN1_DIR / "euroncap-oad.asn").read_text()
    return asn1tools.compile_string(text, "uper")


def oid_octets(dotted: str) -> bytes:
    """BER contents octets of a relative OID (X.690 8.20), written independently of ecallgw."""
    out = bytearray()
    for part in dotted.split("."):
        arc = int(part)
        groups = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            groups.append(arc & 0x7F)
        out += bytes(g | 0x80 for g in reversed(groups[1:])) + bytes([groups[0]])
    return bytes(out)


def oid_arcs(octets: bytes) -> str:
    """Dotted form of relative OID contents octets."""
    arcs, value = [], 0
    for octet in octets:
        value = value * 128 + (octet & 0x7F)
        if octet < 0x80:
            arcs.append(value)
            value = 0
    return ".".join(map(str, arcs))


def _to_asn1tools(message: dict[str, Any]) -> dict[str, Any]:
    out = dict(message)
    extra = out.get("optionalAdditionalData")
    if extra is not None:
        out["optionalAdditionalData"] = {
            "oid": oid_octets(extra["oid"]),
            "data": bytes.fromhex(extra["data"]),
        }
    return out


def _from_asn1tools(message: dict[str, Any]) -> dict[str, Any]:
    out = dict(message)
    extra = out.get("optionalAdditionalData")
    if extra is not None:
        out["optionalAdditionalData"] = {"oid": oid_arcs(extra["oid"]), "data": extra["data"].hex()}
    return out


def _strip(value: dict[str, Any]) -> dict[str, Any]:
    msd = dict(value["msd"])
    extra = msd.get("optionalAdditionalData")
    if extra is not None:
        msd["optionalAdditionalData"] = {"oid": extra["oid"], "data": extra["data"]}
    return {**value, "msd": msd}


def encode_message(version: int, message: dict[str, Any]) -> bytes:
    """asn1tools' UPER encoding of an MSDMessage given as JSON."""
    out: bytes = _spec(version).encode("MSDMessage", _to_asn1tools(message))
    return out


def encode(value: dict[str, Any]) -> bytes:
    """asn1tools' UPER encoding of a whole ECallMessage given as JSON (``decoded`` ignored)."""
    value = _strip(value)
    if "id" in value:
        out: bytes = _spec(1).encode("ECallMessage", {"id": value["id"], "msd": _to_asn1tools(value["msd"])})
        return out
    version = value["msdVersion"]
    inner = encode_message(version, value["msd"])
    wrapped: bytes = _spec(version).encode("ECallMessage", {"msdVersion": version, "msd": inner})
    return wrapped


def decode(data: bytes) -> dict[str, Any]:
    """asn1tools' decoding of an ECallMessage, as JSON (version from byte 0)."""
    version = data[0]
    top = _spec(version).decode("ECallMessage", data)
    if version == 1:
        return {"id": top["id"], "msd": _from_asn1tools(top["msd"])}
    message = _spec(version).decode("MSDMessage", top["msd"])
    return {"msdVersion": top["msdVersion"], "msd": _from_asn1tools(message)}


def encode_oad(oid: str, value: dict[str, Any]) -> bytes:
    """asn1tools' UPER encoding of a known OAD scheme given as JSON."""
    types = _oad_spec().modules[_OAD_MODULES[oid]]
    out: bytes = types[_OAD_TYPES[oid]].encode(value)
    return out


def decode_oad(oid: str, data: bytes) -> dict[str, Any]:
    """asn1tools' decoding of a known OAD scheme, as JSON."""
    types = _oad_spec().modules[_OAD_MODULES[oid]]
    out: dict[str, Any] = types[_OAD_TYPES[oid]].decode(data)
    return out
