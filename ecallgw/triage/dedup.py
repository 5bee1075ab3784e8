"""Dedup: what makes two signals the same, and what in an MSD update a receiver should see.

Three levels (docs/triage.md "Identity and dedup"):

- an exact repeat (broker redelivery, the same MSD bytes in the same call) is recognised by its
  fingerprint and changes nothing;
- a resend or update within a call (same provider, vehicle key and ``call_id``) updates the call's
  incident, with a new revision only when ``msd_changes`` finds something receivers should see;
- a new call of the same vehicle (keyed VIN hash) within the redial window and near the same place
  joins the open incident; the engine decides that with ``distance_m``.
"""

from __future__ import annotations

from collections.abc import Hashable

from ecallgw.model import CancelSignal, Msd, MsdSignal, Position, PositionSignal, Reason, Signal
from ecallgw.triage.routing import distance_m

__all__ = ["CallKey", "fingerprint", "msd_changes", "msd_position", "position_changes"]

CallKey = tuple[str, str, str]
"""(tps, vehicle, call_id): a provider's call; the provider's vehicle key is opaque, not the VIN."""


def fingerprint(signal: Signal) -> Hashable:
    """What identifies an exact repeat of a signal within its call.

    An MSD is identified by its bytes as received (``Msd.raw``) when present, else by its value;
    ``sent_at`` is left out because a provider that retransmits the same bytes may stamp the
    envelope anew, and the same MSD bytes within one call change nothing either way.
    """
    if isinstance(signal, MsdSignal):
        # Bytes, or an Msd value: neither can equal the tuples of the other kinds.
        return signal.msd.raw or signal.msd
    if isinstance(signal, CancelSignal):
        return ("cancel", signal.sent_at, signal.reason)
    p = signal.position
    # The fix itself identifies a repeat; hashing four numbers is cheaper than the whole Position.
    return ("position", signal.sent_at, p.lat, p.lon, p.trusted, p.at)


def msd_position(msd: Msd) -> Position | None:
    """The MSD's position as a ``Position``, or None when unknown (0x7FFFFFFF or out of range)."""
    s = msd.msd.msd_structure
    degrees = s.vehicle_location.degrees
    if degrees is None:
        return None
    return Position(
        lat=degrees[0],
        lon=degrees[1],
        trusted=s.control.position_can_be_trusted,
        source="msd",
        at=float(s.timestamp) if s.timestamp else None,
        heading_deg=float(s.vehicle_direction * 2) if s.vehicle_direction <= 179 else None,
    )


def position_changes(old: Position | None, new: Position | None, min_move_m: float) -> tuple[Reason, ...]:
    """Reasons a receiver should see a new position; empty when it did not change enough.

    A first known position, a move beyond ``min_move_m``, or a position becoming trusted counts;
    an untrusted position never replaces a trusted one (the engine checks that before).
    """
    if new is None:
        return ()
    if old is None:
        return (Reason(code="position_first_fix", text="first known position"),)
    moved = distance_m(old.lat, old.lon, new.lat, new.lon)
    if moved > min_move_m:
        return (Reason(code="position_moved", text=f"position moved {moved:.0f} m"),)
    if new.trusted and not old.trusted:
        return (Reason(code="position_trusted", text="position became trusted"),)
    return ()


def msd_changes(old: Msd, new: Msd, min_move_m: float) -> tuple[Reason, ...]:
    """Reasons an updated MSD of the same incident deserves a new revision; empty when none.

    ``messageIdentifier`` and the recent-location deltas change with every retransmission and are
    not by themselves news for a receiver; position, flags, occupants, propulsion and additional
    data are.
    """
    so, sn = old.msd.msd_structure, new.msd.msd_structure
    # Field by field, cheapest first: a plain retransmission differs only in messageIdentifier and
    # the recent-location deltas, which are not news.
    oad_old, oad_new = old.msd.optional_additional_data, new.msd.optional_additional_data
    # Identity first: a resend shares most parts with the MSD before it (interned by the codec), and
    # the values compared are ints, bools and bytes, for which ``is`` implies ``==``.
    if (
        (sn.vehicle_location is so.vehicle_location or sn.vehicle_location == so.vehicle_location)
        and sn.number_of_passengers == so.number_of_passengers
        and (sn.control is so.control or sn.control == so.control)
        and (
            sn.vehicle_propulsion_storage_type is so.vehicle_propulsion_storage_type
            or sn.vehicle_propulsion_storage_type == so.vehicle_propulsion_storage_type
        )
        and (oad_new is oad_old or oad_new == oad_old)
        and (
            sn.vehicle_identification_number is so.vehicle_identification_number
            or sn.vehicle_identification_number == so.vehicle_identification_number
        )
    ):
        return ()
    reasons: list[Reason] = []
    if sn.vehicle_location != so.vehicle_location or sn.control != so.control:
        pos = position_changes(msd_position(old), msd_position(new), min_move_m)
        if so.vehicle_location.is_valid and not sn.vehicle_location.is_valid:
            pos = ()  # losing the fix tells receivers nothing new; keep the last known position
        reasons.extend(pos)
    if sn.control != so.control:
        reasons.append(Reason(code="msd_control_changed", text="MSD control flags changed"))
    if sn.number_of_passengers != so.number_of_passengers:
        reasons.append(Reason(code="msd_occupants_changed", text="number of occupants changed"))
    if sn.vehicle_propulsion_storage_type != so.vehicle_propulsion_storage_type:
        reasons.append(Reason(code="msd_propulsion_changed", text="propulsion storage changed"))
    if new.msd.optional_additional_data != old.msd.optional_additional_data:
        reasons.append(Reason(code="msd_additional_data_changed", text="optional additional data changed"))
    if sn.vehicle_identification_number != so.vehicle_identification_number:
        reasons.append(Reason(code="msd_vin_changed", text="VIN changed within the call"))
    return tuple(reasons)


def is_newer_position(signal: PositionSignal, current_sent_at: float | None) -> bool:
    """True when a position signal is not older than the position the incident holds."""
    return current_sent_at is None or signal.sent_at >= current_sent_at
