"""False-trigger checks: stale MSDs, doubtful positions, manual bursts and provider storms.

Each check returns explained reasons; none of them drops a signal. What the engine does with a
suspicion depends on the activation (docs/triage.md "False triggers"): an automatic non-test
activation still goes to its PSAP at once, flagged for the operator; a manual one waits for an
operator instead of escalating by timer.

Each rule owns its guard: it returns ``()`` at once when it does not apply, so the engine calls
every rule for every new non-test incident and repeats none of their conditions.
"""

from __future__ import annotations

from ecallgw.model import Msd, Reason
from ecallgw.triage.policy import TriagePolicy

__all__ = ["StormDetector", "manual_burst_reason", "msd_time_reasons", "position_reasons"]


def msd_time_reasons(msd: Msd, now: float, policy: TriagePolicy) -> tuple[Reason, ...]:
    """Flag an MSD whose timestamp is 0 (unknown) or far from its receipt time (stale or replayed).

    EN 15722 timestamps are UTC seconds since 1970 taken when the eCall was triggered; a vehicle
    retransmits the same timestamp within a call, so an open call's MSD ages only by the call's own
    length, which stays well below ``msd_stale_s``.
    """
    ts = msd.msd.msd_structure.timestamp
    if ts == 0:
        return (Reason(code="msd_timestamp_missing", text="MSD timestamp is 0 (unknown time)"),)
    skew = now - ts
    if abs(skew) > policy.msd_stale_s:
        where = "before" if skew > 0 else "after"
        return (
            Reason(
                code="msd_timestamp_stale",
                text=f"MSD timestamp {abs(skew):.0f} s {where} receipt (limit {policy.msd_stale_s:.0f} s)",
            ),
        )
    return ()


def position_reasons(msd: Msd) -> tuple[Reason, ...]:
    """Flag an MSD position that is unknown (0x7FFFFFFF, out of range) or not to be trusted."""
    s = msd.msd.msd_structure
    if not s.vehicle_location.is_valid:
        return (Reason(code="position_invalid", text="MSD position unknown or out of range"),)
    if not s.control.position_can_be_trusted:
        return (Reason(code="position_untrusted", text="vehicle reports its position cannot be trusted"),)
    return ()


def manual_burst_reason(count: int, policy: TriagePolicy) -> tuple[Reason, ...]:
    """Flag the ``count``-th manual incident of one vehicle within the burst window."""
    if count >= policy.manual_burst_count:
        return (
            Reason(
                code="manual_burst",
                text=f"manual call {count} of this vehicle within {policy.manual_burst_window_s:.0f} s "
                f"(burst from {policy.manual_burst_count})",
            ),
        )
    return ()


class StormDetector:
    """Counts one provider's new incidents and says when the rate is far above its baseline.

    The count over the last ``storm_window_s`` is estimated from two fixed windows (the current one
    and the previous one weighted by how much of it still lies in the sliding window), which costs
    O(1) time and memory per provider at any rate. The baseline is an exponential average of
    per-window counts with time constant ``storm_baseline_s`` (a busy provider at cold start is
    flagged until its baseline is learnt; ``storm_min_count`` keeps small providers from being
    flagged by a handful of calls). Deterministic: the state changes only through ``observe``.
    """

    __slots__ = ("_alpha", "_baseline", "_cur", "_factor", "_min", "_no", "_prev", "_window")

    def __init__(self, policy: TriagePolicy) -> None:
        self._window = policy.storm_window_s
        self._factor = policy.storm_factor
        self._min = policy.storm_min_count
        self._alpha = policy.storm_window_s / policy.storm_baseline_s
        self._baseline = 0.0
        self._no: int | None = None
        self._cur = 0
        self._prev = 0

    @property
    def threshold(self) -> float:
        """The count within one window above which the provider is in a storm."""
        return max(float(self._min), self._factor * self._baseline)

    def observe(self, now: float) -> tuple[Reason, ...]:
        """Count one new incident at ``now``; return a ``provider_storm`` reason during a storm."""
        pos = now / self._window
        no = int(pos // 1)
        if self._no is None:
            self._no = no
        elif no > self._no:
            self._roll(no)
        # A receipt time older than the current window (replayed out of order) counts in it.
        self._cur += 1
        frac = min(max(pos - self._no, 0.0), 1.0)
        n = self._cur + self._prev * (1.0 - frac)
        threshold = self._factor * self._baseline
        threshold = max(threshold, self._min)
        if n > threshold:
            return (
                Reason(
                    code="provider_storm",
                    text=f"provider storm: about {n:.0f} new incidents in {self._window:.0f} s "
                    f"(baseline {self._baseline:.1f}, threshold {threshold:.0f})",
                ),
            )
        return ()

    def _roll(self, no: int) -> None:
        assert self._no is not None
        # Storm windows feed the baseline too: a provider that is simply busy stops being flagged
        # after a fraction of the time constant, and a flood lasting hours is absorbed only slowly.
        self._baseline += self._alpha * (self._cur - self._baseline)
        empty = min(no - self._no - 1, 10_000)
        if empty > 0:
            self._baseline *= (1 - self._alpha) ** empty
        self._prev = self._cur if empty == 0 else 0
        self._cur = 0
        self._no = no
