"""A local step ends by its deadline: ``local_retry`` caps its attempts, since sdk-core does not
end a local activity at its schedule-to-close once its retries wait on workflow timers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.common import RetryPolicy

from workflows.registration import WELCOME_DEADLINE
from workflows.steps import LOCAL_STEP_DEADLINE, RETRY, local_retry


def waited_before(policy: RetryPolicy, attempt: int) -> timedelta:
    """The backoffs before ``attempt`` starts (attempt 1 starts at once)."""
    total, backoff = timedelta(0), policy.initial_interval
    for _ in range(attempt - 1):
        total += backoff
        backoff = min(backoff * policy.backoff_coefficient, policy.maximum_interval or backoff)
    return total


@pytest.mark.parametrize(
    "deadline", [LOCAL_STEP_DEADLINE, WELCOME_DEADLINE, timedelta(seconds=30), timedelta(hours=1)]
)
def test_a_local_step_starts_its_last_attempt_within_its_deadline(deadline: timedelta) -> None:
    policy = local_retry(deadline)
    assert policy.maximum_attempts >= 2
    last = policy.maximum_attempts
    assert waited_before(policy, last) <= deadline < waited_before(policy, last + 1)
    assert (policy.initial_interval, policy.maximum_interval) == (
        RETRY.initial_interval,
        RETRY.maximum_interval,
    )


def test_five_minutes_are_ten_attempts() -> None:
    """1, 2, 4, 8, 16, 32 s, then a minute each: the tenth attempt starts after 243 s."""
    assert local_retry(LOCAL_STEP_DEADLINE).maximum_attempts == 10
    assert RETRY.maximum_attempts == 0  # undos and remote steps: unlimited, as before
