"""Test-wide settings: hypothesis profiles sized for CI on two cores."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# CI runs the same properties with fewer examples than a developer's run; the long runs
# (100,000 differential MSDs, 1,000,000 fuzzed inputs) live in bench/ scripts.
settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
