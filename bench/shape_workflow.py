"""No-op workflows with the shape of a registration's activation, in variants (``bench.shapes``).

The update checks a "code" in a local activity, then the workflow runs the activation's steps
(customer, activate principal, welcome mail) and the update answers once the "account" is active,
as ``RegistrationWorkflow`` does. The variants differ only in how the welcome mail is run, which
decides whether the update's answer waits for it: Core completes a workflow task (and so sends
the update's answer) only once all of that task's local activities are done.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from temporalio import activity, workflow

STEP_TIMEOUT = timedelta(seconds=10)


class Shape(StrEnum):
    UPDATE_ONLY = "update-only"
    """The update answers at once and the workflow completes: the round trip's floor."""
    FOUR_LOCAL = "four-local"
    """Verify, customer, activate, welcome: four local activities, as the registration has."""
    WELCOME_REGULAR = "welcome-regular"
    """The welcome mail as a regular activity: the answer goes out before it runs."""
    WELCOME_AFTER_TIMER = "welcome-after-timer"
    """A 1 ms timer before the welcome mail's local activity: the answer goes out before it."""


@activity.defn
async def noop(step: str) -> str:
    return step


async def _local(step: str) -> None:
    await workflow.execute_local_activity(noop, step, start_to_close_timeout=STEP_TIMEOUT)


@workflow.defn
class ShapeWorkflow:
    def __init__(self) -> None:
        self._verified = False
        self._active = False

    @workflow.run
    async def run(self, shape: Shape) -> None:
        await workflow.wait_condition(lambda: self._verified, timeout=timedelta(hours=24))
        if shape is Shape.UPDATE_ONLY:
            return
        await _local("customer")
        await _local("activate")
        self._active = True
        if shape is Shape.WELCOME_REGULAR:
            await workflow.execute_activity(noop, "welcome", start_to_close_timeout=STEP_TIMEOUT)
        else:
            if shape is Shape.WELCOME_AFTER_TIMER:
                await workflow.sleep(timedelta(milliseconds=1))
            await _local("welcome")
        await workflow.wait_condition(workflow.all_handlers_finished)

    @workflow.update
    async def submit(self, shape: Shape) -> None:
        if shape is not Shape.UPDATE_ONLY:
            await _local("verify")
        self._verified = True
        await workflow.wait_condition(lambda: self._active or shape is Shape.UPDATE_ONLY)
