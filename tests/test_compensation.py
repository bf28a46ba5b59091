"""Compensation runs to completion even when the provider rejects an undo for a while."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from common.settings import Settings
from tests.doubles import RejectingIdentity
from tests.helpers import customers, identity, register_and_submit_code, result_of
from tests.scenarios import failed_then_cancelled_while_undoing
from tests.stack import beside, running_stack
from workflows.models import ActivationOutcome, RegistrationState

EMAIL = "rita@example.com"


async def test_a_rejected_undo_neither_stops_the_others_nor_is_given_up(
    time_env: WorkflowEnvironment, settings: Settings
) -> None:
    async for plain in running_stack(time_env.client, settings):
        rejecting = RejectingIdentity(identity(plain), rejections=2)
        async for stack in beside(plain, "r", identity=rejecting):
            receipt, outcome = await register_and_submit_code(stack, EMAIL)
            assert outcome is ActivationOutcome.FAILED
            # The customer was created, then deleted although the principal's undo (which
            # runs first) was refused; the principal goes once the provider accepts, after
            # pauses of 1 and 2 minutes.
            assert await customers(stack).find_customer(EMAIL) is None
            assert await identity(plain).find_principal(EMAIL) is not None
            await time_env.sleep(timedelta(minutes=4))
            with pytest.raises(WorkflowFailureError) as failure:
                await result_of(stack, receipt.registration_id)
            assert isinstance(failure.value.cause, ApplicationError)
            assert failure.value.cause.type == "RegistrationFailed"
            assert "NotFound" in failure.value.cause.message
            assert rejecting.deletes == 3
            assert await customers(stack).find_customer(EMAIL) is None
            assert await identity(plain).find_principal(EMAIL) is None
            status = await stack.registrations.status(EMAIL)
            assert status.state is RegistrationState.FAILED


async def test_a_cancel_while_an_undo_fails_does_not_stop_the_compensation(
    time_env: WorkflowEnvironment, settings: Settings
) -> None:
    """The scenario (``tests/scenarios.py``, also recorded and replayed) holds the checks: every
    undo done, the delete tried until accepted, the outcome still ``failed``."""
    async for stack in running_stack(time_env.client, settings):
        await failed_then_cancelled_while_undoing(stack, time_env)
