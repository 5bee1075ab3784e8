"""Valid ISO 3779 VINs with real manufacturer prefixes (WMI) of makes sold in Europe.

A VIN is 17 characters from 0-9 and A-Z without I, O and Q: WMI (3, the manufacturer), VDS (6, the
vehicle descriptor, whose last character is the check digit where one is used), model year (1) and
plant + serial number (7). EN 15722 carries exactly these four parts.

The check digit (position 9, weights 8-7-6-5-4-3-2-10-0-9-8-7-6-5-4-3-2, remainder 10 written "X")
is mandatory for North America (49 CFR 565) and China (GB 16735), optional in Europe; we compute it
for WMIs from those regions and leave a free character elsewhere, as European makers do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ALPHABET",
    "MODEL_YEAR_CODES",
    "WMIS",
    "Wmi",
    "check_digit",
    "is_valid_vin",
    "model_year_code",
    "random_vin",
    "uses_check_digit",
]

ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
"""The 33 characters ISO 3779 and EN 15722 allow (no I, O, Q)."""

# Position 10 (model year): the 30-year cycle of ISO 3779 / 49 CFR 565 without I, O, Q, U, Z, 0.
_YEAR_CYCLE = "ABCDEFGHJKLMNPRSTVWXY123456789"
MODEL_YEAR_CODES: dict[int, str] = {2010 + i: c for i, c in enumerate(_YEAR_CYCLE)}
"""Model year -> position-10 code for 2010..2039 (2018 = "J", 2024 = "R")."""

Segment = Literal["car", "van", "truck", "bus", "motorcycle"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Wmi:
    """One World Manufacturer Identifier and what it builds."""

    code: str
    make: str
    segments: tuple[Segment, ...]


# Real WMIs of makes sold in Europe, by segment (SAE J853 / ISO 3780 assignments as published by
# the makes; one code per make and segment is enough for a plausible fleet).
WMIS: tuple[Wmi, ...] = (
    Wmi(code="WVW", make="Volkswagen", segments=("car",)),
    Wmi(code="WV1", make="Volkswagen Commercial Vehicles", segments=("van",)),
    Wmi(code="WV2", make="Volkswagen Commercial Vehicles", segments=("van", "bus")),
    Wmi(code="WAU", make="Audi", segments=("car",)),
    Wmi(code="WBA", make="BMW", segments=("car",)),
    Wmi(code="WB1", make="BMW Motorrad", segments=("motorcycle",)),
    Wmi(code="WDD", make="Mercedes-Benz", segments=("car",)),
    Wmi(code="W1K", make="Mercedes-Benz", segments=("car",)),
    Wmi(code="WDB", make="Mercedes-Benz", segments=("van", "truck")),
    Wmi(code="WEB", make="EvoBus (Mercedes-Benz, Setra)", segments=("bus",)),
    Wmi(code="WP0", make="Porsche", segments=("car",)),
    Wmi(code="WF0", make="Ford Germany", segments=("car", "van")),
    Wmi(code="W0L", make="Opel", segments=("car", "van")),
    Wmi(code="WMA", make="MAN", segments=("truck", "bus")),
    Wmi(code="VF1", make="Renault", segments=("car", "van")),
    Wmi(code="VF3", make="Peugeot", segments=("car", "van")),
    Wmi(code="VF7", make="Citroën", segments=("car", "van")),
    Wmi(code="VF6", make="Renault Trucks", segments=("truck",)),
    Wmi(code="UU1", make="Dacia", segments=("car",)),
    Wmi(code="ZFA", make="Fiat", segments=("car", "van")),
    Wmi(code="ZAR", make="Alfa Romeo", segments=("car",)),
    Wmi(code="ZCF", make="Iveco", segments=("van", "truck", "bus")),
    Wmi(code="ZDM", make="Ducati", segments=("motorcycle",)),
    Wmi(code="ZAP", make="Piaggio", segments=("motorcycle",)),
    Wmi(code="TMB", make="Škoda", segments=("car",)),
    Wmi(code="VSS", make="SEAT / Cupra", segments=("car",)),
    Wmi(code="YV1", make="Volvo Cars", segments=("car",)),
    Wmi(code="YV2", make="Volvo Trucks", segments=("truck",)),
    Wmi(code="YS2", make="Scania", segments=("truck", "bus")),
    Wmi(code="XLR", make="DAF Trucks", segments=("truck",)),
    Wmi(code="SAL", make="Land Rover", segments=("car",)),
    Wmi(code="SAJ", make="Jaguar", segments=("car",)),
    Wmi(code="SMT", make="Triumph Motorcycles", segments=("motorcycle",)),
    Wmi(code="VBK", make="KTM", segments=("motorcycle",)),
    Wmi(code="TMA", make="Hyundai Motor Manufacturing Czech", segments=("car",)),
    Wmi(code="U5Y", make="Kia Slovakia", segments=("car",)),
    Wmi(code="VNK", make="Toyota France", segments=("car",)),
    Wmi(code="SB1", make="Toyota UK", segments=("car",)),
    Wmi(code="JTD", make="Toyota", segments=("car",)),
    Wmi(code="JMZ", make="Mazda", segments=("car",)),
    Wmi(code="JN1", make="Nissan", segments=("car",)),
    Wmi(code="JYA", make="Yamaha", segments=("motorcycle",)),
    Wmi(code="JH2", make="Honda Motorcycles", segments=("motorcycle",)),
    Wmi(code="KMH", make="Hyundai", segments=("car",)),
    Wmi(code="KNA", make="Kia", segments=("car",)),
    Wmi(code="XP7", make="Tesla (Berlin)", segments=("car",)),
    Wmi(code="LRW", make="Tesla (Shanghai)", segments=("car",)),
    Wmi(code="5YJ", make="Tesla (Fremont)", segments=("car",)),
)

_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
# ISO 3779 / 49 CFR 565 transliteration of letters to values for the check digit.
_VALUES = {str(d): d for d in range(10)} | dict(
    zip(
        "ABCDEFGHJKLMNPRSTUVWXYZ",
        (1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9),
        strict=True,
    )
)


def check_digit(vin: str) -> str:
    """The check digit (position 9) of a 17-character VIN: "0".."9" or "X".

    Position 9 itself has weight 0, so whatever it holds does not change the result.

    >>> check_digit("1M8GDM9AXKP042788")
    'X'
    """
    total = sum(_VALUES[c] * w for c, w in zip(vin, _WEIGHTS, strict=True))
    r = total % 11
    return "X" if r == 10 else str(r)


def uses_check_digit(wmi: str) -> bool:
    """Whether VINs under this WMI carry a check digit (North American and Chinese WMIs)."""
    return wmi[0] in "12345L"


def model_year_code(year: int) -> str:
    """Position-10 code of a model year in 2010..2039."""
    return MODEL_YEAR_CODES[year]


def is_valid_vin(vin: str) -> bool:
    """True for 17 allowed characters, with a correct check digit where the WMI requires one."""
    if len(vin) != 17 or any(c not in ALPHABET for c in vin):
        return False
    return not uses_check_digit(vin[:3]) or vin[8] == check_digit(vin)


def random_vin(rng: random.Random, wmi: str, model_year: int) -> str:
    """A random valid VIN for a WMI and model year.

    Args:
        rng: the seeded source of randomness.
        wmi: a three-character World Manufacturer Identifier.
        model_year: 2010..2039.

    Returns:
        17 characters: WMI, five descriptor characters, check digit (or a free character), model
        year, plant letter and a six-digit serial number.
    """
    vds = "".join(rng.choice(ALPHABET) for _ in range(5))
    plant = rng.choice(ALPHABET[10:])
    serial = f"{rng.randrange(1_000_000):06d}"
    ninth = "0" if uses_check_digit(wmi) else rng.choice(ALPHABET)
    vin = wmi + vds + ninth + model_year_code(model_year) + plant + serial
    if uses_check_digit(wmi):
        vin = vin[:8] + check_digit(vin) + vin[9:]
    return vin
