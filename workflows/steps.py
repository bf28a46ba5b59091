"""How the registration runs a provider call: as a local activity when the provider is
in-process, as a regular activity when it calls out, with the timeouts and retries of each.

Local activities save the server round trips of millisecond-fast work (the SQLite provider);
remote calls get their own retries and timeouts, and the workflow takes messages while they run.
Forward steps give up at a deadline (the registration then fails and compensates); undos retry
until done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.types import MethodAsyncNoParam

A = TypeVar("A")
R = TypeVar("R")

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
"""Transient errors retry with backoff; typed provider errors are non-retryable."""
LOCAL_STEP_TIMEOUT = timedelta(seconds=10)
LOCAL_STEP_DEADLINE = timedelta(minutes=5)
REMOTE_STEP_TIMEOUT = timedelta(seconds=30)
REMOTE_STEP_DEADLINE = timedelta(minutes=30)
"""How long a forward step may keep retrying before the registration fails and compensates."""

Activity = Callable[[Any, A], Awaitable[R]]


def step(
    fn: Activity[A, R],
    arg: A,
    summary: str,
    *,
    in_process: bool,
    undo: bool = False,
    deadline: timedelta | None = None,
) -> Awaitable[R]:
    """One provider call. ``undo``: no deadline and no attempt cap (a compensation runs to
    completion; a record that is already gone counts as undone)."""
    if in_process:
        local_deadline = None if undo else (deadline or LOCAL_STEP_DEADLINE)
        return workflow.execute_local_activity_method(
            fn,
            arg,
            start_to_close_timeout=LOCAL_STEP_TIMEOUT,
            schedule_to_close_timeout=local_deadline,
            retry_policy=local_retry(local_deadline) if local_deadline else RETRY,
            summary=summary,
        )
    return workflow.execute_activity_method(
        fn,
        arg,
        start_to_close_timeout=REMOTE_STEP_TIMEOUT,
        schedule_to_close_timeout=None if undo else (deadline or REMOTE_STEP_DEADLINE),
        retry_policy=RETRY,
        summary=summary,
    )


def ask(fn: MethodAsyncNoParam[Any, R], summary: str) -> Awaitable[R]:
    """A question to this worker that takes no input (a local activity)."""
    return workflow.execute_local_activity_method(
        fn,
        start_to_close_timeout=LOCAL_STEP_TIMEOUT,
        schedule_to_close_timeout=LOCAL_STEP_DEADLINE,
        retry_policy=local_retry(LOCAL_STEP_DEADLINE),
        summary=summary,
    )


def local_retry(deadline: timedelta) -> RetryPolicy:
    """``RETRY`` for a local step, capped at the attempts that start within ``deadline``.

    sdk-core (temporalio 1.35.0) does not end a local activity at its schedule-to-close once its
    retries wait on workflow timers (backoffs of a minute and more): measured on the dev
    server, an in-process mail step that kept failing was still being retried after 7 minutes
    with its 5-minute deadline, and the registration stayed at ``starting``. The attempt cap
    ends it in time; the deadline stays, for a core that enforces it."""
    attempts, waited, backoff = 1, timedelta(0), RETRY.initial_interval
    while waited + backoff <= deadline:
        waited += backoff
        attempts += 1
        backoff = min(backoff * RETRY.backoff_coefficient, RETRY.maximum_interval or backoff)
    return dataclasses.replace(RETRY, maximum_attempts=attempts)
