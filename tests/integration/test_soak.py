"""A short run of the soak (`load_tests/soak.py`): versions change under load and no request fails.

The full run (minutes; RSS and descriptors reported in docs/benchmarks.md) is a benchmark; this
only holds the soak to its zero-failure promise, with no timing or memory threshold.
"""

from __future__ import annotations

import pytest

from load_tests.soak import soak

pytestmark = pytest.mark.integration


def test_a_short_soak_with_a_version_change_every_second_fails_no_request() -> None:
    result = soak(duration_s=8.0, change_every_s=1.0, clients=2, warmup_s=1.0, sample_every_s=2.0)
    assert result.failures == []
    assert result.changes >= 1 and sum(result.versions.values()) == result.requests
    assert result.samples and all(sample.open_fds > 0 for sample in result.samples)
