"""A flood of guesses for one email (issue 16, defect 5): callers get a typed answer (a reply,
``Busy``, ``NotPending``), never the server's raw "limit on number of concurrent in-flight
updates" or "update was aborted", and the owner's right code still activates afterwards."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.service import RetryConfig

import worker
from common.converter import data_converter
from common.temporal import MAX_IN_FLIGHT_UPDATES
from starter.client import CALLS_PER_EMAIL, Busy, NotPending, RegistrationClient
from tests.helpers import register, wait_for_state, wrong_code
from tests.ports import free_port
from tests.stack import Stack, beside, make_settings, running_stack
from workflows.models import ActivationOutcome, RegistrationState

GUESSES = 50
ROOMY = {"max_attempts_per_code": GUESSES + 10, "max_attempts_total": GUESSES + 10}
"""No lockout within the flood: the owner's code must still be good afterwards."""


async def flood(registrations: RegistrationClient, email: str, code: str) -> Counter[str]:
    """``GUESSES`` wrong codes at once; what each answered (an exception by its class)."""

    async def guess(offset: int) -> str:
        try:
            reply = await registrations.submit_code(email, wrong_code(code, offset))
        except (Busy, NotPending) as err:
            return type(err).__name__
        return reply.outcome.value

    return Counter(await asyncio.gather(*(guess(n) for n in range(1, GUESSES + 1))))


async def attempts_left(stack: Stack, email: str) -> int:
    return (await stack.registrations.status(email)).attempts_left


async def test_one_client_lets_three_guesses_per_email_through_and_answers_the_rest_busy(
    stack: Stack,
) -> None:
    """The per-email limit of a client (``CALLS_PER_EMAIL``, 3): the rest are ``Busy`` at once,
    without an RPC, and cost no attempt."""
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    async for roomy in beside(stack, "flood", settings=ROOMY):
        await register(roomy, email)
        await wait_for_state(roomy, email, RegistrationState.PENDING)
        code, before = roomy.code_for(email), await attempts_left(roomy, email)

        answers = await flood(roomy.registrations, email, code)
        assert CALLS_PER_EMAIL == 3
        assert answers == {"Busy": GUESSES - 3, ActivationOutcome.INVALID_CODE.value: 3}
        assert await attempts_left(roomy, email) == before - 3
        assert roomy.registrations._calls_under_way == {}  # no entry left behind

        reply = await roomy.registrations.submit_code(email, code)
        assert reply.outcome is ActivationOutcome.ACTIVATED


async def test_a_flood_past_the_servers_limit_is_busy_not_a_raw_error(stack: Stack) -> None:
    """Many processes (no per-email limit in one client helps): a server with Temporal's default
    limit (a cluster, Temporal Cloud; the tests' shared server) refuses the updates beyond 10 in
    flight per workflow, or aborts some, and each such call is ``Busy``. The SDK's
    own retries of those refusals (up to 10 s) hide them from a flood of 50 on a fast machine;
    this client retries once, so that they reach it as they reach callers of a bigger flood."""
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    async for roomy in beside(stack, "flood", settings=ROOMY):
        impatient = await Client.connect(
            roomy.client.service_client.config.target_host,
            data_converter=data_converter(roomy.settings),
            retry_config=RetryConfig(max_retries=1),
        )
        unlimited = RegistrationClient(impatient, roomy.settings, calls_per_email=None)
        await register(roomy, email)
        await wait_for_state(roomy, email, RegistrationState.PENDING)
        code = roomy.code_for(email)

        answers = await flood(unlimited, email, code)
        assert set(answers) <= {"Busy", ActivationOutcome.INVALID_CODE.value}, answers
        assert answers["Busy"] > 0, answers  # the server's refusals were there, and typed
        assert await attempts_left(roomy, email) == (
            ROOMY["max_attempts_total"] - answers[ActivationOutcome.INVALID_CODE.value]
        )

        reply = await roomy.registrations.submit_code(email, code)
        assert reply.outcome is ActivationOutcome.ACTIVATED


async def test_the_embedded_server_checks_a_flood_of_50_at_once(tmp_path: Path) -> None:
    """The embedded dev server (``make run``) takes 50 guesses at once for one registration:
    each is checked, none refused, where Temporal's default limit of 10 in flight refuses most
    (the test above) and drops the workflow tasks it handed out, so the worker replays the run's
    whole history again and again (``MAX_IN_FLIGHT_UPDATES``). Refusals reach this client, as
    there."""
    assert GUESSES < MAX_IN_FLIGHT_UPDATES
    settings = make_settings(
        tmp_path, dev_server_port=free_port(), dev_ui_port=free_port(), **ROOMY
    )
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    async with await worker.dev_server(settings, tmp_path / "temporal.sqlite3") as env:
        impatient = await Client.connect(
            env.client.service_client.config.target_host,
            data_converter=data_converter(settings),
            retry_config=RetryConfig(max_retries=1),
        )
        async for embedded in running_stack(env.client, settings):
            await register(embedded, email)
            await wait_for_state(embedded, email, RegistrationState.PENDING)
            unlimited = RegistrationClient(impatient, settings, calls_per_email=None)

            answers = await flood(unlimited, email, embedded.code_for(email))
            assert answers == {ActivationOutcome.INVALID_CODE.value: GUESSES}

            reply = await embedded.registrations.submit_code(email, embedded.code_for(email))
            assert reply.outcome is ActivationOutcome.ACTIVATED


@pytest.mark.parametrize("limit", [0, -1])
def test_calls_per_email_is_at_least_one(stack: Stack, limit: Any) -> None:
    with pytest.raises(ValueError, match="calls_per_email"):
        RegistrationClient(stack.client, stack.settings, calls_per_email=limit)


async def accepted_updates(stack: Stack, registration_id: str) -> int:
    history = await stack.client.get_workflow_handle(registration_id).fetch_history()
    return sum(event.HasField("workflow_execution_update_accepted_event_attributes")
               for event in history.events)  # fmt: skip


async def test_guesses_after_the_codes_attempts_are_spent_never_reach_history(
    stack: Stack,
) -> None:
    """The update validator refuses a code once the current one has no attempts left: the
    answer is the one the check gave (``too_many_attempts``, none left), and the history does
    not grow. A resend's new code gets its attempts again."""
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    policy = {"max_attempts_per_code": 3, "max_attempts_total": 20}
    async for strict in beside(stack, "spent", settings=policy):
        unlimited = RegistrationClient(strict.client, strict.settings, calls_per_email=None)
        receipt = await register(strict, email)
        await wait_for_state(strict, email, RegistrationState.PENDING)
        code = strict.code_for(email)
        for offset in (1, 2, 3):
            reply = await unlimited.submit_code(email, wrong_code(code, offset))
        assert (reply.outcome, reply.attempts_left) == (ActivationOutcome.TOO_MANY_ATTEMPTS, 0)
        counted = await accepted_updates(strict, receipt.registration_id)

        replies = await asyncio.gather(
            *(unlimited.submit_code(email, wrong_code(code, n)) for n in range(4, 24))
        )
        assert {(r.outcome, r.attempts_left) for r in replies} == {
            (ActivationOutcome.TOO_MANY_ATTEMPTS, 0)
        }
        right = await unlimited.submit_code(email, code)  # the spent code, even the right one
        assert (right.outcome, right.attempts_left) == (ActivationOutcome.TOO_MANY_ATTEMPTS, 0)
        assert await accepted_updates(strict, receipt.registration_id) == counted
        assert (await strict.registrations.status(email)).attempts_left == 17
        await strict.registrations.cancel(email)
