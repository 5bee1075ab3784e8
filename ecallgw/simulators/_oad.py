"""UPER bytes of the two optional-additional-data schemes the simulated units send.

The simulator builds MSD values before the codec sees them, and ``AdditionalData.data`` must hold
the scheme's UPER encoding. The bit plans are those of docs/msd.md §6.1 (ERA-GLONASS, GOST 33464)
and §6.2 (Euro NCAP TB 040); tests check them against the codec's decoder.
"""

from __future__ import annotations

from dataclasses import fields

from ecallgw.model import CoordinateSystemType, CrashInfo, DiagnosticResult, EraAdditionalData, IncInfo

__all__ = ["encode_era", "encode_incinfo"]


class _Bits:
    def __init__(self) -> None:
        self._value = 0
        self._width = 0

    def put(self, value: int, width: int) -> None:
        if not 0 <= value < (1 << width):
            raise ValueError(f"{value} does not fit in {width} bits")
        self._value = (self._value << width) | value
        self._width += width

    def to_bytes(self) -> bytes:
        pad = -self._width % 8
        return (self._value << pad).to_bytes((self._width + pad) // 8, "big")


def _optional_flags(bits: _Bits, value: DiagnosticResult | CrashInfo) -> None:
    flags: list[bool | None] = [getattr(value, f.name) for f in fields(value)]
    for flag in flags:
        bits.put(flag is not None, 1)
    for flag in flags:
        if flag is not None:
            bits.put(int(flag), 1)


def encode_era(data: EraAdditionalData) -> bytes:
    """ERAAdditionalData (format 1 or 2) as canonical UPER; a wgs84 coordinate system is the default
    and therefore omitted."""
    bits = _Bits()
    bits.put(0, 1)  # extension bit
    coord = data.coordinate_system_type if data.format == 2 else None
    send_coord = coord is not None and coord != CoordinateSystemType.wgs84
    bits.put(data.crash_severity is not None, 1)
    bits.put(data.diagnostic_result is not None, 1)
    bits.put(data.crash_info is not None, 1)
    if data.format == 2:
        bits.put(send_coord, 1)
    if data.crash_severity is not None:
        bits.put(data.crash_severity, 11)
    if data.diagnostic_result is not None:
        _optional_flags(bits, data.diagnostic_result)
    if data.crash_info is not None:
        _optional_flags(bits, data.crash_info)
    if send_coord:
        bits.put(1, 1)  # pz90 (index 1)
    return bits.to_bytes()


def encode_incinfo(data: IncInfo) -> bytes:
    """Euro NCAP INCINFO as UPER."""
    bits = _Bits()
    bits.put(0, 1)  # extension bit
    bits.put(data.rollover_detected is not None, 1)
    bits.put(0, 1)  # IILocations extension bit
    bits.put(int(data.location_of_impact), 3)
    if data.rollover_detected is not None:
        bits.put(int(data.rollover_detected), 1)
    bits.put(0, 1)  # IIDeltaV extension bit
    bits.put(data.delta_v.range_limit - 100, 8)
    bits.put(data.delta_v.delta_vx + 255, 9)
    bits.put(data.delta_v.delta_vy + 255, 9)
    return bits.to_bytes()
