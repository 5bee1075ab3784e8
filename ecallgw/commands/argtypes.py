"""argparse ``type=`` functions for the sub-commands' numbers and values.

A refused value is an `argparse.ArgumentTypeError`, so argparse prints the usage and
``argument --rate: must be a positive number, got -1`` naming the option, and exits 2.
"""

from __future__ import annotations

import argparse
import math

__all__ = ["mix_text", "non_negative_float", "positive_float", "positive_int", "start_time"]


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def positive_int(text: str) -> int:
    """A whole number > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def start_time(text: str) -> str:
    """``now``, epoch seconds, or empty (the command's default); returned as given."""
    if text not in ("", "now"):
        try:
            _number(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"must be epoch seconds or 'now', got {text}") from None
    return text


def mix_text(text: str) -> str:
    """``name=number,...`` with each number finite and >= 0; names are checked by `Mix.parse`."""
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"needs NAME=NUMBER items, got {item!r}")
        try:
            non_negative_float(value.strip())
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{name.strip()}: {exc}") from None
    return text
