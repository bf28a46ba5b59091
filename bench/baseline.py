"""Baseline: the registration's happy path with the work taken out, to price the orchestration.

``BaselineWorkflow`` has the shape of ``RegistrationWorkflow`` on the happy path with in-process
providers: six local activities in ``run`` (describe providers, find principal, create principal,
issue the code, link or create the customer and activate, welcome mail) and a validated update
that runs a seventh (verify the code) and answers once the "account" is active, with the same
timeouts, retry policy and step summaries. Its activities do nothing, except that "issue" touches
a marker file, so the load generator learns when to submit the code as it does for a
registration: by watching the file system. What a registration costs above this is its own work:
Argon2id, SQLite, rendering and writing mails, Fernet and HMAC, larger payloads.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from workflows.steps import local_retry

STEP_TIMEOUT = timedelta(seconds=10)
STEP_DEADLINE = timedelta(minutes=5)
WELCOME_DEADLINE = timedelta(minutes=10)
"""As ``workflows/registration.py`` has them: each is an encoded duration in history."""
ACTIVATION_TTL = timedelta(hours=24)
CODE = "000000"


class BaselineState(StrEnum):
    STARTING = "starting"
    PENDING = "pending"
    ACTIVATING = "activating"
    ACTIVE = "active"
    EXPIRED = "expired"


class BaselineInput(BaseModel):
    """What a start carries: the marker the "issue" step touches once the code is "sent"."""

    marker: str


class BaselineActivities:
    """No-op stand-ins for the seven activities of a registration's happy path."""

    def __init__(self, marker_dir: Path) -> None:
        self._marker_dir = marker_dir

    @activity.defn(name="baseline_describe_providers")
    async def describe_providers(self) -> bool:
        return True

    @activity.defn(name="baseline_find_principal")
    async def find_principal(self, key: str) -> None:
        return None

    @activity.defn(name="baseline_create_principal")
    async def create_principal(self, key: str) -> str:
        return key

    @activity.defn(name="baseline_issue_activation")
    async def issue_activation(self, marker: str) -> str:
        """The code is "in the mailbox" (on the event loop, as the outbox writes its mails)."""
        (self._marker_dir / marker).touch()
        return CODE

    @activity.defn(name="baseline_verify_activation")
    async def verify_activation(self, code: str) -> bool:
        return code == CODE

    @activity.defn(name="baseline_link_customer_and_activate")
    async def link_customer_and_activate(self, key: str) -> str:
        return key

    @activity.defn(name="baseline_send_welcome")
    async def send_welcome(self, key: str) -> None:
        return None

    def all(self) -> list[Any]:
        return [
            self.describe_providers,
            self.find_principal,
            self.create_principal,
            self.issue_activation,
            self.verify_activation,
            self.link_customer_and_activate,
            self.send_welcome,
        ]


@workflow.defn
class BaselineWorkflow:
    @workflow.init
    def __init__(self, input: BaselineInput) -> None:
        self._state = BaselineState.STARTING
        self._verified = False
        self._code_lock = asyncio.Lock()

    @workflow.run
    async def run(self, input: BaselineInput) -> BaselineState:
        key = workflow.info().workflow_id
        await _step(
            BaselineActivities.describe_providers,
            None,
            "which providers run in-process, and their shape",
        )
        await _step(BaselineActivities.find_principal, key, "look up the email")
        await _step(BaselineActivities.create_principal, key, "create inactive principal")
        await _step(BaselineActivities.issue_activation, input.marker, "mail activation code #1")
        self._state = BaselineState.PENDING
        try:
            await workflow.wait_condition(
                lambda: self._verified,
                timeout=ACTIVATION_TTL,
                timeout_summary="activation window",
            )
        except TimeoutError:
            self._state = BaselineState.EXPIRED
            return self._state
        self._state = BaselineState.ACTIVATING
        await _step(
            BaselineActivities.link_customer_and_activate,
            key,
            "link or create customer, activate principal with the link",
        )
        self._state = BaselineState.ACTIVE
        await _step(BaselineActivities.send_welcome, key, "mail: welcome", WELCOME_DEADLINE)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    @workflow.update
    async def submit_activation_code(self, code: str) -> BaselineState:
        """Like the registration's: check under the lock, then answer once active."""
        async with self._code_lock:
            self._verified = await _step(
                BaselineActivities.verify_activation, code, "verify activation code"
            )
        await workflow.wait_condition(
            lambda: self._state not in (BaselineState.PENDING, BaselineState.ACTIVATING)
        )
        return self._state

    @submit_activation_code.validator
    def _only_while_pending(self, code: str) -> None:
        if self._state is not BaselineState.PENDING:
            raise ValueError(f"no activation is pending (state {self._state.value})")


async def _step(fn: Any, arg: Any, summary: str, deadline: timedelta = STEP_DEADLINE) -> Any:
    """A local activity with the registration's options for in-process steps, and the summary
    the registration gives the same step, to the byte: it is one more payload in history."""
    return await workflow.execute_local_activity_method(
        fn,
        args=[] if arg is None else [arg],
        start_to_close_timeout=STEP_TIMEOUT,
        schedule_to_close_timeout=deadline,
        retry_policy=local_retry(deadline),
        summary=summary,
    )
