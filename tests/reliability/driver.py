"""The load driver: registrations with a chosen mix of endings, driven as a backend would drive
them through ``starter.client.RegistrationClient``.

Every call that raises one of the client's documented retryable errors (``ServerUnreachable``,
``Busy``, ``NoWorkerAnswered``) is tried again, with the same ``request_id`` where the call takes
one, until ``CALL_DEADLINE``; each retry is counted by error. Codes are read from the mails, as a
customer reads them. Anything else a call raises, or an answer that contradicts the intended
ending, is recorded as a problem of that registration (``Record.problems``): the suite fails on
any.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import random
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import TypeVar

from starter.client import (
    Busy,
    NotPending,
    NoWorkerAnswered,
    RegistrationClient,
    ServerUnreachable,
    UnknownRegistration,
)
from tests.helpers import PASSWORD, wrong_code
from tests.reliability.harness import Mailbox
from workflows.models import (
    ActivationOutcome,
    RegistrationState,
    RegistrationStatus,
    ResendOutcome,
)

T = TypeVar("T")

RETRYABLE = (ServerUnreachable, Busy, NoWorkerAnswered)
"""The client's documented retryable errors; anything else a call raises is a violation."""
OUTAGES = (ServerUnreachable, NoWorkerAnswered)
PENDING_TIMEOUT = 300.0
CALL_DEADLINE = 300.0
"""Seconds a call is retried for: longer than any outage the suite injects."""
MAIL_TIMEOUT = 300.0
GUESSES = 50
"""Wrong codes sent at once by the brute force of a registration meant to lock."""
SHORT_TTL = timedelta(minutes=1)
"""The activation window of the registrations left to expire (the lower bound)."""


class Ending(StrEnum):
    ACTIVATED = "activated"
    """By the code of the newest mail (a third of them after a resend)."""
    EXPIRED = "expired"
    """Left alone with a one-minute activation window."""
    CANCELLED = "cancelled"
    """Cancelled once its first mail is out."""
    LOCKED = "locked"
    """Brute-forced: 50 parallel wrong codes, a resend, 50 more."""


STATE = {
    Ending.ACTIVATED: RegistrationState.ACTIVE,
    Ending.EXPIRED: RegistrationState.EXPIRED,
    Ending.CANCELLED: RegistrationState.CANCELLED,
    Ending.LOCKED: RegistrationState.LOCKED,
}
"""The state each intended ending must end in."""


@dataclass
class Record:
    """One registration: what was meant, what the driver saw, and when."""

    email: str
    ending: Ending
    resend: bool = False
    registration_id: str = ""
    registered_at: float | None = None
    """Epoch seconds when the first ``register`` call was made."""
    first_mail_at: float | None = None
    pending_at: float | None = None
    """When the registration first answered ``pending`` (it takes codes) after the mail came."""
    active_at: float | None = None
    """When ``submit_code`` answered ``activated``."""
    retries: Counter[str] = field(default_factory=Counter)
    floods: list[Counter[str]] = field(default_factory=list)
    """Per flood, the answers to its guesses (an exception by its class name)."""
    counted: list[int] = field(default_factory=list)
    """Wrong codes the registration had counted after each flood (from its status)."""
    problems: list[str] = field(default_factory=list)
    done: bool = False


def described(err: BaseException) -> str:
    """An unexpected exception: its class, the RPC status if any, and the client calls it came
    through (the ``starter/client.py`` frames)."""
    status = getattr(err, "status", None)
    calls = [
        frame.name
        for frame in traceback.extract_tb(err.__traceback__)
        if frame.filename.endswith(("starter/client.py", "driver.py"))
    ]
    named = f" ({status.name})" if isinstance(status, enum.Enum) else ""
    return f"{type(err).__name__}{named}: {err} in {' > '.join(calls)}"


def plan(count: int, domain: str) -> list[Record]:
    """``count`` registrations, in sixths: half activated (every third of those after a resend),
    a sixth each expired, cancelled and locked."""
    records = []
    for index in range(count):
        kind = index % 6
        ending = (Ending.ACTIVATED,) * 3 + (Ending.EXPIRED, Ending.CANCELLED, Ending.LOCKED)
        records.append(
            Record(
                email=f"user{index:04d}.{uuid.uuid4().hex[:6]}@{domain}",
                ending=ending[kind],
                resend=kind == 2,
            )
        )
    return records


@dataclass
class Limits:
    per_code: int
    total: int


class Driver:
    def __init__(
        self,
        registrations: RegistrationClient,
        flooder: RegistrationClient,
        mailbox: Mailbox,
        limits: Limits,
        rng: random.Random,
    ) -> None:
        self.registrations = registrations
        self.flooder = flooder
        """A client without the per-email limit: the brute force comes from many processes."""
        self.mailbox = mailbox
        self.limits = limits
        self.rng = rng

    async def retrying(
        self,
        record: Record,
        call: Callable[[], Awaitable[T]],
        retryable: tuple[type[Exception], ...] = RETRYABLE,
    ) -> T:
        deadline = time.monotonic() + CALL_DEADLINE
        while True:
            try:
                return await call()
            except retryable as err:
                record.retries[type(err).__name__] += 1
                if time.monotonic() > deadline:
                    raise
                pause = 0.2 if isinstance(err, Busy) else 1.0
                await asyncio.sleep(pause * (1 + self.rng.random()))

    async def run_all(self, records: list[Record], concurrency: int, spacing: float) -> None:
        """All of them, started ``spacing`` seconds apart, at most ``concurrency`` being driven
        at once (a registration left to expire or lock waits for its timer without a place)."""
        places = asyncio.Semaphore(concurrency)

        async def one(record: Record, delay: float) -> None:
            await asyncio.sleep(delay)
            async with places:
                try:
                    await self.run(record)
                except Exception as err:
                    record.problems.append(f"driver: {described(err)}")
                record.done = True

        await asyncio.gather(*(one(r, i * spacing) for i, r in enumerate(records)))

    async def run(self, record: Record) -> None:
        email = record.email
        record.registration_id = self.registrations.registration_id(email)
        ttl = SHORT_TTL if record.ending is Ending.EXPIRED else None
        record.registered_at = time.time()
        await self.retrying(
            record,
            lambda: self.registrations.register(
                email=email, name="Reliability Tester", password=PASSWORD, activation_ttl=ttl
            ),
        )
        first = await self.mailbox.wait_for_activation(email, 1, MAIL_TIMEOUT)
        record.first_mail_at = first[0].at
        await self.wait_pending(record)
        if record.ending is Ending.ACTIVATED:
            if record.resend:
                await self.resend(record)
            await self.activate(record)
        elif record.ending is Ending.CANCELLED:
            await self.cancel(record)
        elif record.ending is Ending.LOCKED:
            await self.lock(record)

    async def wait_pending(self, record: Record) -> None:
        """Until the registration takes codes: a mail can arrive before the workflow has
        recorded that it went out (an answer lost on the way back), and a code submitted then
        is answered ``not_pending``, as a backend would see it. Timed (``pending_at``)."""
        deadline = time.monotonic() + PENDING_TIMEOUT
        while True:
            status = await self.retrying(
                record, functools.partial(self.registrations.status, record.email)
            )
            if status.state is RegistrationState.PENDING:
                record.pending_at = time.time()
                return
            if status.state is not RegistrationState.STARTING or time.monotonic() > deadline:
                record.problems.append(f"{status.state.value} after its first mail")
                return
            await asyncio.sleep(0.1)

    def newest_code(self, record: Record) -> str:
        code = self.mailbox.activations(record.email)[-1].code
        assert code is not None, f"no code in the newest mail to {record.email}"
        return code

    async def activate(self, record: Record) -> None:
        """The newest mail's code. A code answered ``invalid_code`` was overtaken by a newer
        mail (a retried ``register`` after a lost answer resends): the newest one is tried."""
        for _ in range(3):
            code, request_id = self.newest_code(record), str(uuid.uuid4())
            reply = await self.retrying(
                record,
                functools.partial(
                    self.registrations.submit_code, record.email, code, request_id=request_id
                ),
            )
            if reply.outcome is ActivationOutcome.ACTIVATED:
                record.active_at = time.time()
                return
            if reply.outcome is not ActivationOutcome.INVALID_CODE:
                break
            record.retries["code overtaken"] += 1
            await asyncio.sleep(1.0)
        record.problems.append(f"the mailed code was answered {reply.outcome.value}")

    async def resend(self, record: Record) -> None:
        """One more code (waiting out the throttle), and its mail."""
        mails = len(self.mailbox.activations(record.email))
        while True:
            request_id = str(uuid.uuid4())
            reply = await self.retrying(
                record,
                functools.partial(self.registrations.resend, record.email, request_id=request_id),
            )
            if reply.outcome is ResendOutcome.SENT:
                break
            if reply.outcome is not ResendOutcome.THROTTLED:
                record.problems.append(f"resend answered {reply.outcome.value}")
                return
            record.retries["resend throttled"] += 1
            wait = (reply.next_resend_at.timestamp() - time.time()) if reply.next_resend_at else 1
            await asyncio.sleep(min(max(wait, 0.1), 5.0))
        await self.mailbox.wait_for_activation(record.email, mails + 1, MAIL_TIMEOUT)

    async def cancel(self, record: Record) -> None:
        try:
            await self.retrying(
                record, lambda: self.registrations.cancel(record.email, "reliability suite")
            )
        except NotPending as err:
            # A retry after the first try took effect (its answer lost in an outage).
            if not (record.retries and err.state == RegistrationState.CANCELLED.value):
                raise

    async def flood(self, record: Record, code: str) -> None:
        """``GUESSES`` wrong codes at once, each retried through outages with its own request
        id. ``Busy`` is an answer here: the attacker's guess was refused, not counted."""

        async def guess(offset: int) -> str:
            request_id = str(uuid.uuid4())
            wrong = wrong_code(code, offset)
            try:
                reply = await self.retrying(
                    record,
                    functools.partial(
                        self.flooder.submit_code, record.email, wrong, request_id=request_id
                    ),
                    OUTAGES,
                )
            except (Busy, NotPending, UnknownRegistration) as err:
                return type(err).__name__
            return reply.outcome.value

        answers = await asyncio.gather(*(guess(n) for n in range(1, GUESSES + 1)))
        record.floods.append(Counter(answers))
        if ActivationOutcome.ACTIVATED.value in answers:
            record.problems.append("a wrong code activated")

    async def spend(
        self, record: Record, code: str, spent: Callable[[RegistrationStatus], bool]
    ) -> None:
        """Floods until ``spent`` holds for the registration's status (on a server with
        Temporal's default limit of 10 updates in flight, most guesses are ``Busy``, so one flood
        may not get enough through); the wrong codes it then counted go to ``Record.counted``."""
        for _ in range(5):
            await self.flood(record, code)
            status = await self.retrying(
                record, functools.partial(self.registrations.status, record.email)
            )
            if spent(status):
                record.counted.append(self.limits.total - status.attempts_left)
                return
        record.problems.append(f"5 floods did not spend the code: {status}")

    async def lock(self, record: Record) -> None:
        """Floods of 50 wrong codes at once until the code's limit is spent (it holds: exactly
        that many counted), a resend, floods until the total's limit locks, then the right code
        of the newest mail, which must not activate."""
        await self.spend(record, self.newest_code(record), lambda s: s.code_attempts_left == 0)
        await self.resend(record)
        code = self.newest_code(record)
        await self.spend(
            record, code, lambda s: s.attempts_left == 0 or s.state is RegistrationState.LOCKED
        )
        try:
            reply = await self.retrying(
                record, functools.partial(self.registrations.submit_code, record.email, code)
            )
        except (NotPending, UnknownRegistration):
            return
        if reply.outcome is ActivationOutcome.ACTIVATED:
            record.problems.append("the right code activated a locked registration")
