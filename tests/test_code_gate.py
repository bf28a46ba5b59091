"""The code gate's rules (``workflows/code_gate.py``), without a server: a fake clock, a fake
registration, and fake mail and check calls that record what they were asked and can be held at
an ``asyncio.Event``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from activities.models import IssuedActivation
from workflows.code_gate import FIRST_MAIL_GRACE, CodeGate, ProviderLockout
from workflows.models import (
    ActivationOutcome,
    ActivationReply,
    Approval,
    CodeSubmission,
    RegistrationPolicy,
    ResendOutcome,
    ResendRequest,
)

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
INTERVAL = timedelta(seconds=60)
WRONG = "999999"
REQUEST = ResendRequest()


def code(sequence: int) -> str:
    """The code that mail number ``sequence`` carries."""
    return f"{sequence:06d}"


def submit(value: str) -> CodeSubmission:
    return CodeSubmission(code=value)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeRegistration:
    pending: bool = True
    unseen_end: bool = False
    underway: bool = False
    outcome: ActivationOutcome = ActivationOutcome.NOT_PENDING

    def pending_for_caller(self) -> bool:
        return self.pending

    def ended_unseen(self) -> bool:
        return self.unseen_end

    def activation_underway(self) -> bool:
        return self.underway

    def outcome_for_caller(self) -> ActivationOutcome:
        return self.outcome


class FakeIssue:
    """Mails code number ``sequence``; the mail takes ``takes`` seconds of the clock, and waits
    at ``hold`` when one is set."""

    def __init__(self, clock: Clock, takes: float = 0) -> None:
        self.clock = clock
        self.takes = takes
        self.calls: list[int] = []
        self.hold: asyncio.Event | None = None

    async def __call__(self, sequence: int) -> IssuedActivation:
        self.calls.append(sequence)
        if self.hold is not None:
            await self.hold.wait()
        self.clock.advance(self.takes)
        return IssuedActivation(sequence=sequence, code_digest=f"digest-{sequence}")


class FakeVerify:
    """Right when the submission is the code of the issued sequence; raises ``ProviderLockout``
    when ``lockout``; waits at ``hold`` when one is set; runs ``during`` while it checks."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str | None]] = []
        self.lockout = False
        self.hold: asyncio.Event | None = None
        self.during: Callable[[], None] | None = None
        self.running = 0
        self.most_running = 0

    async def __call__(self, issued: IssuedActivation, submission: CodeSubmission) -> bool:
        self.calls.append((issued.sequence, submission.code))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.hold is not None:
                await self.hold.wait()
            if self.during is not None:
                self.during()
            if self.lockout:
                raise ProviderLockout
            return submission.code == code(issued.sequence)
        finally:
            self.running -= 1


class Fixture:
    """A gate whose first code (sequence 1) went out at the start, and its fakes."""

    def __init__(self, policy: RegistrationPolicy, first_mail_after: float = 0) -> None:
        self.clock = Clock()
        self.gate = CodeGate(policy, START, self.clock)
        self.registration = FakeRegistration()
        self.issue = FakeIssue(self.clock)
        self.verify = FakeVerify()
        self.first_mail_after = first_mail_after

    async def start(self) -> Fixture:
        self.issue.takes = self.first_mail_after
        await self.gate.issue_first(self.issue)
        self.issue.takes = 0
        return self

    async def check(self, value: str) -> ActivationReply:
        return await self.gate.check(submit(value), self.registration, self.verify)

    async def resend(self) -> ResendOutcome:
        reply = await self.gate.resend(REQUEST, self.registration, self.issue)
        return reply.outcome


def policy(
    per_code: int = 3, total: int = 10, resends: int = 3, interval: timedelta = INTERVAL
) -> RegistrationPolicy:
    return RegistrationPolicy(
        max_attempts_per_code=per_code,
        max_attempts_total=total,
        max_resends=resends,
        resend_interval=interval,
    )


async def started(per_code: int = 3, total: int = 10, resends: int = 3) -> Fixture:
    return await Fixture(policy(per_code=per_code, total=total, resends=resends)).start()


async def ticks(n: int = 10) -> None:
    """Lets the other tasks run as far as they can."""
    for _ in range(n):
        await asyncio.sleep(0)


# -- Attempts per code and in total ----------------------------------------------------------------


async def test_a_wrong_code_answers_with_the_attempts_left_on_it() -> None:
    f = await started(per_code=3, total=10)
    assert f.gate.attempts_left() == 3
    assert await f.check(WRONG) == ActivationReply(
        outcome=ActivationOutcome.INVALID_CODE, attempts_left=2
    )
    assert await f.check(WRONG) == ActivationReply(
        outcome=ActivationOutcome.INVALID_CODE, attempts_left=1
    )
    assert await f.check(WRONG) == ActivationReply(
        outcome=ActivationOutcome.TOO_MANY_ATTEMPTS, attempts_left=0
    )
    assert f.verify.calls == [(1, WRONG)] * 3
    assert f.gate.attempts_total == 3
    assert f.gate.total_attempts_left() == 7
    assert not f.gate.locked_out  # a new code may still be asked for
    assert not f.gate.decided


async def test_a_spent_code_is_refused_without_a_check() -> None:
    f = await started(per_code=2, total=10)
    await f.check(WRONG)
    await f.check(WRONG)
    reply = await f.check(code(1))  # even the right one
    assert reply == ActivationReply(outcome=ActivationOutcome.TOO_MANY_ATTEMPTS, attempts_left=0)
    assert f.verify.calls == [(1, WRONG), (1, WRONG)]
    assert f.gate.attempts_total == 2  # not counted
    assert not f.gate.accepted


async def test_the_right_code_is_accepted_and_not_counted() -> None:
    f = await started(per_code=3, total=10)
    await f.check(WRONG)
    assert await f.check(code(1)) == ActivationReply(outcome=ActivationOutcome.ACTIVATED)
    assert f.gate.accepted
    assert f.gate.decided
    assert f.gate.let_in
    assert f.gate.attempts_total == 1
    assert f.gate.attempts_left() == 2


async def test_a_resend_resets_the_attempts_on_the_code_but_not_the_total() -> None:
    f = await started(per_code=3, total=5)
    for _ in range(3):
        await f.check(WRONG)
    assert f.gate.attempts_left() == 0
    f.clock.advance(60)
    assert await f.resend() is ResendOutcome.SENT
    assert f.gate.attempts_total == 3
    assert f.gate.total_attempts_left() == 2
    assert f.gate.attempts_left() == 2  # 3 on the new code, but 2 left in total
    assert await f.check(WRONG) == ActivationReply(
        outcome=ActivationOutcome.INVALID_CODE, attempts_left=1
    )


async def test_the_last_wrong_attempt_overall_locks_the_registration_out() -> None:
    f = await started(per_code=3, total=4)
    for _ in range(3):
        await f.check(WRONG)
    f.clock.advance(60)
    assert await f.resend() is ResendOutcome.SENT
    assert not f.gate.locked_out
    reply = await f.check(WRONG)
    assert reply == ActivationReply(outcome=ActivationOutcome.TOO_MANY_ATTEMPTS, attempts_left=0)
    assert f.gate.locked_out
    assert f.gate.decided
    assert not f.gate.let_in
    assert f.gate.total_attempts_left() == 0
    assert f.gate.attempts_left() == 0


async def test_no_code_is_checked_after_the_lockout() -> None:
    """After the last wrong attempt the registration is still pending for the caller until the
    run sees the lockout (the workflow's ``pending_for_caller`` is its state, still PENDING; only
    ``ended_unseen`` says it). A check queued behind the lock runs in that same workflow task.
    The code's own budget is not spent (a resend reset it), yet nothing may be checked: not even
    the right code, and never at a provider that owns the codes."""
    f = await started(per_code=3, total=4)
    for _ in range(3):
        await f.check(WRONG)
    f.clock.advance(60)
    await f.resend()
    await f.check(WRONG)
    assert f.gate.locked_out
    f.registration.unseen_end = True  # as the workflow's ``ended_unseen`` says now
    calls = len(f.verify.calls)

    reply = await f.check(code(2))

    assert reply == ActivationReply(outcome=ActivationOutcome.TOO_MANY_ATTEMPTS, attempts_left=0)
    assert len(f.verify.calls) == calls
    assert not f.gate.accepted
    assert f.gate.total_attempts_left() == 0


# -- Resends ---------------------------------------------------------------------------------------


async def test_no_resend_when_nothing_is_pending_for_the_caller() -> None:
    f = await started(resends=3)
    f.registration.pending = False
    f.clock.advance(60)
    reply = await f.gate.resend(REQUEST, f.registration, f.issue)
    assert reply.outcome is ResendOutcome.NOT_PENDING
    assert reply.resends_left == 3
    assert reply.next_resend_at is None
    assert f.issue.calls == [1]


async def test_no_resend_after_a_code_was_accepted() -> None:
    f = await started()
    await f.check(code(1))
    f.clock.advance(60)
    assert await f.resend() is ResendOutcome.NOT_PENDING
    assert f.issue.calls == [1]
    assert f.gate.resends == 0


async def test_no_resend_after_an_approval() -> None:
    f = await started()
    assert f.gate.approve(Approval(operator="ops", reason="verified by phone"))
    f.clock.advance(60)
    assert await f.resend() is ResendOutcome.NOT_PENDING
    assert f.issue.calls == [1]


async def test_no_resend_for_a_registration_that_ended_unseen() -> None:
    f = await started()
    f.registration.unseen_end = True
    f.clock.advance(60)
    assert await f.resend() is ResendOutcome.NOT_PENDING
    assert f.issue.calls == [1]


async def test_resends_are_capped() -> None:
    f = await started(resends=2)
    for left in (1, 0):
        f.clock.advance(60)
        reply = await f.gate.resend(REQUEST, f.registration, f.issue)
        assert (reply.outcome, reply.resends_left) == (ResendOutcome.SENT, left)
    f.clock.advance(60)
    reply = await f.gate.resend(REQUEST, f.registration, f.issue)
    assert (reply.outcome, reply.resends_left) == (ResendOutcome.LIMIT_REACHED, 0)
    assert f.issue.calls == [1, 2, 3]


async def test_a_resend_before_the_interval_is_throttled() -> None:
    f = await started(resends=3)
    assert f.gate.next_resend_at() == START + INTERVAL
    f.clock.advance(59)
    reply = await f.gate.resend(REQUEST, f.registration, f.issue)
    assert reply.outcome is ResendOutcome.THROTTLED
    assert reply.resends_left == 3
    assert reply.next_resend_at == START + INTERVAL
    assert f.issue.calls == [1]
    f.clock.advance(1)
    assert await f.resend() is ResendOutcome.SENT


async def test_a_resend_mails_a_new_code_and_the_old_one_stops_working() -> None:
    f = await started(resends=3)
    f.clock.advance(75)
    f.issue.takes = 5  # the throttle counts from when the mail went out
    reply = await f.gate.resend(REQUEST, f.registration, f.issue)
    assert reply.outcome is ResendOutcome.SENT
    assert reply.resends_left == 2
    assert reply.next_resend_at == START + timedelta(seconds=80) + INTERVAL
    assert f.issue.calls == [1, 2]
    assert f.gate.issued is not None and f.gate.issued.sequence == 2
    assert (await f.check(code(1))).outcome is ActivationOutcome.INVALID_CODE
    assert (await f.check(code(2))).outcome is ActivationOutcome.ACTIVATED
    assert f.verify.calls == [(2, code(1)), (2, code(2))]


async def test_a_throttled_resend_after_a_resend_counts_from_that_mail() -> None:
    f = await started(resends=3)
    f.clock.advance(60)
    assert await f.resend() is ResendOutcome.SENT
    f.clock.advance(59)
    assert await f.resend() is ResendOutcome.THROTTLED
    f.clock.advance(1)
    assert await f.resend() is ResendOutcome.SENT
    assert f.issue.calls == [1, 2, 3]


# -- The first mail's grace ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "first_mail_after", "next_resend_after"),
    [
        (60, 0, 60),  # at once: from the start
        (60, 10, 60),  # within FIRST_MAIL_GRACE (10 s): from the start
        (60, 11, 71),  # later: from the mail
        (10, 5, 10),  # within half the interval (5 s), which is below the grace
        (10, 6, 16),  # within the grace but past half the interval: from the mail
    ],
)
async def test_the_first_throttle_counts_from_the_start_within_the_grace(
    interval: int, first_mail_after: float, next_resend_after: int
) -> None:
    assert timedelta(seconds=10) == FIRST_MAIL_GRACE
    f = await Fixture(
        policy(interval=timedelta(seconds=interval)), first_mail_after=first_mail_after
    ).start()
    assert f.gate.next_resend_at() == START + timedelta(seconds=next_resend_after)


async def test_a_late_first_mail_holds_the_resend_back() -> None:
    """Two codes never go out back to back: a first mail late by 30 s of a 60 s interval
    throttles a resend until 90 s, not 60 s."""
    f = await Fixture(policy(interval=INTERVAL), first_mail_after=30).start()
    f.clock.now = START + timedelta(seconds=60)
    assert await f.resend() is ResendOutcome.THROTTLED
    f.clock.now = START + timedelta(seconds=90)
    assert await f.resend() is ResendOutcome.SENT


async def test_a_resend_counts_from_its_own_mail() -> None:
    f = await started()
    f.clock.advance(60)
    f.issue.takes = 1
    assert await f.resend() is ResendOutcome.SENT
    assert f.gate.next_resend_at() == START + timedelta(seconds=61) + INTERVAL


# -- The lock --------------------------------------------------------------------------------------


async def test_a_check_waits_for_a_resend_in_flight_and_meets_the_new_code() -> None:
    f = await started()
    f.clock.advance(60)
    f.issue.hold = asyncio.Event()
    resend = asyncio.create_task(f.gate.resend(REQUEST, f.registration, f.issue))
    await ticks()
    assert f.issue.calls == [1, 2]  # the mail is out
    check = asyncio.create_task(f.check(code(2)))
    await ticks()
    assert f.verify.calls == []  # waits for the mail
    assert not check.done()

    f.issue.hold.set()
    assert (await resend).outcome is ResendOutcome.SENT
    assert await check == ActivationReply(outcome=ActivationOutcome.ACTIVATED)
    assert f.verify.calls == [(2, code(2))]


async def test_the_old_code_typed_during_a_resend_is_checked_against_the_new_one() -> None:
    f = await started(per_code=3)
    f.clock.advance(60)
    f.issue.hold = asyncio.Event()
    resend = asyncio.create_task(f.gate.resend(REQUEST, f.registration, f.issue))
    await ticks()
    check = asyncio.create_task(f.check(code(1)))
    await ticks()
    f.issue.hold.set()
    await resend
    assert await check == ActivationReply(outcome=ActivationOutcome.INVALID_CODE, attempts_left=2)
    assert f.verify.calls == [(2, code(1))]


async def test_checks_do_not_interleave() -> None:
    f = await started(per_code=3)
    f.verify.hold = asyncio.Event()
    first = asyncio.create_task(f.check(WRONG))
    second = asyncio.create_task(f.check(WRONG))
    await ticks()
    assert len(f.verify.calls) == 1
    f.verify.hold.set()
    replies = [await first, await second]
    assert f.verify.most_running == 1
    assert [r.attempts_left for r in replies] == [2, 1]


async def test_a_resend_waits_for_the_first_mail() -> None:
    clock = Clock()
    gate = CodeGate(policy(), START, clock)
    registration = FakeRegistration()
    issue = FakeIssue(clock)
    issue.hold = asyncio.Event()
    first = asyncio.create_task(gate.issue_first(issue))
    await ticks()
    clock.advance(60)
    resend = asyncio.create_task(gate.resend(REQUEST, registration, issue))
    await ticks()
    assert issue.calls == [1]
    issue.hold.set()
    await first
    # The first mail went out 60 s late: the throttle counts from it.
    assert (await resend).outcome is ResendOutcome.THROTTLED
    assert issue.calls == [1]


# -- A code again, once the activation is underway -------------------------------------------------


async def test_the_right_code_again_answers_activated_without_counting() -> None:
    f = await started(per_code=3, total=10)
    await f.check(WRONG)
    await f.check(code(1))
    f.registration.underway = True
    assert await f.check(code(1)) == ActivationReply(outcome=ActivationOutcome.ACTIVATED)
    assert f.gate.attempts_total == 1
    assert f.gate.attempts_left() == 2


async def test_a_wrong_code_once_underway_answers_not_pending() -> None:
    f = await started(per_code=3, total=10)
    await f.check(code(1))
    f.registration.underway = True
    assert await f.check(WRONG) == ActivationReply(outcome=ActivationOutcome.NOT_PENDING)
    assert f.gate.attempts_total == 0
    assert not f.gate.locked_out
    assert f.gate.let_in


async def test_only_max_attempts_per_code_repeats_are_checked() -> None:
    f = await started(per_code=2, total=10)
    await f.check(code(1))
    f.registration.underway = True
    outcomes = [(await f.check(code(1))).outcome for _ in range(4)]
    assert outcomes == [
        ActivationOutcome.ACTIVATED,
        ActivationOutcome.ACTIVATED,
        ActivationOutcome.NOT_PENDING,
        ActivationOutcome.NOT_PENDING,
    ]
    assert f.verify.calls == [(1, code(1))] * 3  # the accepted one and two repeats


async def test_wrong_repeats_spend_the_same_budget() -> None:
    f = await started(per_code=2, total=10)
    await f.check(code(1))
    f.registration.underway = True
    await f.check(WRONG)
    await f.check(WRONG)
    assert (await f.check(code(1))).outcome is ActivationOutcome.NOT_PENDING
    assert len(f.verify.calls) == 3


async def test_a_code_after_an_approval_is_checked_as_a_repeat() -> None:
    f = await started(per_code=3, total=10)
    f.gate.approve(Approval(operator="ops", reason="verified by phone"))
    f.registration.underway = True
    assert (await f.check(code(1))).outcome is ActivationOutcome.ACTIVATED
    assert (await f.check(WRONG)).outcome is ActivationOutcome.NOT_PENDING
    assert not f.gate.accepted
    assert f.gate.attempts_total == 0


async def test_a_provider_lockout_on_a_repeat_answers_not_pending() -> None:
    f = await started()
    await f.check(code(1))
    f.registration.underway = True
    f.verify.lockout = True
    assert await f.check(code(1)) == ActivationReply(outcome=ActivationOutcome.NOT_PENDING)
    assert not f.gate.locked_out
    assert f.gate.let_in


# -- Not pending, expired while checking, the provider's lockout -----------------------------------


async def test_a_code_when_nothing_is_pending_gets_the_registrations_outcome() -> None:
    f = await started()
    f.registration.pending = False
    f.registration.outcome = ActivationOutcome.EXPIRED
    assert await f.check(code(1)) == ActivationReply(outcome=ActivationOutcome.EXPIRED)
    assert f.verify.calls == []


@pytest.mark.parametrize("typed", [code(1), WRONG])
async def test_expired_while_checking_answers_the_registrations_outcome(typed: str) -> None:
    f = await started(per_code=3, total=10)

    def expire() -> None:
        f.registration.pending = False
        f.registration.outcome = ActivationOutcome.EXPIRED

    f.verify.during = expire
    assert await f.check(typed) == ActivationReply(outcome=ActivationOutcome.EXPIRED)
    assert len(f.verify.calls) == 1
    assert not f.gate.accepted
    assert f.gate.attempts_total == 0
    assert not f.gate.decided


async def test_a_provider_lockout_locks_the_registration_out() -> None:
    f = await started(per_code=3, total=10)
    f.verify.lockout = True
    reply = await f.check(code(1))
    assert reply == ActivationReply(outcome=ActivationOutcome.TOO_MANY_ATTEMPTS, attempts_left=0)
    assert f.gate.locked_out
    assert f.gate.decided
    assert not f.gate.let_in
    assert not f.gate.accepted
    assert f.gate.total_attempts_left() == 0  # what the status query shows


# -- Staff approval --------------------------------------------------------------------------------


async def test_the_first_approval_is_taken() -> None:
    f = await started()
    first = Approval(operator="ann", reason="verified by phone")
    assert not f.gate.decided
    assert f.gate.approve(first)
    assert not f.gate.approve(Approval(operator="bob", reason="second look"))
    assert f.gate.approval == first
    assert f.gate.decided
    assert f.gate.let_in
    assert not f.gate.accepted


async def test_an_approval_does_not_let_a_locked_out_registration_in() -> None:
    f = await started(per_code=1, total=1)
    await f.check(WRONG)
    assert f.gate.locked_out
    assert f.gate.approve(Approval(operator="ann", reason="verified by phone"))
    assert f.gate.decided
    assert not f.gate.let_in
