"""Shift-and-mask decoders and encoders generated from the construct schema tree at import time.

construct parses bit-level schemas one bit-byte at a time, which is far too slow for a gateway
(and ``.compile()`` does not help BitStruct). The schema is still the single source of truth:
this module walks the same tree (:mod:`ecallgw.codecs._uper` nodes), writes straight-line Python
for it, and ``exec``s that once (the source is kept on ``decode_source`` / ``encode_source``).

Decoding reads the whole PDU as one integer ``n``; ``s`` counts the bits from the current
position to its end. Consecutive fixed fields are cut from one small "window" integer, so the big
integer is shifted once per window; all extension bits of a window are tested with one mask; runs
of OPTIONAL/DEFAULT BOOLEANs decode with one table lookup keyed by their presence and value bits.
Encoding shifts each field into one accumulator, the boolean runs again by table. Components whose
value space is small (ControlType, VehiclePropulsionStorageType) are interned, since they are
immutable.

Frozen model objects are built without their ``__init__`` by ``_gen_new``: a mutable *twin* class
with the same slots is filled and its ``__class__`` then assigned (``_twin``). This is the only
place in ecallgw that uses the technique. It stays because the codec's bar needs it: it saves about
0.8 µs per v2 MSD decode, and v2 decode is 7.7x asn1tools with it, 6.6x without (bar: >= 7x;
measured side by side). Elsewhere, triage included, frozen objects are built with their
constructors (issue 15). Figures and method: docs/performance.md "MSD codec".

The generated code is allowed to give up, never to be wrong: on anything unusual (a truncated
input, an extension bit, an index out of range, a fragmented length, a value of the wrong type)
it raises internally and the caller falls back to the interpreted construct parse or build, which
decides and produces the precise error. Tests compare both paths on every generated value.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable
from typing import Any

from construct import Construct

from ecallgw.codecs._uper import (
    VIN_ALPHABET,
    Boolean,
    Containing,
    DefaultField,
    Enumerated,
    ExtensionBit,
    Integer,
    OctetString,
    OptionalField,
    PresenceBit,
    RelativeOid,
    Sequence,
    VinCharacters,
    model_defaults,
    oid_from_octets,
    oid_to_octets,
)

__all__ = ["FRAME_OCTETS", "GIVE_UP_DECODE", "FastCodec", "FastSequence"]

FRAME_OCTETS = 140
"""Size of the in-band modem MSD frame; only such a frame may carry zero octets after the MSD."""

_TOKEN = re.compile(r"<r\d+>")
_INTERN_LIMIT = 4096  # largest value space of a component interned after its first decode

# VIN characters two at a time: 12 bits -> 2 characters (None where an index is >= 33, so the
# string concatenation fails and the interpreted parse reports the bad character).
_VIN_PAIRS: tuple[str | None, ...] = tuple(
    VIN_ALPHABET[i >> 6] + VIN_ALPHABET[i & 63] if i >> 6 < 33 and i & 63 < 33 else None for i in range(4096)
)
_VIN_SINGLE = tuple(VIN_ALPHABET)  # indexing past 32 raises IndexError
_VIN_OCTAL = str.maketrans({c: f"{i:02o}" for i, c in enumerate(VIN_ALPHABET)})


class _GiveUp(Exception):  # noqa: N818 - internal signal, never leaves this module
    """The generated code cannot handle this input; the interpreted path decides."""


_GIVE_UP_DECODE = (_GiveUp, ValueError, IndexError, TypeError, OverflowError, KeyError)
GIVE_UP_DECODE = _GIVE_UP_DECODE
"""What a generated decoder raises when it leaves the input to the interpreted parse."""
_GIVE_UP_ENCODE = (_GiveUp, ValueError, IndexError, TypeError, OverflowError, KeyError, AttributeError)


_ARC = tuple(str(i) for i in range(128))


_OID_CACHE: dict[bytes, str] = {}
_OID_CACHE_SIZE = 256  # OIDs are few in practice; the cache stops growing, it never evicts


def _oid_or_give_up(octets: bytes) -> str:
    oid = _OID_CACHE.get(octets)
    if oid is not None:
        return oid
    if octets and octets.isascii():  # every arc below 128: one octet each (1.4.2, 8.1, ...)
        oid = ".".join([_ARC[b] for b in octets])
    else:
        oid = oid_from_octets(octets)
        if oid is None:
            raise _GiveUp
    if len(_OID_CACHE) < _OID_CACHE_SIZE:
        _OID_CACHE[octets] = oid
    return oid


def _octets_or_give_up(oid: str) -> bytes:
    octets = oid_to_octets(oid)
    if octets is None:
        raise _GiveUp
    return octets


def _domain(node: Construct) -> int | None:
    """Number of possible values of a component, when it is small and enumerable."""
    if node is Boolean:
        return 2
    if isinstance(node, Enumerated):
        return len(node.members)
    if isinstance(node, DefaultField):
        return _domain(node.subcon)
    return None


class _Source:
    """Accumulates generated lines and the constants they refer to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {
            "_GiveUp": _GiveUp,
            "_new": object.__new__,
            "_from_bytes": int.from_bytes,
            "_VIN_PAIRS": _VIN_PAIRS,
            "_VIN_SINGLE": _VIN_SINGLE,
            "_VIN_OCTAL": _VIN_OCTAL,
            "_oid_or_give_up": _oid_or_give_up,
            "_octets_or_give_up": _octets_or_give_up,
            "_POPCOUNT": _POPCOUNT,
            "_LOW_MASK": _LOW_MASK,
        }
        self._names: dict[int, str] = {}
        self._count = 0
        self.window: _Window | None = None
        self.resolved: dict[str, str] = {}  # read tokens of closed windows -> expressions

    def resolve(self, line: str) -> str:
        """Replace the read tokens of closed windows in ``line``."""
        return _TOKEN.sub(lambda m: self.resolved.get(m.group(0), m.group(0)), line)

    def var(self, prefix: str = "v") -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def const(self, value: Any, prefix: str = "c") -> str:
        key = id(value)
        if key not in self._names:
            name = self.var(f"_{prefix}")
            self._names[key] = name
            self.namespace[name] = value
        return self._names[key]

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + (self.resolve(line) if "<r" in line else line))

    def compile(self, name: str) -> Callable[..., Any]:
        code = "\n".join(self.lines)
        exec(compile(code, f"<ecallgw fast path: {name}>", "exec"), self.namespace)
        fn: Callable[..., Any] = self.namespace[name]
        fn.__source__ = code  # type: ignore[attr-defined]  # for debugging and the docs
        return fn


# --- Decoder generation -------------------------------------------------------------------------
#
# Invariant of the generated decoder: ``s`` is the number of input bits from the last
# synchronisation point to the end; ``k`` (known at generation time) is how many bits have been
# consumed since. Consecutive fixed fields are cut from one "window" ``w = (n >> (s - end)) & mask``
# (a small integer, cheap to shift), so the big integer is shifted once per window, not per field.
# Reading past the end makes a shift count negative, which raises ValueError: the input is
# truncated, and the interpreted parse decides.

_WINDOW_BITS = 62


class _Window:
    """A run of fixed-position reads served by one shift of the big integer."""

    def __init__(self, name: str, k0: int, line: int, indent: int) -> None:
        self.name = name
        self.k0 = k0
        self.end = k0
        self.line = line
        self.indent = indent
        self.reads: list[tuple[str, int, int, str]] = []  # (token, end bit, width, kind)
        self.extension_bits: list[int] = []  # end bits of extension bits that must be 0


def _read(src: _Source, indent: int, k: int, width: int, kind: str = "int") -> str:
    """A token standing for the ``width`` bits at static offset ``k``.

    ``kind`` is "int" (the unsigned value), "bool" (a bool of one bit), "flag" (a truthy int of one
    bit). The token becomes an expression when the window closes and its extent is known.
    """
    win = src.window
    if win is not None and (k + width - win.k0 > _WINDOW_BITS or win.indent > indent or k < win.k0):
        _close(src)
        win = None
    if win is None:
        src.lines.append("")  # the window's own line, written when it closes
        win = src.window = _Window(src.var("w"), k, len(src.lines) - 1, indent)
    win.end = max(win.end, k + width)
    token = f"<{src.var('r')}>"
    win.reads.append((token, k + width, width, kind))
    return token


def _extension_bit(src: _Source, indent: int, k: int) -> None:
    """Require a 0 extension bit at ``k``; all of a window's are tested with one mask."""
    _read(src, indent, k, 1)
    assert src.window is not None
    src.window.extension_bits.append(k + 1)


def _close(src: _Source) -> None:
    win = src.window
    if win is None:
        return
    src.window = None
    # Tokens may be used after ``s`` has moved on (a value is built into its model object at the
    # end of its SEQUENCE), so every read goes through the window variable, fixed when it was cut.
    width = win.end - win.k0
    base = win.name
    for token, end, w, kind in win.reads:
        shift = win.end - end
        if kind == "int":
            expr = f"(({base} >> {shift}) & {(1 << w) - 1})" if shift else f"({base} & {(1 << w) - 1})"
        elif kind == "bool":
            expr = f"({base} & {1 << shift} != 0)"
        else:
            expr = f"({base} & {1 << shift})"
        src.resolved[token] = expr
    head = "    " * win.indent
    lines = [f"{head}{win.name} = (n >> (s - {win.end})) & {(1 << width) - 1}"]
    if win.extension_bits:
        mask = sum(1 << (win.end - e) for e in win.extension_bits)
        lines.append(f"{head}if {base} & {mask}: raise _GiveUp")
    src.lines[win.line : win.line + 1] = lines
    for i in range(win.line, len(src.lines)):
        if "<r" in src.lines[i]:
            src.lines[i] = src.resolve(src.lines[i])


def _sync(src: _Source, indent: int, k: int) -> int:
    _close(src)
    if k:
        src.emit(indent, f"s -= {k}")
    return 0


def _gen_decode(src: _Source, node: Construct, indent: int, k: int) -> tuple[str, int]:
    """Emit code that decodes ``node``; returns an expression for its value and the new k."""
    if isinstance(node, Sequence):
        return _gen_decode_sequence(src, node, indent, k)
    if node is Boolean:
        return _read(src, indent, k, 1, "bool"), k + 1
    out = src.var()
    if isinstance(node, Integer):
        lb = f" + {node.lb}" if node.lb > 0 else f" - {-node.lb}" if node.lb < 0 else ""
        if node.ub - node.lb + 1 == 1 << node.width and not lb:
            return _read(src, indent, k, node.width), k + node.width
        src.emit(indent, f"{out} = {_read(src, indent, k, node.width)}{lb}")
        if node.ub - node.lb + 1 != 1 << node.width:
            src.emit(indent, f"if {out} > {node.ub}: raise _GiveUp")
        return out, k + node.width
    if isinstance(node, Enumerated):
        # The extension bit is the top bit of the read: when set, the index is past the table.
        width = node.width + int(node.extensible)
        src.emit(indent, f"{out} = {src.const(node.members, 'enum')}[{_read(src, indent, k, width)}]")
        return out, k + width
    if isinstance(node, VinCharacters):
        x = src.var("x")
        src.emit(indent, f"{x} = {_read(src, indent, k, 6 * node.size)}")
        pieces = [
            f"_VIN_PAIRS[({x} >> {6 * (node.size - i - 2)}) & 4095]" for i in range(0, node.size - 1, 2)
        ]
        if node.size % 2:
            pieces.append(f"_VIN_SINGLE[{x} & 63]")
        if len(pieces) == 1:
            pieces.append('""')  # a lone pair must still fail on None
        src.emit(indent, f"{out} = {' + '.join(pieces)}")
        return out, k + 6 * node.size
    if isinstance(node, OctetString | RelativeOid):
        length = src.var("n")
        src.emit(indent, f"{length} = {_read(src, indent, k, 8)}")
        _sync(src, indent, k + 8)
        # Length determinant, X.691 11.9.3.6-7: 0xxxxxxx, or 10xxxxxx xxxxxxxx; fragments give up.
        src.emit(indent, f"if {length} > 127:")
        src.emit(indent + 1, f"if {length} > 191: raise _GiveUp")
        src.emit(indent + 1, f"{length} = (({length} & 63) << 8) | ((n >> (s - 8)) & 255)")
        src.emit(indent + 1, "s -= 8")
        octets = out if isinstance(node, OctetString) else src.var("o")
        mask = f"((1 << (8 * {length})) - 1)"
        src.emit(indent, f"{octets} = ((n >> (s - 8 * {length})) & {mask}).to_bytes({length})")
        src.emit(indent, f"s -= 8 * {length}")
        if isinstance(node, RelativeOid):
            src.emit(indent, f"{out} = _oid_or_give_up({octets})")
        return out, 0
    raise TypeError(f"no fast decoder for schema node {node!r}")


def _fixed_width(node: Construct) -> int | None:
    """Width in bits of a component whose encoding never varies in size, else None."""
    if node is Boolean:
        return 1
    if isinstance(node, Integer | VinCharacters):
        return int(node._sizeof(None, ""))
    if isinstance(node, Enumerated):
        return node.width + int(node.extensible)
    if isinstance(node, Sequence):
        total = 0
        for sc in node.subcons:
            if isinstance(sc.subcon, PresenceBit | OptionalField | DefaultField):
                return None
            width = 1 if isinstance(sc.subcon, ExtensionBit) else _fixed_width(sc.subcon)
            if width is None:
                return None
            total += width
        return total
    return None


def _gen_decode_sequence(src: _Source, node: Sequence, indent: int, k: int) -> tuple[str, int]:
    width = _fixed_width(node)
    if width is not None and width <= 12 and not node.computed:
        # A small fixed-size type (ControlType: 8 bits): intern its value by its bits, so a repeat
        # costs one dict lookup and the components are decoded only the first time.
        out = src.var("o")
        table = src.const({}, "interned")
        key = src.var("key")
        src.emit(indent, f"{key} = {_read(src, indent, k, width)}")
        src.emit(indent, f"{out} = {table}.get({key})")
        src.emit(indent, f"if {out} is None:")
        value, k_end = _gen_decode_components(src, node, indent + 1, k)
        src.emit(indent + 1, f"{out} = {table}[{key}] = {value}")
        if src.window is not None and src.window.indent > indent:
            _close(src)
        return out, k_end
    return _gen_decode_components(src, node, indent, k)


_GROUP_MAX = 7  # booleans per table lookup: at most 3**7 = 2187 entries per table
_POPCOUNT = tuple(bin(i).count("1") for i in range(1 << _GROUP_MAX))
_LOW_MASK = tuple((1 << i) - 1 for i in range(_GROUP_MAX + 1))
_GROUP_TABLES: dict[tuple[Any, ...], dict[int, tuple[Any, ...]]] = {}


def _boolean_groups(node: Sequence) -> list[list[Any]]:
    """Runs of OPTIONAL/DEFAULT BOOLEAN components whose presence bits are adjacent, by 7 at most.

    VehiclePropulsionStorageType (7 BOOLEAN DEFAULT FALSE) and ERA-GLONASS DiagnosticResult and
    CrashInfo (21 and 8 BOOLEAN OPTIONAL) are such runs: their present values follow as one bit
    each, so a group decodes with one table lookup keyed by presence bits and value bits.
    """
    presence_index = {
        sc.subcon.of: i for i, sc in enumerate(node.subcons) if isinstance(sc.subcon, PresenceBit)
    }
    groups: list[list[Any]] = []
    run: list[Any] = []
    for i, sc in enumerate(node.subcons):
        sub = sc.subcon
        is_boolean = isinstance(sub, OptionalField | DefaultField) and sub.subcon is Boolean
        adjacent = bool(run) and presence_index.get(sc.name) == presence_index[run[-1].name] + 1
        adjacent = adjacent and node.subcons[i - 1] is run[-1]
        if is_boolean and (not run or (adjacent and len(run) < _GROUP_MAX)):
            run.append(sc)
            continue
        if run:
            groups.append(run)
        run = [sc] if is_boolean else []
    if run:
        groups.append(run)
    return groups


def _group_table(group: list[Any]) -> dict[int, tuple[Any, ...]]:
    """(presence bits << 7 | value bits) -> the group's values, for every valid combination."""
    absent = tuple(None if isinstance(sc.subcon, OptionalField) else sc.subcon.default_value for sc in group)
    key = (len(group), absent)
    if key not in _GROUP_TABLES:
        table: dict[int, tuple[Any, ...]] = {}
        size = len(group)
        for presence in range(1 << size):
            count = _POPCOUNT[presence]
            for bits in range(1 << count):
                values: list[Any] = []
                j = 0
                for i in range(size):
                    if presence >> (size - 1 - i) & 1:
                        values.append(bool(bits >> (count - 1 - j) & 1))
                        j += 1
                    else:
                        values.append(absent[i])
                table[presence << _GROUP_MAX | bits] = tuple(values)
        _GROUP_TABLES[key] = table
    return _GROUP_TABLES[key]


def _gen_decode_components(src: _Source, node: Sequence, indent: int, k: int) -> tuple[str, int]:
    values: dict[str, str] = {}
    groups = _boolean_groups(node)
    first_flag = {f"{g[0].name}__present": g for g in groups}
    grouped_flags = {f"{sc.name}__present" for g in groups for sc in g}
    first_field = {g[0].name: g for g in groups}
    grouped_fields = {sc.name for g in groups for sc in g}
    group_presence: dict[int, str] = {}
    group_keys: list[str] = []
    deferred = ""
    for sc in node.subcons:
        sub = sc.subcon
        if isinstance(sub, ExtensionBit):
            _extension_bit(src, indent, k)
            k += 1
        elif isinstance(sub, PresenceBit):
            if sc.name in first_flag:
                group = first_flag[sc.name]
                group_presence[id(group)] = _read(src, indent, k, len(group))
            if sc.name not in grouped_flags:
                values[sc.name] = _read(src, indent, k, 1, "flag")
            k += 1
        elif sc.name in first_field:
            group = first_field[sc.name]
            k = _sync(src, indent, k)
            presence, count, bits, key = src.var("p"), src.var("c"), src.var("b"), src.var("g")
            src.emit(indent, f"{presence} = {group_presence[id(group)]}")
            src.emit(indent, f"{count} = _POPCOUNT[{presence}]")
            src.emit(indent, f"{bits} = (n >> (s - {count})) & _LOW_MASK[{count}]")
            src.emit(indent, f"s -= {count}")
            src.emit(indent, f"{key} = {presence} << {_GROUP_MAX} | {bits}")
            names = [src.var() for _ in group]
            for member, name in zip(group, names, strict=True):
                values[member.name] = name
            table = src.const(_group_table(group), "group")
            unpack = f"{', '.join(names)}, = {table}[{key}]"
            if len(groups) == 1 and len(node.components) == len(group) and not node.computed:
                deferred = unpack  # the values are needed only when the interned object is missing
            else:
                src.emit(indent, unpack)
            group_keys.append(key)
        elif sc.name in grouped_fields:
            continue
        elif isinstance(sub, OptionalField | DefaultField):
            k = _sync(src, indent, k)
            values[sc.name] = out = src.var()
            src.emit(indent, f"if {values[sub.flag]}:")
            inner, k_inner = _gen_decode(src, sub.subcon, indent + 1, 0)
            _sync(src, indent + 1, k_inner)
            src.emit(indent + 1, f"{out} = {inner}")
            src.emit(indent, "else:")
            absent = None if isinstance(sub, OptionalField) else sub.default_value
            src.emit(indent + 1, f"{out} = {src.const(absent, 'dflt')}")
        else:
            values[sc.name], k = _gen_decode(src, sub, indent, k)
    # A SEQUENCE that is one group (VehiclePropulsionStorageType) is interned by the group's key.
    whole = len(groups) == 1 and len(node.components) == len(groups[0]) and not node.computed
    if not whole:
        return _gen_build_model(src, node, values, indent), k
    return _gen_build_model(src, node, values, indent, intern_key=group_keys[0], prelude=deferred), k


def _gen_build_model(
    src: _Source,
    node: Sequence,
    values: dict[str, str],
    indent: int,
    intern_key: str | None = None,
    prelude: str = "",
) -> str:
    cls = node.model
    assigned: dict[str, str] = {node.attr(sc.name): values[sc.name] for sc in node.components}
    for attr, value in node.constants.items():
        assigned[attr] = src.const(value, "k")
    for attr, (fn, args) in node.computed.items():
        assigned[attr] = f"{src.const(fn, 'fn')}({', '.join(values[a] for a in args)})"
    for attr, value in model_defaults(cls).items():
        assigned.setdefault(attr, src.const(value, "dflt"))
    missing = {f.name for f in dataclasses.fields(cls)} - set(assigned)
    if missing:
        raise TypeError(f"{cls.__name__}: no value for {sorted(missing)} in the schema")
    out = src.var("o")
    domains = [_domain(sc.subcon) for sc in node.components]
    intern = (
        not node.computed
        and all(d is not None for d in domains)
        and _product([d for d in domains if d is not None]) <= _INTERN_LIMIT
        and _fixed_width(node) is None  # fixed-size ones are interned by their bits instead
    )
    body_indent = indent
    if intern:
        # A small value space of varying encodings (VehiclePropulsionStorageType): intern by value.
        key = src.var("key")
        table = src.const({}, "interned")
        if intern_key is not None:
            key = intern_key
        else:
            src.emit(indent, f"{key} = ({', '.join(values[sc.name] for sc in node.components)},)")
        src.emit(indent, f"{out} = {table}.get({key})")
        src.emit(indent, f"if {out} is None:")
        body_indent = indent + 1
    if prelude:
        src.emit(body_indent, prelude)
    _gen_new(src, cls, assigned, out, body_indent)
    if intern:
        src.emit(body_indent, f"{table}[{key}] = {out}")
    return out


def _gen_new(src: _Source, cls: type, assigned: dict[str, str], out: str, indent: int) -> None:
    """Emit the creation of a frozen slotted model object without its ``__init__``."""
    twin = _twin(cls)
    if twin is None:
        src.emit(indent, f"{out} = _new({src.const(cls, cls.__name__)})")
        for attr, expr in assigned.items():
            src.emit(indent, f"{src.const(getattr(cls, attr).__set__, f'set_{attr}')}({out}, {expr})")
        return
    src.emit(indent, f"{out} = _new({src.const(twin, twin.__name__)})")
    for attr, expr in assigned.items():
        src.emit(indent, f"{out}.{attr} = {expr}")
    src.emit(indent, f"{out}.__class__ = {src.const(cls, cls.__name__)}")


_TWINS: dict[type, type | None] = {}


def _twin(cls: type) -> type | None:
    """A mutable class with the same slots as frozen ``cls``, or None where that does not work.

    The twin technique (the module docstring says why it is used here and nowhere else): filling a
    mutable twin with plain attribute stores and then assigning ``__class__`` (allowed between
    classes with identical slot layouts) is about 2.5x faster than calling each slot descriptor's
    ``__set__``. Checked once per class; a class with ``__post_init__`` (code the twin would skip)
    or one the interpreter refuses gets None, and the generated code calls the setters instead.
    """
    if cls not in _TWINS and hasattr(cls, "__post_init__"):
        _TWINS[cls] = None
    if cls not in _TWINS:
        slots = tuple(cls.__dict__.get("__slots__", ()))
        twin: type | None = type(f"_Mutable{cls.__name__}", (object,), {"__slots__": slots})
        try:
            probe: Any = object.__new__(twin)  # type: ignore[arg-type]
            for i, name in enumerate(slots):
                setattr(probe, name, i)
            probe.__class__ = cls
            if not isinstance(probe, cls) or [getattr(probe, n) for n in slots] != list(range(len(slots))):
                twin = None
        except TypeError:
            twin = None
        _TWINS[cls] = twin
    return _TWINS[cls]


def _product(values: list[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


# --- Encoder generation -------------------------------------------------------------------------
#
# The generated encoder shifts each field into the accumulator ``a`` and counts the bits in ``b``
# (the part known at generation time is added at synchronisation points, like ``k`` above).


def _gen_encode(src: _Source, node: Construct, value: str, indent: int, kb: int) -> int:
    """Emit code that appends the encoding of ``value`` (an expression) to ``a``; returns kb."""
    if isinstance(node, Sequence):
        return _gen_encode_sequence(src, node, value, indent, kb)
    if node is Boolean:
        src.emit(indent, f"a = (a << 1) | (1 if {value} else 0)")
        return kb + 1
    if isinstance(node, Integer):
        x = src.var("x")
        src.emit(indent, f"{x} = {value} - {node.lb}" if node.lb else f"{x} = {value}")
        check = f"{x} >> {node.width}"
        if node.ub - node.lb + 1 != 1 << node.width:
            check += f" or {x} > {node.ub - node.lb}"
        src.emit(indent, f"if {check}: raise _GiveUp")
        src.emit(indent, f"a = (a << {node.width}) | {x}")
        return kb + node.width
    if isinstance(node, Enumerated):
        width = node.width + int(node.extensible)
        src.emit(indent, f"a = (a << {width}) | {src.const(node.index, 'index')}[{value}]")
        return kb + width
    if isinstance(node, VinCharacters):
        # Each permitted character becomes its 6-bit index as two octal digits, so int(..., 8)
        # packs the string in one call. A character outside the alphabet stays one character:
        # the length check catches it (and int() would otherwise accept "_" or spaces).
        x = src.var("x")
        src.emit(indent, f"{x} = {value}.translate(_VIN_OCTAL)")
        src.emit(indent, f"if len({x}) != {2 * node.size} or len({value}) != {node.size}: raise _GiveUp")
        src.emit(indent, f"a = (a << {6 * node.size}) | int({x}, 8)")
        return kb + 6 * node.size
    if isinstance(node, OctetString | RelativeOid):
        octets = src.var("o")
        if isinstance(node, RelativeOid):
            src.emit(indent, f"{octets} = _octets_or_give_up({value})")
        else:
            src.emit(indent, f"{octets} = {value}")
            src.emit(indent, f"if {octets}.__class__ is not bytes: raise _GiveUp")
        length = src.var("n")
        src.emit(indent, f"{length} = len({octets})")
        src.emit(indent, f"if {length} < 128:")
        src.emit(indent + 1, f"a = (((a << 8) | {length}) << (8 * {length})) | _from_bytes({octets})")
        src.emit(indent + 1, f"b += {kb + 8} + 8 * {length}")
        src.emit(indent, f"elif {length} < 16384:")
        src.emit(indent + 1, f"a = (((a << 16) | 0x8000 | {length}) << (8 * {length}))")
        src.emit(indent + 1, f"a |= _from_bytes({octets})")
        src.emit(indent + 1, f"b += {kb + 16} + 8 * {length}")
        src.emit(indent, "else:")
        src.emit(indent + 1, "raise _GiveUp")
        return 0
    raise TypeError(f"no fast encoder for schema node {node!r}")


_ENCODE_TABLES: dict[tuple[Any, ...], dict[tuple[Any, ...], tuple[int, int, int]]] = {}


def _group_encode_table(group: list[Any]) -> dict[tuple[Any, ...], tuple[int, int, int]]:
    """Values of a boolean group -> (presence bits, number of value bits, value bits)."""
    kinds = tuple(
        (isinstance(sc.subcon, DefaultField), getattr(sc.subcon, "default_value", None)) for sc in group
    )
    if kinds not in _ENCODE_TABLES:
        choices = [(False, True) if is_default else (None, False, True) for is_default, _ in kinds]
        table: dict[tuple[Any, ...], tuple[int, int, int]] = {}
        for combo in itertools.product(*choices):
            presence = count = bits = 0
            for value, (is_default, dflt) in zip(combo, kinds, strict=True):
                present = value != dflt if is_default else value is not None
                presence = presence << 1 | present
                if present:
                    bits = bits << 1 | bool(value)
                    count += 1
            table[combo] = (presence, count, bits)
        _ENCODE_TABLES[kinds] = table
    return _ENCODE_TABLES[kinds]


def _gen_encode_sequence(src: _Source, node: Sequence, value: str, indent: int, kb: int) -> int:
    obj = src.var("o")
    src.emit(indent, f"{obj} = {value}")
    values: dict[str, str] = {}
    covered = set(node.constants) | set(node.computed)
    for sc in node.components:
        attr = node.attr(sc.name)
        covered.add(attr)
        values[sc.name] = v = src.var()
        src.emit(indent, f"{v} = {obj}.{attr}")
    for attr, dflt in model_defaults(node.model).items():
        if attr not in covered:  # a model attribute this version cannot carry must stay at its default
            src.emit(indent, f"if {obj}.{attr} != {src.const(dflt, 'dflt')}: raise _GiveUp")
    # Runs of OPTIONAL/DEFAULT BOOLEANs (see _boolean_groups) are encoded by one table lookup:
    # their presence bits in the preamble, their value bits where the first of them stands.
    groups = _boolean_groups(node)
    first_flag: dict[str, tuple[str, int]] = {}
    first_field: dict[str, tuple[str, str]] = {}
    grouped: set[str] = set()
    for group in groups:
        presence, count, bits = src.var("p"), src.var("c"), src.var("b")
        table = src.const(_group_encode_table(group), "group")
        key = ", ".join(values[sc.name] for sc in group)
        src.emit(indent, f"{presence}, {count}, {bits} = {table}[({key},)]")
        first_flag[f"{group[0].name}__present"] = (presence, len(group))
        first_field[group[0].name] = (count, bits)
        grouped.update(sc.name for sc in group)
        grouped.update(f"{sc.name}__present" for sc in group)
    for sc in node.subcons:
        sub = sc.subcon
        if isinstance(sub, ExtensionBit):
            src.emit(indent, "a <<= 1")
            kb += 1
        elif sc.name in first_flag:
            presence, size = first_flag[sc.name]
            src.emit(indent, f"a = (a << {size}) | {presence}")
            kb += size
        elif sc.name in first_field:
            count, bits = first_field[sc.name]
            src.emit(indent, f"a = (a << {count}) | {bits}")
            src.emit(indent, f"b += {count}")
        elif sc.name in grouped:
            continue
        elif isinstance(sub, PresenceBit):
            test = (
                f"{values[sub.of]} != {src.const(sub.default_value, 'dflt')}"
                if sub.has_default
                else f"{values[sub.of]} is not None"
            )
            src.emit(indent, f"a = (a << 1) | ({test})")
            kb += 1
        elif isinstance(sub, OptionalField | DefaultField):
            if kb:
                src.emit(indent, f"b += {kb}")
                kb = 0
            test = (
                f"{values[sc.name]} is not None"
                if isinstance(sub, OptionalField)
                else f"{values[sc.name]} != {src.const(sub.default_value, 'dflt')}"
            )
            src.emit(indent, f"if {test}:")
            inner = _gen_encode(src, sub.subcon, values[sc.name], indent + 1, 0)
            src.emit(indent + 1, f"b += {inner}" if inner else "pass")
        else:
            kb = _gen_encode(src, sub, values[sc.name], indent, kb)
    return kb


class FastSequence:
    """A generated decoder and encoder for one SEQUENCE schema (a complete UPER encoding).

    Attributes:
        schema: the schema it was generated from.
        decode_source: the generated decoder's Python source.
        encode_source: the generated encoder's Python source.
    """

    def __init__(self, schema: Sequence, name: str) -> None:
        self.schema = schema
        src = _Source()
        src.emit(0, f"def decode_{name}(n, s):")
        value, k = _gen_decode(src, schema, 1, 0)
        _close(src)
        src.emit(1, f"return {value}, s - {k}")
        self._decode: Callable[[int, int], tuple[Any, int]] = src.compile(f"decode_{name}")
        self.decode_source: str = "\n".join(src.lines)

        src = _Source()
        src.emit(0, f"def encode_{name}(value):")
        src.emit(1, "a = 0")
        src.emit(1, "b = 0")
        kb = _gen_encode(src, schema, "value", 1, 0)
        src.emit(1, f"return a, b + {kb}")
        self._encode: Callable[[Any], tuple[int, int]] = src.compile(f"encode_{name}")
        self.encode_source: str = "\n".join(src.lines)

    def decode(self, data: bytes) -> Any | None:
        """Decode one complete encoding (padding bits ignored, no octet left over), or None."""
        try:
            value, left = self._decode(int.from_bytes(data), 8 * len(data))
        except _GIVE_UP_DECODE:
            return None
        return value if left < 8 else None

    def encode(self, value: Any) -> bytes | None:
        """The complete encoding of ``value`` padded to octets, or None."""
        try:
            acc, bits = self._encode(value)
        except _GIVE_UP_ENCODE:
            return None
        pad = -bits % 8
        return (acc << pad).to_bytes((bits + pad) // 8)


class FastCodec:
    """Generated codec for one ECallMessage schema: version octet, then MSDMessage direct or wrapped.

    The framing (docs/msd.md §2: the version octet, the v2/v3 length determinant, the zero fill
    of a 140-octet frame) is written here once; the MSDMessage code is generated from the
    schema's ``msd`` component and inlined, so one call decodes a whole MSD.

    Attributes:
        decode_source: the generated decoder's Python source.
        encode_source: the generated encoder's Python source.
    """

    def __init__(self, schema: Sequence, model: type, name: str) -> None:
        version_sc, msd_sc = schema.subcons
        if not (isinstance(version_sc.subcon, Integer) and version_sc.subcon.width == 8):
            raise TypeError("ECallMessage must start with an INTEGER (0..255)")
        if {f.name for f in dataclasses.fields(model)} != {"version", "msd", "raw"}:
            raise TypeError(f"{model.__name__} must have exactly version, msd and raw")
        self.wrapped = isinstance(msd_sc.subcon, Containing)
        message = msd_sc.subcon.subcon if self.wrapped else msd_sc.subcon

        src = _Source()
        src.emit(0, f"def decode_{name}(data):")
        src.emit(1, "size = len(data)")
        if self.wrapped:
            src.emit(1, "length = data[1]")
            src.emit(1, "end = 2")
            src.emit(1, "if length > 127:")  # X.691 11.9.3.7: 10xxxxxx xxxxxxxx
            src.emit(2, "if length > 191: raise _GiveUp")
            src.emit(2, "length = ((length & 63) << 8) | data[2]")
            src.emit(2, "end = 3")
            src.emit(1, "end += length")
            src.emit(1, "if end > size: raise _GiveUp")
            src.emit(1, "n = _from_bytes(data[end - length:end])")
            src.emit(1, "s = 8 * length")
        else:
            src.emit(1, "n = _from_bytes(data)")
            src.emit(1, "s = 8 * size - 8")
        value, k = _gen_decode(src, message, 1, 0)
        _close(src)
        if k:
            src.emit(1, f"s -= {k}")
        if self.wrapped:
            src.emit(1, "if s > 7: raise _GiveUp")  # whole octets of the container unused
        else:
            src.emit(1, "end = size - (s >> 3)")
        src.emit(1, f"if end < size and (size != {FRAME_OCTETS} or data.count(0, end) != size - end):")
        src.emit(2, "raise _GiveUp")
        _gen_new(src, model, {"version": "data[0]", "msd": value, "raw": "data"}, "out", 1)
        src.emit(1, "return out")
        self._decode: Callable[[bytes], Any] = src.compile(f"decode_{name}")
        self.decode_source: str = "\n".join(src.lines)

        self.message = FastSequence(message, name)
        self.encode_source = self.message.encode_source

    def decode(self, data: bytes) -> Any | None:
        """The model value of ``data`` (an ECallMessage of this version), or None to defer."""
        try:
            return self._decode(data)
        except _GIVE_UP_DECODE:
            return None

    @property
    def decode_or_raise(self) -> Callable[[bytes], Any]:
        """The generated decoder itself: raises one of GIVE_UP_DECODE to defer (saves a call)."""
        return self._decode

    def encode(self, msd: Any) -> bytes | None:
        """The canonical encoding of ``msd`` (its version must be this codec's), or None to defer."""
        try:
            acc, bits = self.message._encode(msd.msd)
        except _GIVE_UP_ENCODE:
            return None
        pad = -bits % 8
        inner = (acc << pad).to_bytes((bits + pad) // 8)
        if not self.wrapped:
            # v1: the version octet and MSDMessage share one bit string; the octet goes in front.
            return bytes((msd.version,)) + inner
        length = len(inner)
        if length < 128:
            return bytes((msd.version, length)) + inner
        if length < 0x4000:
            return bytes((msd.version, 0x80 | (length >> 8), length & 0xFF)) + inner
        return None
