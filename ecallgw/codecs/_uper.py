"""UPER (ITU-T X.691, unaligned) building blocks on construct, for schemas that read like ASN.1.

Every construct here works on a *bit stream*: a byte string holding one bit per byte (``b"\\x00"`` or
``b"\\x01"``), as produced by :func:`construct.lib.bytes2bits`. Stream positions are therefore bit
offsets into the PDU, which is what :class:`ecallgw.errors.DecodeError` reports.

Each class keeps its ASN.1 parameters as plain attributes (``lb``, ``ub``, ``width``, ``members``,
``size``, ...) so that :mod:`ecallgw.codecs._fastpath` can walk a schema tree and generate
shift-and-mask code from it; the interpreted parse stays the reference and the source of precise
error paths.

Sources: X.691 clauses 11 (constrained whole numbers, length determinants), 12 (BOOLEAN),
13 (INTEGER), 14 (ENUMERATED), 17 (OCTET STRING), 19 (SEQUENCE), 24 (RELATIVE-OID),
30 (known-multiplier character strings); the MSD notes in docs/msd-codec.md.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import io
from collections.abc import Callable, Mapping
from collections.abc import Sequence as Seq
from typing import Any

from construct import (
    BitsInteger,
    Construct,
    ConstructError,
    Container,
    IfThenElse,
    Pass,
    Renamed,
    StopFieldError,
    Struct,
    this,
)
from construct.lib import bits2bytes, bits2integer, bytes2bits, integer2bits

__all__ = [
    "MAX_ARC",
    "VIN_ALPHABET",
    "Boolean",
    "Containing",
    "DefaultField",
    "Enumerated",
    "ExtensionBit",
    "Integer",
    "OctetString",
    "OptionalField",
    "PresenceBit",
    "RelativeOid",
    "Sequence",
    "UperError",
    "VinCharacters",
    "default",
    "extension_bit",
    "model_defaults",
    "oid_from_octets",
    "oid_to_octets",
    "optional",
    "presence",
    "snake",
]

VIN_ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
"""PermittedAlphabet of EN 15722 VinCharacters, sorted: a character is sent as its index here."""

MAX_ARC = 2**64 - 1
"""Largest RELATIVE-OID arc accepted. X.690 sets no bound; a larger arc is no real scheme's, and
its decimal form would cost quadratic time (Python refuses more than 4300 digits)."""


class UperError(ConstructError):  # type: ignore[misc]
    """A UPER decoding error with the bit offset where the failing element starts."""

    def __init__(self, reason: str, path: str, bit_offset: int) -> None:
        super().__init__(reason, path=path)
        self.reason = reason
        self.bit_offset = bit_offset


@functools.cache  # the walkers ask for the same few dozen names on every MSD
def snake(name: str) -> str:
    """The mechanical snake_case of an ASN.1 identifier, as the model uses it.

    >>> snake("recentVehicleLocationN1"), snake("deltaVX"), snake("isovisModelyear")
    ('recent_vehicle_location_n1', 'delta_vx', 'isovis_modelyear')
    """
    out: list[str] = []
    prev_upper = False
    for ch in name:
        upper = ch.isupper()
        if upper and out and not prev_upper:
            out.append("_")
        out.append(ch.lower())
        prev_upper = upper
    return "".join(out)


def _read_bits(stream: io.BytesIO, width: int, path: str) -> int:
    start = stream.tell()
    data = stream.read(width)
    if len(data) != width:
        unit = "bit" if width == 1 else "bits"
        raise UperError(f"truncated: needed {width} {unit}, had {len(data)}", path, start)
    return bits2integer(data) if width else 0


def _write_bits(stream: io.BytesIO, value: int, width: int) -> None:
    if width:
        stream.write(integer2bits(value, width))


def width_of(count: int) -> int:
    """Bits needed for a constrained whole number with ``count`` possible values (X.691 11.5.6)."""
    return (count - 1).bit_length()


class BooleanBit(Construct):  # type: ignore[misc]
    """BOOLEAN: one bit (X.691 clause 12); reading past the end is a "truncated" UperError."""

    def _parse(self, stream: io.BytesIO, context: Any, path: str) -> bool:
        return bool(_read_bits(stream, 1, path))

    def _build(self, obj: Any, stream: io.BytesIO, context: Any, path: str) -> bool:
        _write_bits(stream, 1 if obj else 0, 1)
        return bool(obj)

    def _sizeof(self, context: Any, path: str) -> int:
        return 1


Boolean = BooleanBit()
"""BOOLEAN: the one instance every schema uses (the walkers recognise it by identity)."""


class Integer(Construct):  # type: ignore[misc]
    """INTEGER (lb..ub): ``value - lb`` in the minimal number of bits (X.691 13.2.2, 11.5.6)."""

    def __init__(self, lb: int, ub: int) -> None:
        super().__init__()
        self.lb = lb
        self.ub = ub
        self.width = width_of(ub - lb + 1)
        self.bits = BitsInteger(self.width)  # the construct this reads, kept for introspection

    def _parse(self, stream: io.BytesIO, context: Any, path: str) -> int:
        start = stream.tell()
        value = _read_bits(stream, self.width, path) + self.lb
        if value > self.ub:
            raise UperError(f"value {value} out of range {self.lb}..{self.ub}", path, start)
        return value

    def _build(self, obj: int, stream: io.BytesIO, context: Any, path: str) -> int:
        if isinstance(obj, bool) or not isinstance(obj, int) or not self.lb <= obj <= self.ub:
            raise ConstructError(f"{obj!r} is not an integer in {self.lb}..{self.ub}", path=path)
        _write_bits(stream, obj - self.lb, self.width)
        return obj

    def _sizeof(self, context: Any, path: str) -> int:
        return self.width


class ExtensionBit(Construct):  # type: ignore[misc]
    """The extension bit of a type with ``...`` (X.691 19.1, 14.2).

    EN 15722 defines no extension additions in any version, and an unknown ENUMERATED addition
    cannot be represented, so a set bit is rejected (docs/msd-codec.md, "Extension bits").
    """

    def __init__(self) -> None:
        super().__init__()
        self.flagbuildnone = True

    def _parse(self, stream: io.BytesIO, context: Any, path: str) -> bool:
        start = stream.tell()
        if _read_bits(stream, 1, path):
            raise UperError("extension bit set: extension additions are not supported", path, start)
        return False

    def _build(self, obj: Any, stream: io.BytesIO, context: Any, path: str) -> bool:
        _write_bits(stream, 0, 1)
        return False

    def _sizeof(self, context: Any, path: str) -> int:
        return 1


class PresenceBit(Construct):  # type: ignore[misc]
    """One bit of a SEQUENCE's preamble: is the OPTIONAL/DEFAULT component ``of`` present (X.691 19.2)?

    When building, the bit is computed canonically: an OPTIONAL component is present when it is not
    None, a DEFAULT component when its value differs from the default (X.691 19.5 / 19.6).
    """

    def __init__(self, of: str, *, has_default: bool = False, default_value: Any = None) -> None:
        super().__init__()
        self.of = of
        self.has_default = has_default
        self.default_value = default_value
        self.flagbuildnone = True

    def _parse(self, stream: io.BytesIO, context: Any, path: str) -> bool:
        return bool(_read_bits(stream, 1, path))

    def _build(self, obj: Any, stream: io.BytesIO, context: Any, path: str) -> bool:
        value = context.get(self.of)
        if self.has_default and context._params.get("all_defaults"):
            present = True  # the non-canonical form real senders use (docs/msd.md §3.5)
        else:
            present = value != self.default_value if self.has_default else value is not None
        _write_bits(stream, int(present), 1)
        return present

    def _sizeof(self, context: Any, path: str) -> int:
        return 1


class OptionalField(IfThenElse):  # type: ignore[misc]
    """An OPTIONAL component: parsed when its presence bit is set, None otherwise."""

    def __init__(self, flag: str, subcon: Construct) -> None:
        super().__init__(this[flag], subcon, Pass)
        self.flag = flag
        self.subcon = subcon

    def _build(self, obj: Any, stream: io.BytesIO, context: Any, path: str) -> Any:
        if obj is None:
            return None
        return self.subcon._build(obj, stream, context, path)


class DefaultField(IfThenElse):  # type: ignore[misc]
    """A DEFAULT component: parsed when its presence bit is set, the default value otherwise.

    Decoding honours the presence bit whatever the value (non-canonical senders set every DEFAULT
    presence bit); building writes the value only when it differs from the default.
    """

    def __init__(self, flag: str, subcon: Construct, default_value: Any) -> None:
        super().__init__(this[flag], subcon, Pass)
        self.flag = flag
        self.subcon = subcon
        self.default_value = default_value

    def _parse(self, stream: io.BytesIO, context: Any, path: str) -> Any:
        if context[self.flag]:
            return self.subcon._parsereport(stream, context, path)
        return self.default_value

    def _build(self, obj: Any, stream: io.BytesIO, context: Any, path: str) -> Any:
        if obj == self.default_value and not context._params.get("all_defaults"):
            return obj
        return self.subcon._build(obj, stream, context, path)


class Enumerated(Construct):  # type: ignore[misc]
    """ENUMERATED: optional extension bit, then the 0-based root index (X.691 14.2-14.3).

    ``members`` are the enum members in root order; the wire carries their index, not their value.
    """

    def __init__(self, members: Seq[enum.Enum], *, extensible: bool) -> None:
        super().__init__()
        self.members = tuple(members)
        self.extensible = extensible
        self.width = width_of(len(self.members))
        self.index = {m: i for i, m in enumerate(self.members)}

    def _parse(self, stream: io.BytesIO, context: Any, path: str) -> enum.Enum:
        start = stream.tell()
        if self.extensible and _read_bits(stream, 1, path):
            raise UperError("extension bit set: value outside the root enumeration", path, start)
        index = _read_bits(stream, self.width, path)
        if index >= len(self.members):
            raise UperError(f"enumeration index {index} not in 0..{len(self.members) - 1}", path, start)
        return self.members[index]

    def _build(self, obj: Any, stream: io.BytesIO, context: Any, path: str) -> Any:
        index = self.index.get(obj)
        if index is None:
            raise ConstructError(f"{obj!r} is not one of this enumeration's root values", path=path)
        if self.extensible:
            _write_bits(stream, 0, 1)
        _write_bits(stream, index, self.width)
        return obj

    def _sizeof(self, context: Any, path: str) -> int:
        return int(self.extensible) + self.width


class VinCharacters(Construct):  # type: ignore[misc]
    """VinCharacters (SIZE (n)): fixed size, each character a 6-bit index into VIN_ALPHABET (X.691 30.5.4)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.width = 6

    def _parse(self, stream: io.BytesIO, context: Any, path: str) -> str:
        chars = []
        for i in range(self.size):
            start = stream.tell()
            index = _read_bits(stream, 6, path)
            if index >= len(VIN_ALPHABET):
                raise UperError(
                    f"character {i} has index {index}, not in the VIN alphabet (0..32)", path, start
                )
            chars.append(VIN_ALPHABET[index])
        return "".join(chars)

    def _build(self, obj: Any, stream: io.BytesIO, context: Any, path: str) -> str:
        if not isinstance(obj, str) or len(obj) != self.size or any(c not in VIN_ALPHABET for c in obj):
            raise ConstructError(f"{obj!r} is not {self.size} characters of the VIN alphabet", path=path)
        for c in obj:
            _write_bits(stream, VIN_ALPHABET.index(c), 6)
        return obj

    def _sizeof(self, context: Any, path: str) -> int:
        return 6 * self.size


def _read_length(stream: io.BytesIO, path: str) -> int:
    """An unconstrained length determinant (X.691 11.9.4.2): 1 octet below 128, 2 octets below 16384."""
    start = stream.tell()
    first = _read_bits(stream, 8, path)
    if first < 0x80:
        return first
    if first < 0xC0:
        return ((first & 0x3F) << 8) | _read_bits(stream, 8, path)
    raise UperError("fragmented length (16384 octets or more) is not supported", path, start)


def _write_length(stream: io.BytesIO, length: int, path: str) -> None:
    if length < 0x80:
        _write_bits(stream, length, 8)
    elif length < 0x4000:
        _write_bits(stream, 0x8000 | length, 16)
    else:
        raise ConstructError(f"length {length} needs fragmentation, not supported", path=path)


def _read_octets(stream: io.BytesIO, count: int, path: str) -> bytes:
    start = stream.tell()
    bits = stream.read(8 * count)
    if len(bits) != 8 * count:
        raise UperError(f"truncated: needed {count} octets, had {len(bits) // 8}", path, start)
    return bits2integer(bits).to_bytes(count, "big") if count else b""


def _write_octets(stream: io.BytesIO, data: bytes) -> None:
    if data:
        stream.write(integer2bits(int.from_bytes(data, "big"), 8 * len(data)))


class OctetString(Construct):  # type: ignore[misc]
    """OCTET STRING without a size constraint: length determinant, then the octets, unaligned."""

    def _parse(self, stream: io.BytesIO, context: Any, path: str) -> bytes:
        return _read_octets(stream, _read_length(stream, path), path)

    def _build(self, obj: Any, stream: io.BytesIO, context: Any, path: str) -> bytes:
        if not isinstance(obj, bytes):
            raise ConstructError(f"{obj!r} is not bytes", path=path)
        _write_length(stream, len(obj), path)
        _write_octets(stream, obj)
        return obj


def oid_from_octets(octets: bytes) -> str | None:
    """Dotted form of RELATIVE-OID contents octets (X.690 8.20), or None when malformed.

    Malformed: no arcs, an arc with a redundant leading 0x80 octet, a last octet with its
    continuation bit set, or an arc above :data:`MAX_ARC`.
    """
    if not octets or octets[-1] & 0x80:
        return None
    arcs: list[str] = []
    value = 0
    fresh = True
    for octet in octets:
        if fresh and octet == 0x80:
            return None
        value = (value << 7) | (octet & 0x7F)
        if value > MAX_ARC:  # checked per octet, so a hostile arc never grows large
            return None
        fresh = not octet & 0x80
        if fresh:
            arcs.append(str(value))
            value = 0
    return ".".join(arcs)


def oid_to_octets(oid: str) -> bytes | None:
    """RELATIVE-OID contents octets of a dotted string, or None when it is not one.

    Not one: an empty arc, a non-ASCII-digit, a leading zero, or an arc above :data:`MAX_ARC`.
    """
    out = bytearray()
    parts = oid.split(".")
    for part in parts:
        if not part.isdigit() or not part.isascii() or (len(part) > 1 and part[0] == "0") or len(part) > 20:
            return None
        arc = int(part)
        if arc > MAX_ARC:
            return None
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


class RelativeOid(Construct):  # type: ignore[misc]
    """RELATIVE-OID: length determinant, then BER contents octets; the value is the dotted string."""

    def _parse(self, stream: io.BytesIO, context: Any, path: str) -> str:
        start = stream.tell()
        octets = _read_octets(stream, _read_length(stream, path), path)
        oid = oid_from_octets(octets)
        if oid is None:
            shown = octets[:16].hex() + ("..." if len(octets) > 16 else "")
            raise UperError(
                f"malformed relative OID contents {shown!r} ({len(octets)} octets; arcs must end, "
                f"have no leading 0x80 octet and stay below 2^64)",
                path,
                start,
            )
        return oid

    def _build(self, obj: Any, stream: io.BytesIO, context: Any, path: str) -> str:
        octets = oid_to_octets(obj) if isinstance(obj, str) else None
        if octets is None:
            shown = repr(obj) if len(repr(obj)) <= 60 else repr(obj)[:57] + "..."
            raise ConstructError(f"{shown} is not a dotted relative OID (arcs below 2^64)", path=path)
        _write_length(stream, len(octets), path)
        _write_octets(stream, octets)
        return str(obj)


class Containing(Construct):  # type: ignore[misc]
    """OCTET STRING (CONTAINING T): length determinant, then a complete UPER encoding of T.

    Parsing keeps absolute bit positions (the contained value is parsed in a copy of the stream cut
    at the end of the octets), so errors inside name their offset in the whole PDU. The encoding must
    fill the octets: padding bits in the last octet are ignored, whole unused octets are an error.
    """

    def __init__(self, subcon: Construct) -> None:
        super().__init__()
        self.subcon = subcon

    def _parse(self, stream: io.BytesIO, context: Any, path: str) -> Any:
        length = _read_length(stream, path)
        start = stream.tell()
        end = start + 8 * length
        whole = stream.getvalue()
        if end > len(whole):
            raise UperError(
                f"truncated: length says {length} octets, had {(len(whole) - start) // 8}", path, start
            )
        sub = io.BytesIO(whole[:end])
        sub.seek(start)
        obj = self.subcon._parsereport(sub, context, path)
        used = sub.tell() - start
        if (used + 7) // 8 != length:
            raise UperError(
                f"{length - (used + 7) // 8} unused octets at the end of the contained encoding",
                path,
                start + (used + 7) // 8 * 8,
            )
        stream.seek(end)
        return obj

    def _build(self, obj: Any, stream: io.BytesIO, context: Any, path: str) -> Any:
        sub = io.BytesIO()
        self.subcon._build(obj, sub, context, path)
        bits = sub.getvalue()
        bits += b"\x00" * (-len(bits) % 8)
        _write_length(stream, len(bits) // 8, path)
        stream.write(bits)
        return obj


class Sequence(Struct):  # type: ignore[misc]
    """SEQUENCE: a construct Struct that also records where each component starts.

    Components are declared in ASN.1 order, preamble first (extension bit, presence bits). The
    ``model`` class is built from the parsed components (snake_case names, ``rename`` for the
    exceptions, ``constants`` for model fields fixed by the schema, ``computed`` for derived ones).
    """

    def __init__(
        self,
        *subcons: Construct,
        model: type,
        rename: Mapping[str, str] | None = None,
        constants: Mapping[str, Any] | None = None,
        computed: Mapping[str, tuple[Callable[..., Any], tuple[str, ...]]] | None = None,
    ) -> None:
        super().__init__(*subcons)
        self.model = model
        self.rename = dict(rename or {})
        self.constants = dict(constants or {})
        self.computed = dict(computed or {})

    def attr(self, name: str) -> str:
        """The model attribute for ASN.1 component ``name``."""
        return self.rename.get(name) or snake(name)

    @property
    def components(self) -> list[Renamed]:
        """The value components (not the preamble), in order."""
        return [
            sc for sc in self.subcons if sc.name and not isinstance(sc.subcon, PresenceBit | ExtensionBit)
        ]

    def _parse(self, stream: io.BytesIO, context: Any, path: str) -> Container:
        obj = Container()
        context = Container(
            _=context,
            _params=context._params,
            _root=None,
            _parsing=context._parsing,
            _building=context._building,
            _sizing=context._sizing,
            _subcons=self._subcons,
            _io=stream,
            _index=context.get("_index", None),
        )
        context._root = context._.get("_root", context)
        for sc in self.subcons:
            start = stream.tell()
            try:
                subobj = sc._parsereport(stream, context, path)
            except StopFieldError:
                break
            except UperError:
                raise
            except ConstructError as exc:
                # A foreign construct error (a BitsInteger read past the end): pin it to this field.
                raise UperError(str(exc).splitlines()[-1], f"{path} -> {sc.name}", start) from exc
            if sc.name:
                obj[sc.name] = subobj
                context[sc.name] = subobj
        return obj


def extension_bit() -> Renamed:
    """The extension bit of a SEQUENCE with ``...``."""
    return "_extension" / ExtensionBit()


def presence(name: str, *, default_value: Any = None, has_default: bool = False) -> Renamed:
    """The presence bit of OPTIONAL (or, with ``has_default``, DEFAULT) component ``name``."""
    return f"{name}__present" / PresenceBit(name, has_default=has_default, default_value=default_value)


def optional(name: str, subcon: Construct) -> Renamed:
    """OPTIONAL component ``name``, guarded by the presence bit declared with :func:`presence`."""
    return name / OptionalField(f"{name}__present", subcon)


def default(name: str, subcon: Construct, default_value: Any) -> Renamed:
    """DEFAULT component ``name``, guarded by the presence bit declared with :func:`presence`."""
    return name / DefaultField(f"{name}__present", subcon, default_value)


# --- Walkers derived from a schema tree ---------------------------------------------------------
#
# The schema is the only description of the value; these walkers convert between the construct
# value (a Container tree), our frozen model, and the JSON form of docs/interfaces.md.

_MISSING = object()


def container_to_model(node: Construct, value: Any) -> Any:
    """Convert what the interpreted parse of ``node`` returned into the model value."""
    if isinstance(node, Sequence):
        kwargs = {node.attr(sc.name): container_to_model(sc.subcon, value[sc.name]) for sc in node.components}
        kwargs.update(node.constants)
        for attr, (fn, args) in node.computed.items():
            kwargs[attr] = fn(*(value[a] for a in args))
        return node.model(**kwargs)
    if isinstance(node, OptionalField):
        return None if value is None else container_to_model(node.subcon, value)
    if isinstance(node, DefaultField | Containing):
        return container_to_model(node.subcon, value)
    return value


class SchemaValueError(Exception):
    """A model or JSON value that does not fit the schema (carries the dotted ASN.1 path)."""

    def __init__(self, reason: str, path: str) -> None:
        super().__init__(f"{reason} in {path}" if path else reason)
        self.reason = reason
        self.path = path


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def model_defaults(cls: type) -> dict[str, Any]:
    """The model attributes that have a default, with it (those a version may lack must keep it)."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def model_to_container(node: Construct, obj: Any, path: str = "") -> Any:
    """Convert a model value into the dict tree construct's build takes.

    Raises:
        SchemaValueError: ``obj`` has a value the schema cannot carry (an attribute the version lacks
            set to a non-default value, a mandatory component that is None, a wrong type).
    """
    if isinstance(node, Sequence):
        if not isinstance(obj, node.model):
            raise SchemaValueError(f"expected {node.model.__name__}, got {type(obj).__name__}", path)
        out: dict[str, Any] = {}
        used = set(node.constants) | set(node.computed)
        for sc in node.components:
            attr = node.attr(sc.name)
            used.add(attr)
            out[sc.name] = model_to_container(sc.subcon, getattr(obj, attr), _join(path, sc.name))
        for attr, dflt in model_defaults(node.model).items():
            if attr not in used and getattr(obj, attr) != dflt:
                value = getattr(obj, attr)
                raise SchemaValueError(f"{attr}={value!r} cannot be encoded in this version", path)
        return out
    if isinstance(node, OptionalField):
        return None if obj is None else model_to_container(node.subcon, obj, path)
    if obj is None:
        raise SchemaValueError("mandatory component is None", path)
    if isinstance(node, DefaultField | Containing):
        return model_to_container(node.subcon, obj, path)
    return obj


def model_to_json(node: Construct, obj: Any) -> Any:
    """The JSON value of a model value: ASN.1 names, identifiers for enums, hex for octets."""
    return json_writer(node)(obj)


# node id -> (node, writer); the node is kept so that its id cannot be reused by another object.
_WRITERS: dict[int, tuple[Construct, Callable[[Any], Any]]] = {}


def json_writer(node: Construct) -> Callable[[Any], Any]:
    """``model_to_json(node, ·)`` compiled once per schema node into nested closures.

    Walking the schema for every value (isinstance dispatch, component list and attribute names
    looked up again) cost ~37 us per MSD; the closures do only the getattr and conversions.
    """
    cached = _WRITERS.get(id(node))
    if cached is not None:
        return cached[1]
    writer = _compile_writer(node)
    _WRITERS[id(node)] = (node, writer)
    return writer


def _hex(obj: Any) -> str:
    return bytes(obj).hex()


def _name(obj: Any) -> Any:
    return obj.name


def _same(obj: Any) -> Any:
    return obj


def _compile_writer(node: Construct) -> Callable[[Any], Any]:
    # The dispatch order is model_to_json's as it was when it walked the schema per value.
    if isinstance(node, Sequence):
        fields = tuple(
            (sc.name, node.attr(sc.name), json_writer(sc.subcon), isinstance(sc.subcon, OptionalField))
            for sc in node.components
        )

        def sequence(obj: Any) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for name, attr, write, optional in fields:
                value = getattr(obj, attr)
                if value is None and optional:
                    continue
                out[name] = write(value)
            return out

        return sequence
    if isinstance(node, OptionalField | DefaultField | Containing):
        return json_writer(node.subcon)
    if isinstance(node, Enumerated):
        return _name
    if isinstance(node, OctetString):
        return _hex
    if isinstance(node, Integer):
        return int
    if node is Boolean:
        return bool
    return _same


def json_to_model(node: Construct, value: Any, path: str = "") -> Any:
    """The model value of a JSON value (the inverse of :func:`model_to_json`).

    Types and shapes are checked here; ranges and alphabets are the encoder's business.

    Raises:
        SchemaValueError: the JSON does not have the shape of the schema.
    """
    if isinstance(node, Sequence):
        if not isinstance(value, dict):
            raise SchemaValueError("expected an object", path)
        names = {sc.name for sc in node.components}
        # Computed attributes ("decoded") may appear in JSON we produced; they are derived again.
        unknown = sorted(map(str, set(value) - names - set(node.computed)))
        if unknown:
            raise SchemaValueError(f"unknown keys {unknown}", path)
        kwargs: dict[str, Any] = {}
        raw: dict[str, Any] = {}
        for sc in node.components:
            sub = _join(path, sc.name)
            item = value.get(sc.name, _MISSING)
            if item is _MISSING:
                if isinstance(sc.subcon, OptionalField):
                    item = None
                elif isinstance(sc.subcon, DefaultField):
                    item = sc.subcon.default_value
                else:
                    raise SchemaValueError("missing mandatory component", sub)
                raw[sc.name] = item
            else:
                raw[sc.name] = item = json_to_model(sc.subcon, item, sub)
            kwargs[node.attr(sc.name)] = item
        kwargs.update(node.constants)
        for attr, (fn, args) in node.computed.items():
            kwargs[attr] = fn(*(raw[a] for a in args))
        return node.model(**kwargs)
    if isinstance(node, OptionalField):
        return None if value is None else json_to_model(node.subcon, value, path)
    if isinstance(node, DefaultField):
        return json_to_model(node.subcon, value, path)
    if isinstance(node, Containing):
        return json_to_model(node.subcon, value, path)
    if isinstance(node, Enumerated):
        for member in node.members:
            if member.name == value:
                return member
        raise SchemaValueError(f"{value!r} is not an identifier of this enumeration", path)
    if isinstance(node, OctetString):
        if not isinstance(value, str):
            raise SchemaValueError("expected a hex string", path)
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise SchemaValueError(f"{value!r} is not a hex string", path) from None
    if isinstance(node, Integer):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaValueError(f"expected an integer, got {value!r}", path)
        return value
    if node is Boolean:
        if not isinstance(value, bool):
            raise SchemaValueError(f"expected a boolean, got {value!r}", path)
        return value
    if isinstance(node, VinCharacters | RelativeOid):
        if not isinstance(value, str):
            raise SchemaValueError(f"expected a string, got {value!r}", path)
        return value
    raise SchemaValueError(f"unsupported schema node {node!r}", path)


def parse_bits(node: Construct, data: bytes) -> tuple[Any, int]:
    """Interpreted parse of ``node`` at the start of ``data``.

    Returns:
        The construct value and the number of bits the encoding used.

    Raises:
        UperError: with the construct path and the bit offset of the failing element.
    """
    stream = io.BytesIO(bytes2bits(data))
    try:
        value = node.parse_stream(stream)
    except UperError:
        raise
    except ConstructError as exc:  # a construct error outside any Sequence: still ours to pin
        raise UperError(str(exc).splitlines()[-1], getattr(exc, "path", "") or "", stream.tell()) from exc
    return value, stream.tell()


def build_bits(node: Construct, value: Any, *, all_defaults: bool = False) -> bytes:
    """Interpreted build of ``node``, padded with 0 bits to whole octets (X.691 10.1.3).

    With ``all_defaults`` every DEFAULT component is sent, presence bit set, even when it equals
    its default: legal BASIC-PER, but not canonical.
    """
    stream = io.BytesIO()
    node.build_stream(value, stream, all_defaults=all_defaults)
    bits = stream.getvalue()
    out: bytes = bits2bytes(bits + b"\x00" * (-len(bits) % 8))
    return out


def dotted_path(construct_path: str) -> str:
    """``"(parsing) -> msd -> msdStructure"`` → ``"msd.msdStructure"``."""
    parts = [p.strip().removesuffix("__present") for p in construct_path.split("->")]
    # "_extension" is the preamble of the enclosing type: the reason already names it.
    return ".".join(p for p in parts if p and not p.startswith(("(", "_")))
