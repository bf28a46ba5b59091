"""The code gate: the activation code a registration issued, and the rules for checking it and
for mailing a new one.

A plain class with no Temporal calls of its own: the clock, the check and the mail are given to
it, so the rules are unit-tested without a server (``tests/test_code_gate.py``) and the workflow
only delegates. The registration's own state (is a code pending for the caller? how does it end?)
comes in through ``Registration``.

Rules, each here once:
- a code gets ``max_attempts_per_code`` checks and the registration ``max_attempts_total``, or
  fewer when the email's earlier registrations spent its ``max_failures_per_window``
  (``PriorFailures``); the last wrong one locks the registration out;
- a resend is throttled to one per ``resend_interval`` and capped at ``max_resends``; it mails a
  new code, and the old one stops working;
- the first throttle counts from the start, unless the first mail went out later than
  ``FIRST_MAIL_GRACE`` (or half the interval): then from that mail, so two codes never go out
  back to back, and the time of the first mail never tells whether the email had an account;
- checks and resends never interleave: a resend holds the lock through its mail, since a code
  typed from the new mail must meet its own digest (the price: while a slow mail provider
  retries, a check of the old code waits);
- once a code is accepted (or staff approved), a code submitted again (a double click, a retry
  after a timeout) is checked without counting: the right one hears how the activation ends,
  any other only that nothing is pending.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Protocol

from activities.models import IssuedActivation
from workflows.models import (
    ActivationOutcome,
    ActivationReply,
    Approval,
    CodeSubmission,
    PriorFailures,
    RegistrationPolicy,
    ResendOutcome,
    ResendReply,
    ResendRequest,
)

FIRST_MAIL_GRACE = timedelta(seconds=10)

Verify = Callable[[IssuedActivation, CodeSubmission], Awaitable[bool]]
"""Checks a submission against the issued code (the workflow runs it as an activity); raises
``ProviderLockout`` when the provider that has the last word on codes refuses further checks."""
Issue = Callable[[int], Awaitable[IssuedActivation]]
"""Mails code number ``sequence`` and returns what is kept of it."""


class ProviderLockout(Exception):
    """The identity provider's own brute-force protection refused the check."""


class Registration(Protocol):
    """What the gate needs to know of the registration around it."""

    def pending_for_caller(self) -> bool:
        """Whether codes and resends are taken now."""
        ...

    def ended_unseen(self) -> bool:
        """Expired or locked out in this workflow task, before the run saw it."""
        ...

    def activation_underway(self) -> bool:
        """A code was accepted (or staff approved) and the account is being activated, or is
        active while the workflow still runs."""
        ...

    def outcome_for_caller(self) -> ActivationOutcome:
        """How a code submitted now is answered when nothing is pending."""
        ...


class CodeGate:
    def __init__(
        self,
        policy: RegistrationPolicy,
        started_at: datetime,
        clock: Callable[[], datetime],
        prior: PriorFailures | None = None,
    ) -> None:
        self._policy = policy
        self._prior = prior.count if prior else 0
        self._limit = min(policy.max_attempts_total, policy.max_failures_per_window - self._prior)
        """Wrong codes this registration may take in all."""
        self._first_failure_at = prior.since if prior else None
        self._started_at = started_at
        self._clock = clock
        self._lock = asyncio.Lock()
        self.issued: IssuedActivation | None = None
        self._issued_at: datetime | None = None
        self.resends = 0
        self._attempts_on_code = 0
        self.attempts_total = 0
        self._repeats = 0
        self.accepted = False
        """A submitted code was right."""
        self.approval: Approval | None = None
        self.locked_out = False

    # -- What the status query and the replies show ----------------------------------------------

    def attempts_left(self) -> int:
        return max(
            0,
            min(
                self._policy.max_attempts_per_code - self._attempts_on_code,
                self.total_attempts_left(),
            ),
        )

    def total_attempts_left(self) -> int:
        return max(0, self._limit - self.attempts_total)

    def carried(self) -> PriorFailures:
        """The email's wrong codes so far, for its next registration (``PriorFailures``)."""
        since = self._first_failure_at or self._started_at
        return PriorFailures(count=self._prior + self.attempts_total, since=since)

    def resends_left(self) -> int:
        return self._policy.max_resends - self.resends

    def next_resend_at(self) -> datetime | None:
        return self._issued_at + self._policy.resend_interval if self._issued_at else None

    @property
    def decided(self) -> bool:
        """The wait for activation is over: a code accepted, staff approved, or locked out."""
        return self.accepted or self.approval is not None or self.locked_out

    @property
    def let_in(self) -> bool:
        """Accepted or approved (and not locked out): the account is to be activated."""
        return (self.accepted or self.approval is not None) and not self.locked_out

    # -- Issuing ----------------------------------------------------------------------------------

    async def issue_first(self, issue: Issue) -> None:
        """Mails the first code (under the lock, so a resend waits for it)."""
        async with self._lock:
            await self._issue(issue)

    async def _issue(self, issue: Issue) -> None:
        sequence = (self.issued.sequence + 1) if self.issued else 1
        self.issued = await issue(sequence)
        now = self._clock()
        grace = min(FIRST_MAIL_GRACE, self._policy.resend_interval / 2)
        from_start = sequence == 1 and now - self._started_at <= grace
        self._issued_at = self._started_at if from_start else now
        self._attempts_on_code = 0

    async def resend(
        self, request: ResendRequest, registration: Registration, issue: Issue
    ) -> ResendReply:
        async with self._lock:
            if (
                not registration.pending_for_caller()
                or self.accepted
                or self.approval is not None  # approved in this task, before the run saw it
                or registration.ended_unseen()  # no code for a registration about to be undone
            ):
                return self._resend_reply(ResendOutcome.NOT_PENDING, registration)
            if self.resends >= self._policy.max_resends:
                return self._resend_reply(ResendOutcome.LIMIT_REACHED, registration)
            next_at = self.next_resend_at()
            if next_at is not None and self._clock() < next_at:
                return self._resend_reply(ResendOutcome.THROTTLED, registration)
            await self._issue(issue)
            self.resends += 1
            return self._resend_reply(ResendOutcome.SENT, registration)

    def _resend_reply(self, outcome: ResendOutcome, registration: Registration) -> ResendReply:
        pending = registration.pending_for_caller()
        return ResendReply(
            outcome=outcome,
            resends_left=self.resends_left(),
            next_resend_at=self.next_resend_at() if pending else None,
        )

    # -- Checking ---------------------------------------------------------------------------------

    async def check(
        self, submission: CodeSubmission, registration: Registration, verify: Verify
    ) -> ActivationReply:
        async with self._lock:
            if registration.activation_underway():
                return await self._check_repeated(submission, verify)
            if not registration.pending_for_caller():
                return ActivationReply(outcome=registration.outcome_for_caller())
            if self.locked_out or self._attempts_on_code >= self._policy.max_attempts_per_code:
                # Locked out on the total (which a resend does not reset) before the run saw it:
                # no check, not even of the right code.
                return ActivationReply(outcome=ActivationOutcome.TOO_MANY_ATTEMPTS, attempts_left=0)
            assert self.issued is not None, "pending for the caller only once a code is out"
            try:
                valid = await verify(self.issued, submission)
            except ProviderLockout:
                self.locked_out = True
                self.attempts_total = self._limit  # none left, as the status says
                return ActivationReply(outcome=ActivationOutcome.TOO_MANY_ATTEMPTS, attempts_left=0)
            if not registration.pending_for_caller():  # expired while checking
                return ActivationReply(outcome=registration.outcome_for_caller())
            if valid:
                self.accepted = True
                return ActivationReply(outcome=ActivationOutcome.ACTIVATED)
            return self._count_wrong()

    def _count_wrong(self) -> ActivationReply:
        self._attempts_on_code += 1
        self.attempts_total += 1
        self._first_failure_at = self._first_failure_at or self._clock()
        if self.attempts_total >= self._limit:
            self.locked_out = True
        left = self.attempts_left()
        outcome = ActivationOutcome.INVALID_CODE if left else ActivationOutcome.TOO_MANY_ATTEMPTS
        return ActivationReply(outcome=outcome, attempts_left=left)

    async def _check_repeated(self, submission: CodeSubmission, verify: Verify) -> ActivationReply:
        """Only the first few are checked (``max_attempts_per_code``): each check is an
        activity."""
        self._repeats += 1
        assert self.issued is not None
        if self._repeats <= self._policy.max_attempts_per_code:
            try:
                if await verify(self.issued, submission):
                    return ActivationReply(outcome=ActivationOutcome.ACTIVATED)
            except ProviderLockout:
                pass
        return ActivationReply(outcome=ActivationOutcome.NOT_PENDING)

    # -- Staff ------------------------------------------------------------------------------------

    def approve(self, approval: Approval) -> bool:
        """Takes the first approval; whether it was taken."""
        if self.approval is not None:
            return False
        self.approval = approval
        return True
