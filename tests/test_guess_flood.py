"""A flood of guesses for one email (issue 16, defect 5): callers get a typed answer (a reply,
``Busy``, ``NotPending``), never the server's raw "limit on number of concurrent in-flight
updates" or "update was aborted", and the owner's right code still activates afterwards."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.service import RetryConfig

from common.converter import data_converter
from starter.client import Busy, NotPending, RegistrationClient
from tests.helpers import register, wait_for_state, wrong_code
from tests.stack import Stack, beside
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


async def test_one_client_lets_two_guesses_per_email_through_and_answers_the_rest_busy(
    stack: Stack,
) -> None:
    """The per-email limit of a client (``CALLS_PER_EMAIL``, 2): the rest are ``Busy`` at once,
    without an RPC, and cost no attempt."""
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    async for roomy in beside(stack, "flood", settings=ROOMY):
        await register(roomy, email)
        await wait_for_state(roomy, email, RegistrationState.PENDING)
        code, before = roomy.code_for(email), await attempts_left(roomy, email)

        answers = await flood(roomy.registrations, email, code)
        assert answers == {"Busy": GUESSES - 2, ActivationOutcome.INVALID_CODE.value: 2}
        assert await attempts_left(roomy, email) == before - 2
        assert roomy.registrations._calls_under_way == {}  # no entry left behind

        reply = await roomy.registrations.submit_code(email, code)
        assert reply.outcome is ActivationOutcome.ACTIVATED


async def test_a_flood_past_the_servers_limit_is_busy_not_a_raw_error(stack: Stack) -> None:
    """Many processes (no per-email limit in one client helps): the server refuses the updates
    beyond 10 in flight per workflow, or aborts some, and each such call is ``Busy``. The SDK's
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


@pytest.mark.parametrize("limit", [0, -1])
def test_calls_per_email_is_at_least_one(stack: Stack, limit: Any) -> None:
    with pytest.raises(ValueError, match="calls_per_email"):
        RegistrationClient(stack.client, stack.settings, calls_per_email=limit)
