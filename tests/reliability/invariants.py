"""The invariants, read from the stores themselves once every registration's run has ended:
Temporal (each workflow's status and result), the identity and customer records (the local
provider's SQLite file or the state of the Hantera simulator's process, read through its
``/_sim/`` endpoints), and the mails delivered.

Each check returns the violations it found, one line each, naming the email; none is the pass.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from activities.rendering import WELCOME
from starter.client import RegistrationClient
from tests.reliability.driver import STATE, Ending, Record
from tests.reliability.harness import Mailbox
from tests.simulators.hantera import Inspection
from workflows.models import RegistrationResult, RegistrationState

CLOSE_TIMEOUT = 300.0
"""Seconds to wait for the runs to end: the longest ending is a minute after its last step."""


async def _retried(call: Any, attempts: int = 60) -> Any:
    """A read of Temporal, tried again through an outage (the last chaos event may still be
    recovering)."""
    for attempt in range(attempts):
        try:
            return await call()
        except RPCError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(1.0)


async def wait_closed(client: Client, records: Iterable[Record]) -> list[str]:
    """Until every registration's run has closed; those still open after ``CLOSE_TIMEOUT``. One
    whose driving failed (a violation already) may never end: not waited for."""
    open_ = {r.registration_id: r for r in records if r.registration_id and not r.problems}
    deadline = time.monotonic() + CLOSE_TIMEOUT
    while open_ and time.monotonic() < deadline:
        for workflow_id in list(open_):
            handle = client.get_workflow_handle(workflow_id)
            description = await _retried(handle.describe)
            if description.status is not WorkflowExecutionStatus.RUNNING:
                del open_[workflow_id]
        if open_:
            await asyncio.sleep(2.0)
    return [f"{r.email}: still running after {CLOSE_TIMEOUT:g} s" for r in open_.values()]


async def endings(client: Client, records: Iterable[Record]) -> dict[str, str]:
    """Each registration's ending as Temporal has it: a completed run's result state,
    ``cancelled`` for a cancelled run, else Temporal's status (``failed``, ``terminated``...)."""
    found: dict[str, str] = {}
    for record in records:
        handle = client.get_workflow_handle(record.registration_id, result_type=RegistrationResult)
        description = await _retried(handle.describe)
        status = description.status
        if status is WorkflowExecutionStatus.COMPLETED:
            result: RegistrationResult = await _retried(handle.result)
            found[record.email] = result.state.value
        elif status is WorkflowExecutionStatus.CANCELED:
            found[record.email] = RegistrationState.CANCELLED.value
        else:
            found[record.email] = status.name.lower() if status else "unknown"
    return found


def ended_as_intended(records: Iterable[Record], ended: dict[str, str]) -> list[str]:
    return [
        f"{r.email}: meant to end {STATE[r.ending].value}, ended {ended.get(r.email)}"
        for r in records
        if ended.get(r.email) != STATE[r.ending].value
    ]


def driver_problems(records: Iterable[Record]) -> list[str]:
    return [f"{r.email}: {problem}" for r in records for problem in r.problems]


def limits_held(records: Iterable[Record], per_code: int, total: int) -> list[str]:
    """The brute force: after the first flood exactly the code's limit was counted, after the
    second exactly the total; no flood got more ``invalid_code`` answers than a code allows."""
    found = []
    for record in records:
        if record.ending is not Ending.LOCKED:
            continue
        if record.counted != [per_code, total]:
            found.append(f"{record.email}: wrong codes counted {record.counted}, not"
                         f" [{per_code}, {total}]")  # fmt: skip
        for flood in record.floods:
            if flood["invalid_code"] > per_code:
                found.append(f"{record.email}: {flood['invalid_code']} codes answered invalid")
    return found


async def code_sequences(registrations: RegistrationClient, email: str, max_resends: int) -> int:
    """How many codes the registration issued (1 + its resends), from its own status."""
    status = await _retried(lambda: registrations.status(email))
    return 1 + max_resends - int(status.resends_left)


async def mails_per_sequence(
    registrations: RegistrationClient,
    mailbox: Mailbox,
    records: Iterable[Record],
    max_resends: int,
) -> list[str]:
    """One activation mail per code sequence, each with its own code; one welcome mail for an
    activated email, none for the others; nothing else."""
    found = []
    for record in records:
        email = record.email
        sequences = await code_sequences(registrations, email, max_resends)
        activations = mailbox.activations(email)
        codes = {mail.code for mail in activations}
        if len(activations) != sequences or len(codes) != sequences:
            found.append(f"{email}: {len(activations)} activation mails with {len(codes)} codes"
                         f" for {sequences} code sequences")  # fmt: skip
        welcomes = [mail for mail in mailbox.to(email) if mail.category == WELCOME]
        wanted = 1 if record.ending is Ending.ACTIVATED else 0
        if len(welcomes) != wanted:
            found.append(f"{email}: {len(welcomes)} welcome mails, not {wanted}")
        others = len(mailbox.to(email)) - len(activations) - len(welcomes)
        if others:
            found.append(f"{email}: {others} other mails")
    return found


_ACTIVATION_KEY = re.compile(r"^(?P<workflow>.+)/(?P<run>[^/]+)/activation/(?P<sequence>\d+)/")


def sendings_per_sequence(mailbox: Mailbox, records: Iterable[Record]) -> list[str]:
    """Where the provider shows the idempotency key (Hantera): exactly one sending per run and
    code sequence, the sequences 1, 2, ... without a gap."""
    found = []
    for record in records:
        per_sequence: dict[str, Counter[int]] = defaultdict(Counter)
        for mail in mailbox.activations(record.email):
            if mail.key is None:  # the outbox keeps only a digest of it
                continue
            match = _ACTIVATION_KEY.match(mail.key)
            if match is None:
                found.append(f"{record.email}: activation mail without its key: {mail.key!r}")
                continue
            per_sequence[match["run"]][int(match["sequence"])] += 1
        for run, counts in per_sequence.items():
            if set(counts) != set(range(1, len(counts) + 1)) or set(counts.values()) != {1}:
                found.append(f"{record.email}: run {run} mailed sequences {dict(counts)}")
    return found


# Identity and customer records ------------------------------------------------------------------


async def local_records(database: Path, records: Iterable[Record]) -> list[str]:
    """The local provider's SQLite file: no inactive principal; every customer linked from an
    active principal; for each activated email one active principal linked to the one customer
    of that email; for the other emails neither."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        principals = connection.execute(
            "SELECT email_canonical, active, customer_id FROM principals"
        ).fetchall()
        customers = connection.execute("SELECT id, email_canonical FROM customers").fetchall()
    finally:
        connection.close()
    return _records_check(
        records,
        principals=[(email, bool(active), customer) for email, active, customer in principals],
        customers=[(customer_id, email) for customer_id, email in customers],
    )


async def hantera_records(simulator: Inspection, records: Iterable[Record]) -> list[str]:
    """The same of the simulator's principals and customer assets."""
    principals = []
    for principal in await simulator.principals():
        properties = principal.get("properties") or {}
        email = str(principal.get("email") or properties.get("email") or "").lower()
        principals.append((email, properties.get("activated") is True, properties.get("actorId")))
    customers = [
        (asset["assetId"], str((asset.get("dynamic") or {}).get("email") or "").lower())
        for asset in await simulator.assets()
        if asset.get("typeKey") == "customer"
    ]
    return _records_check(records, principals=principals, customers=customers)


def _records_check(
    records: Iterable[Record],
    *,
    principals: list[tuple[str, bool, str | None]],
    customers: list[tuple[str, str]],
) -> list[str]:
    found = []
    for email, active, _ in principals:
        if not active:
            found.append(f"{email}: an inactive principal after its run ended")
    linked = {customer for _, active, customer in principals if active and customer}
    for customer_id, email in customers:
        if customer_id not in linked:
            found.append(f"{email}: customer {customer_id} without an active principal")
    principals_of: dict[str, list[tuple[bool, str | None]]] = defaultdict(list)
    for email, active, customer in principals:
        principals_of[email].append((active, customer))
    customers_of: dict[str, list[str]] = defaultdict(list)
    for customer_id, email in customers:
        customers_of[email].append(customer_id)
    for record in records:
        email = record.email.lower()
        mine, theirs = principals_of.get(email, []), customers_of.get(email, [])
        if record.ending is Ending.ACTIVATED:
            if len(theirs) != 1:
                found.append(f"{email}: {len(theirs)} customers for an activated email")
            if [active for active, _ in mine] != [True] or (theirs and mine[0][1] != theirs[0]):
                found.append(f"{email}: principals {mine} for its customers {theirs}")
        elif mine or theirs:
            found.append(f"{email}: ended {record.ending.value} but has principals {mine} and"
                         f" customers {theirs}")  # fmt: skip
    return found
