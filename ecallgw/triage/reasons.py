"""Every reason code triage gives, in one enumeration (docs/triage.md §6 lists the same, with meanings).

Codes are stable: logs, metric labels, replay output and receivers' documents use them. A reason's
code (``Reason.code``) is a plain string: written as a literal where the reason is built, or taken
from a ``ReasonCode`` member where the engine names a code it did not build (a flag it looks up, the
codes that hold an escalation). ``ReasonCode`` is the one list: tests/triage/test_reason_codes.py
checks the engine's source, its decisions, docs/triage.md and this list agree.
"""

from __future__ import annotations

import enum

__all__ = ["ReasonCode"]


class ReasonCode(enum.StrEnum):
    """A stable reason code; the value is the code itself."""

    new_call = "new_call"
    exact_repeat = "exact_repeat"
    msd_resend_unchanged = "msd_resend_unchanged"
    msd_out_of_order = "msd_out_of_order"
    redial_joined = "redial_joined"
    provider_joined = "provider_joined"
    redial_after_close = "redial_after_close"
    scene_linked = "scene_linked"
    incident_closed = "incident_closed"
    position_first_fix = "position_first_fix"
    position_moved = "position_moved"
    position_trusted = "position_trusted"
    position_older = "position_older"
    position_untrusted_ignored = "position_untrusted_ignored"
    position_unchanged = "position_unchanged"
    msd_control_changed = "msd_control_changed"
    msd_occupants_changed = "msd_occupants_changed"
    msd_propulsion_changed = "msd_propulsion_changed"
    msd_additional_data_changed = "msd_additional_data_changed"
    msd_vin_changed = "msd_vin_changed"
    callback_changed = "callback_changed"
    callback_added = "callback_added"
    no_incident_for_call = "no_incident_for_call"
    test_call = "test_call"
    cancelled_in_grace = "cancelled_in_grace"
    cancel_requested = "cancel_requested"
    cancel_repeat = "cancel_repeat"
    manual_burst = "manual_burst"
    provider_storm = "provider_storm"
    msd_timestamp_stale = "msd_timestamp_stale"
    msd_timestamp_missing = "msd_timestamp_missing"
    position_invalid = "position_invalid"
    position_untrusted = "position_untrusted"
    storm_member_added = "storm_member_added"
    storm_aggregate = "storm_aggregate"
    automatic_to_psap = "automatic_to_psap"
    routed_psap_area = "routed_psap_area"
    routed_psap_fallback = "routed_psap_fallback"
    escalation_pending = "escalation_pending"
    escalation_held = "escalation_held"
    escalation_timeout = "escalation_timeout"
    upgraded_to_automatic = "upgraded_to_automatic"
    test_flag_cleared = "test_flag_cleared"
    acknowledged = "acknowledged"
    already_acknowledged = "already_acknowledged"
    escalated_by_operator = "escalated_by_operator"
    cancelled_by_operator = "cancelled_by_operator"
    resolved_by_operator = "resolved_by_operator"
    already_at_psap = "already_at_psap"
    test_call_not_escalated = "test_call_not_escalated"
    unknown_incident = "unknown_incident"
    unknown_action = "unknown_action"
    storm_confirmed = "storm_confirmed"
    storm_dismissed = "storm_dismissed"
    storm_action_only = "storm_action_only"
    not_a_storm = "not_a_storm"
    activation_automatic = "activation_automatic"
    activation_manual = "activation_manual"
    delta_v_high = "delta_v_high"
    delta_v_reported = "delta_v_reported"
    rollover = "rollover"
    multiple_impacts = "multiple_impacts"
    side_impact = "side_impact"
    asi15_high = "asi15_high"
    asi15_reported = "asi15_reported"
    vehicle_bus = "vehicle_bus"
    vehicle_l_category = "vehicle_l_category"
    vehicle_heavy_goods = "vehicle_heavy_goods"
    occupants_multiple = "occupants_multiple"
    propulsion_hazard = "propulsion_hazard"
