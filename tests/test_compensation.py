"""Compensation runs to completion even when the provider rejects an undo for a while."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.errors import InvalidRequest, NotFound
from activities.providers.local import LocalIdentity
from activities.roles import NewPrincipal, Principal
from common.settings import Settings
from tests.helpers import customers, identity, register, result_of, wait_for_state
from tests.stack import beside, running_stack
from workflows.models import ActivationOutcome, RegistrationState

EMAIL = "rita@example.com"


class RejectingIdentity:
    """The local identity provider, except that activation always fails for good (the principal
    is "gone") and the first ``rejections`` deletes are refused as invalid, as a remote provider
    might while someone fixes the record."""

    def __init__(self, inner: LocalIdentity, rejections: int) -> None:
        self.inner = inner
        self.in_process = inner.in_process
        self.rejections = rejections
        self.deletes = 0

    async def find_principal(self, email_canonical: str) -> Principal | None:
        return await self.inner.find_principal(email_canonical)

    async def get_principal(self, principal_id: str) -> Principal | None:
        return await self.inner.get_principal(principal_id)

    async def create_principal(self, new: NewPrincipal, password: str) -> Principal:
        return await self.inner.create_principal(new, password)

    async def activate_principal(
        self, principal_id: str, customer_id: str, customer_number: str, expected_version: str
    ) -> Principal:
        raise NotFound(f"principal {principal_id} does not exist")

    async def delete_principal(self, principal_id: str) -> bool:
        self.deletes += 1
        if self.deletes <= self.rejections:
            raise InvalidRequest("the provider refuses the delete for now")
        return await self.inner.delete_principal(principal_id)

    async def aclose(self) -> None:
        pass


async def test_a_rejected_undo_neither_stops_the_others_nor_is_given_up(
    time_env: WorkflowEnvironment, settings: Settings
) -> None:
    async for plain in running_stack(time_env.client, settings):
        rejecting = RejectingIdentity(identity(plain), rejections=2)
        async for stack in beside(plain, "r", identity=rejecting):
            receipt = await register(stack, EMAIL)
            await wait_for_state(stack, EMAIL, RegistrationState.PENDING)
            reply = await stack.registrations.submit_code(EMAIL, stack.code_for(EMAIL))
            assert reply.outcome is ActivationOutcome.FAILED
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


class HeldRejectingIdentity(RejectingIdentity):
    """``RejectingIdentity`` as a remote provider (regular activities, so a cancel reaches the
    workflow while one runs), whose first delete waits at a gate before it is refused."""

    def __init__(self, inner: LocalIdentity, rejections: int) -> None:
        super().__init__(inner, rejections)
        self.in_process = False
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def delete_principal(self, principal_id: str) -> bool:
        if self.deletes == 0:
            self.reached.set()
            await self.release.wait()
        return await super().delete_principal(principal_id)


async def test_a_cancel_while_an_undo_fails_does_not_stop_the_compensation(
    time_env: WorkflowEnvironment, settings: Settings
) -> None:
    async for plain in running_stack(time_env.client, settings):
        held = HeldRejectingIdentity(identity(plain), rejections=2)
        async for stack in beside(plain, "h", identity=held):
            await register(stack, EMAIL)
            await wait_for_state(stack, EMAIL, RegistrationState.PENDING)
            reply = await stack.registrations.submit_code(EMAIL, stack.code_for(EMAIL))
            assert reply.outcome is ActivationOutcome.FAILED
            await asyncio.wait_for(held.reached.wait(), 10)
            await stack.registrations.cancel(EMAIL, reason="staff gave up waiting")
            await asyncio.sleep(0.5)  # the cancel reaches the workflow while the undo runs
            held.release.set()  # ... which is then refused

            await time_env.sleep(timedelta(minutes=4))
            assert await customers(stack).find_customer(EMAIL) is None
            assert await identity(plain).find_principal(EMAIL) is None
            assert held.deletes == 3
            status = await stack.registrations.status(EMAIL)
            assert status.state is RegistrationState.FAILED  # the outcome decided first
