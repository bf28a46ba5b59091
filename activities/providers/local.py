"""The embedded default provider of the identity and customers roles: one SQLite file.

Why this shape:

* One connection on one dedicated worker thread. Every statement runs there, so calls are
  serialized (no locking in Python), the event loop never blocks on disk I/O, and the sqlite3
  connection stays on the thread that created it.
* WAL with ``synchronous=FULL``: readers never wait for the writer, and a commit is on disk
  before the activity reports it (one fsync of the WAL, ~0.4 ms on the benchmark machine, on the
  database thread). ``NORMAL`` would save that, but a power cut could then undo commits that a
  finished registration already reported: an active account gone, its customer number handed
  out again, while the Temporal server (also ``synchronous=full``) remembers them.
* Writes use ``BEGIN IMMEDIATE`` so a check-then-insert is atomic even if another process shares
  the file (``busy_timeout`` makes it wait for the lock instead of failing).
* Argon2id hashing (tens of milliseconds on purpose) runs on a pool of its own, one thread per
  core, not on the database thread, so it never holds up other registrations' database calls.
* Error messages name ids, never emails: they end up in workflow history and the Temporal UI.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from temporalio import activity

from activities.errors import (
    ConcurrentModification,
    ConfigurationError,
    Conflict,
    InvalidRequest,
    NotFound,
)
from activities.providers.spec import ProviderSpec, Resources
from activities.roles import (
    Customer,
    CustomerLink,
    IdentityCapabilities,
    Leftover,
    LeftoverPage,
    NewCustomer,
    NewPrincipal,
    Principal,
    activation_target,
)
from common.passwords import normalized

P = ParamSpec("P")
T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
FIRST_CUSTOMER_NUMBER = 100001

# OWASP Password Storage Cheat Sheet, Argon2id minimum: m=19 MiB, t=2, p=1.
ARGON2_MEMORY_KIB = 19456
ARGON2_ITERATIONS = 2
ARGON2_LANES = 1
ARGON2_SALT_BYTES = 16
ARGON2_HASH_BYTES = 32

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS principals (
    id              TEXT PRIMARY KEY,
    email           TEXT NOT NULL,
    email_canonical TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL,
    phone           TEXT,
    locale          TEXT,
    tenant          TEXT,
    password_hash   TEXT NOT NULL,
    active          INTEGER NOT NULL DEFAULT 0,
    customer_id     TEXT,
    customer_number TEXT,
    version         INTEGER NOT NULL DEFAULT 1,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
)""",
    """
CREATE TABLE IF NOT EXISTS customers (
    id              TEXT PRIMARY KEY,
    number          TEXT NOT NULL UNIQUE,
    email           TEXT NOT NULL,
    email_canonical TEXT NOT NULL UNIQUE,
    name            TEXT,
    phone           TEXT,
    tenant          TEXT,
    created_at      TEXT NOT NULL,
    profile         TEXT NOT NULL DEFAULT '{}'
)""",
    """
CREATE TABLE IF NOT EXISTS customer_number_sequences (
    prefix TEXT PRIMARY KEY,
    last   INTEGER NOT NULL
)""",
)
"""Created on open if missing. ``customer_number_sequences`` holds the last number per prefix."""


_ADDED_COLUMNS = {
    ("customers", "profile"): "TEXT NOT NULL DEFAULT '{}'",
    ("principals", "registration"): "TEXT",
    ("customers", "registration"): "TEXT",
}
"""Columns newer than some database files: added on open (``CREATE TABLE IF NOT EXISTS`` leaves
an existing table as it is). ``registration``: the workflow ID of the registration whose activity
created the row (``_registration``), for the sweep (``list_leftovers``); ``NULL`` for rows from
before the column and for customers created outside a registration (the import tool), which the
sweep never lists."""


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    for (table, column), definition in _ADDED_COLUMNS.items():
        present = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _registration() -> str | None:
    """The workflow ID of the registration whose activity is creating a row (a local activity
    too), ``None`` outside an activity (the import tool, a test). Read on the event loop: the
    activity context does not reach the database thread."""
    return activity.info().workflow_id if activity.in_activity() else None


@contextmanager
def _transaction(conn: sqlite3.Connection, *, commit: bool = True) -> Iterator[None]:
    """A write transaction that takes the write lock up front (no upgrade deadlocks); with
    ``commit=False`` rolled back at the end (a rehearsal: ``_rolled_back_insert``)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT" if commit else "ROLLBACK")


def _password_bytes(password: str) -> bytes:
    """What Argon2id hashes: the form the password policy judged (``passwords.normalized``)."""
    return normalized(password).encode("utf-8")


def _hash_password(password: str) -> str:
    kdf = Argon2id(
        salt=os.urandom(ARGON2_SALT_BYTES),
        length=ARGON2_HASH_BYTES,
        iterations=ARGON2_ITERATIONS,
        lanes=ARGON2_LANES,
        memory_cost=ARGON2_MEMORY_KIB,
    )
    return kdf.derive_phc_encoded(_password_bytes(password))


def _verify_password(password: str, phc: str | None) -> bool:
    """Check against the stored hash; without one, spend the same time and say no."""
    try:
        Argon2id.verify_phc_encoded(_password_bytes(password), phc or _dummy_hash())
    except InvalidKey:
        return False
    return phc is not None


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the principal is missing, so both cases take the same time."""
    return _hash_password(os.urandom(16).hex())


def _principal(row: sqlite3.Row) -> Principal:
    return Principal(
        id=row["id"],
        email=row["email"],
        name=row["name"],
        active=bool(row["active"]),
        version=str(row["version"]),
        customer_id=row["customer_id"],
        # Only registrations create principals here, inactive until activated: an inactive one
        # is a registration's leftover (a terminated run), which the next registration replaces.
        replaceable=not row["active"],
    )


def _customer(row: sqlite3.Row) -> Customer:
    return Customer(id=row["id"], number=row["number"], email=row["email"], name=row["name"])


class LocalDirectory:
    """Owns the SQLite file, its connection and its thread; hands out the two role objects."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-directory")
        # Argon2id gets its own pool, one thread per core: each hash takes 19 MiB that stays with
        # its thread, and more hashing threads than cores add memory, not throughput.
        self._hashing = ThreadPoolExecutor(
            max_workers=os.cpu_count() or 2, thread_name_prefix="argon2id"
        )
        self._conn: sqlite3.Connection | None = None
        try:
            # Opened on the database thread (sqlite3 connections are thread-bound) but waited for
            # here: a bad path stops the worker at start-up instead of failing the first activity.
            self._executor.submit(self._open).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            self._hashing.shutdown(wait=False)
            raise
        self.identity = LocalIdentity(self)
        self.customers = LocalCustomers(self)

    def _open(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions; writes use _transaction().
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            with _transaction(conn):
                for statement in _SCHEMA:
                    conn.execute(statement)
                _add_missing_columns(conn)
        except (OSError, sqlite3.Error) as exc:
            if conn is not None:
                conn.close()
            raise ConfigurationError(
                f"REGISTRATION_DATABASE: cannot open SQLite file {self.path}: {exc}"
            ) from exc
        self._conn = conn

    async def run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(connection, ...)`` on the database thread and await its result."""
        if self._closed:
            raise RuntimeError("LocalDirectory is closed")

        def job() -> T:  # runs on the database thread
            if self._conn is None:
                raise RuntimeError("LocalDirectory is closed")
            return fn(self._conn, *args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    async def link_customer_and_activate(
        self, principal_id: str, customer: NewCustomer
    ) -> tuple[CustomerLink, Principal]:
        """``OneStepActivation``: both tables are in this file, so step 5 is one transaction."""
        return await self.run(_link_and_activate, principal_id, customer, _now(), _registration())

    async def hash(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a password hash (or check) on the hashing pool."""
        return await asyncio.get_running_loop().run_in_executor(
            self._hashing, functools.partial(fn, *args, **kwargs)
        )

    async def aclose(self) -> None:
        """Close the connection after the calls already queued; idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close)
        finally:
            self._executor.shutdown(wait=False)
            self._hashing.shutdown(wait=False)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class LocalIdentity:
    """``IdentityProvider`` on the ``principals`` table."""

    in_process = True
    capabilities = IdentityCapabilities()
    """Separate login and customer records, the login created inactive at sign-up and deleted
    by compensation, our own codes."""

    def __init__(self, directory: LocalDirectory) -> None:
        self.directory = directory

    async def aclose(self) -> None:
        """Nothing to do: the ``LocalDirectory`` owns the connection."""

    async def find_principal(self, email_canonical: str) -> Principal | None:
        return await self.directory.run(_find_principal, email_canonical)

    async def get_principal(self, principal_id: str) -> Principal | None:
        return await self.directory.run(_get_principal, principal_id)

    async def create_principal(self, new: NewPrincipal, password: str) -> Principal:
        """Create inactive at version 1; the same id and email again returns it unchanged.

        Conflicts are checked before hashing so a retry or a duplicate does not pay for Argon2id,
        and again in the insert transaction in case something changed while hashing.
        """
        existing = await self.directory.run(_existing_principal, new)
        if existing is not None:
            return existing
        password_hash = await self.directory.hash(_hash_password, password)
        return await self.directory.run(
            _insert_principal, new, password_hash, _now(), _registration()
        )

    async def decoy_create(self, new: NewPrincipal, password: str) -> None:
        """The create's steps without a row: a read (the create's own check would refuse this
        email: it has an account), the Argon2id hash (20 ms and more: what would tell such an
        email from a new one), and the insert's transaction rolled back, so the database thread
        is queued for as often. What remains is the commit's fsync, ~0.4 ms."""
        await self.directory.run(_find_principal, new.email_canonical)
        await self.directory.hash(_hash_password, password)
        await self.directory.run(_rolled_back_insert, new)

    async def activate_principal(
        self,
        principal_id: str,
        customer_id: str | None,
        customer_number: str | None,
        expected_version: str,
    ) -> Principal:
        if customer_id is None or customer_number is None:  # separate records: always linked
            raise InvalidRequest(f"principal {principal_id}: activation without a customer")
        return await self.directory.run(
            _activate_principal, principal_id, customer_id, customer_number, expected_version
        )

    async def undo_principal(self, principal_id: str) -> bool:
        return await self.directory.run(_delete, "principals", principal_id)

    async def verify_password(self, principal_id: str, password: str) -> bool:
        """Whether ``password`` matches; ``False`` for an unknown principal (active or not)."""
        phc = await self.directory.run(_password_hash, principal_id)
        return await self.directory.hash(_verify_password, password, phc)

    async def list_leftovers(
        self, created_before: datetime, after: str | None, limit: int
    ) -> LeftoverPage:
        """``Leftovers``: the inactive principals (only registrations create principals here)."""
        return await self.directory.run(
            _leftovers, _LEFTOVER_PRINCIPALS, _iso(created_before), after, limit
        )


class LocalCustomers:
    """``CustomerProvider`` on the ``customers`` table with per-prefix number sequences."""

    in_process = True

    def __init__(self, directory: LocalDirectory) -> None:
        self.directory = directory

    async def aclose(self) -> None:
        """Nothing to do: the ``LocalDirectory`` owns the connection."""

    async def find_customer(self, email_canonical: str) -> Customer | None:
        return await self.directory.run(_find_customer, email_canonical)

    async def create_customer(self, new: NewCustomer) -> Customer:
        """Create with the next ``<prefix><n>`` number; the same id and email again returns it."""
        link = await self.link_or_create_customer(new)
        if not link.created:
            raise Conflict(f"email already belongs to customer {link.customer.id}")
        return link.customer

    async def link_or_create_customer(self, new: NewCustomer) -> CustomerLink:
        """Lookup and create in one transaction (see ``CustomerProvider``)."""
        return await self.directory.run(_link_or_insert_customer, new, _now(), _registration())

    async def undo_customer(self, customer_id: str) -> bool:
        return await self.directory.run(_delete, "customers", customer_id)

    async def list_leftovers(
        self, created_before: datetime, after: str | None, limit: int
    ) -> LeftoverPage:
        """``Leftovers``: customers a registration created (``registration`` recorded) that no
        active principal is linked to; imported ones and those from before the column never."""
        return await self.directory.run(
            _leftovers, _LEFTOVER_CUSTOMERS, _iso(created_before), after, limit
        )


# Database-thread functions: each takes the connection first and runs to completion there.


def _find_principal(conn: sqlite3.Connection, email_canonical: str) -> Principal | None:
    row = conn.execute(
        "SELECT * FROM principals WHERE email_canonical = ?", (email_canonical,)
    ).fetchone()
    return None if row is None else _principal(row)


def _get_principal(conn: sqlite3.Connection, principal_id: str) -> Principal | None:
    row = conn.execute("SELECT * FROM principals WHERE id = ?", (principal_id,)).fetchone()
    return None if row is None else _principal(row)


def _existing_principal(conn: sqlite3.Connection, new: NewPrincipal) -> Principal | None:
    """The principal a retried create already made, ``None`` if free; ``Conflict`` if taken."""
    row = conn.execute("SELECT * FROM principals WHERE id = ?", (new.id,)).fetchone()
    if row is not None:
        if row["email_canonical"] != new.email_canonical:
            raise Conflict(f"principal {new.id} already exists with another email")
        return _principal(row)
    other = conn.execute(
        "SELECT id FROM principals WHERE email_canonical = ?", (new.email_canonical,)
    ).fetchone()
    if other is not None:
        raise Conflict(f"email already belongs to principal {other['id']}")
    return None


def _rolled_back_insert(conn: sqlite3.Connection, new: NewPrincipal) -> None:
    """``_insert_principal``'s transaction, write lock and check included, without the row (the
    check refuses the email: it has an account)."""
    with _transaction(conn, commit=False), suppress(Conflict):
        _existing_principal(conn, new)


def _insert_principal(
    conn: sqlite3.Connection,
    new: NewPrincipal,
    password_hash: str,
    now: str,
    registration: str | None = None,
) -> Principal:
    with _transaction(conn):
        existing = _existing_principal(conn, new)
        if existing is not None:
            return existing
        conn.execute(
            "INSERT INTO principals (id, email, email_canonical, name, phone, locale, tenant,"
            " password_hash, active, version, created_at, updated_at, registration)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 1, ?, ?, ?)",
            (
                new.id,
                new.email,
                new.email_canonical,
                new.name,
                new.phone,
                new.locale,
                new.tenant,
                password_hash,
                now,
                now,
                registration,
            ),
        )
        row = conn.execute("SELECT * FROM principals WHERE id = ?", (new.id,)).fetchone()
    return _principal(row)


def _activate_in(
    conn: sqlite3.Connection,
    principal_id: str,
    customer_id: str,
    customer_number: str,
    expected_version: str,
) -> Principal:
    """Compare-and-set on ``version``: strict, even if the principal is already activated (within
    the caller's transaction; ``_activate_principal`` is the call in a transaction of its own)."""
    try:
        expected = int(expected_version)
    except ValueError:
        expected = -1  # not a version this provider issued: can never match
    updated = conn.execute(
        "UPDATE principals SET active = 1, customer_id = ?, customer_number = ?,"
        " version = version + 1, updated_at = ? WHERE id = ? AND version = ?",
        (customer_id, customer_number, _now(), principal_id, expected),
    ).rowcount
    row = conn.execute("SELECT * FROM principals WHERE id = ?", (principal_id,)).fetchone()
    if row is None:
        raise NotFound(f"principal {principal_id} does not exist")
    if updated == 0:
        raise ConcurrentModification(
            f"principal {principal_id}: expected version {expected_version},"
            f" current version {row['version']}"
        )
    return _principal(row)


def _link_and_activate(
    conn: sqlite3.Connection,
    principal_id: str,
    new: NewCustomer,
    now: str,
    registration: str | None = None,
) -> tuple[CustomerLink, Principal]:
    """Step 5 in one transaction: a failure (the principal gone, or active for another customer)
    rolls the customer back too, and nothing can change the principal in between."""
    with _transaction(conn):
        link = _link_or_insert_in(conn, new, now, registration)
        customer = link.customer
        principal = activation_target(_get_principal(conn, principal_id), principal_id, customer.id)
        if not principal.active:
            principal = _activate_in(
                conn, principal_id, customer.id, customer.number, principal.version
            )
    return link, principal


def _password_hash(conn: sqlite3.Connection, principal_id: str) -> str | None:
    row = conn.execute(
        "SELECT password_hash FROM principals WHERE id = ?", (principal_id,)
    ).fetchone()
    return None if row is None else str(row["password_hash"])


def _find_customer(conn: sqlite3.Connection, email_canonical: str) -> Customer | None:
    row = conn.execute(
        "SELECT * FROM customers WHERE email_canonical = ?", (email_canonical,)
    ).fetchone()
    return None if row is None else _customer(row)


def _next_customer_number(conn: sqlite3.Connection, prefix: str) -> str:
    """The prefix's next number that no customer has yet. Numbers of different prefixes can
    meet ("C" at 1100001 and "C1" at 100001 both read C1100001), and an imported customer may
    carry any number: a taken one is skipped instead of failing the insert on the unique index."""
    while True:
        conn.execute(
            "INSERT INTO customer_number_sequences (prefix, last) VALUES (?, ?)"
            " ON CONFLICT (prefix) DO UPDATE SET last = last + 1",
            (prefix, FIRST_CUSTOMER_NUMBER),
        )
        (last,) = conn.execute(
            "SELECT last FROM customer_number_sequences WHERE prefix = ?", (prefix,)
        ).fetchone()
        number = f"{prefix}{last}"
        if conn.execute("SELECT 1 FROM customers WHERE number = ?", (number,)).fetchone() is None:
            return number


def _link_or_insert_in(
    conn: sqlite3.Connection, new: NewCustomer, now: str, registration: str | None = None
) -> CustomerLink:
    """Look up, allocate the number and insert, within the caller's transaction (so nobody can
    take the email in between, and a customer found by email burns no number);
    ``_link_or_insert_customer`` is the call in a transaction of its own."""
    row = conn.execute("SELECT * FROM customers WHERE id = ?", (new.id,)).fetchone()
    if row is not None:
        if row["email_canonical"] != new.email_canonical:
            raise Conflict(f"customer {new.id} already exists with another email")
        return CustomerLink(customer=_customer(row), created=True)
    other = conn.execute(
        "SELECT * FROM customers WHERE email_canonical = ?", (new.email_canonical,)
    ).fetchone()
    if other is not None:
        return CustomerLink(customer=_customer(other), created=False)
    number = _next_customer_number(conn, new.number_prefix)
    conn.execute(
        "INSERT INTO customers (id, number, email, email_canonical, name, phone, tenant,"
        " created_at, profile, registration) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new.id,
            number,
            new.email,
            new.email_canonical,
            new.name,
            new.phone,
            new.tenant,
            now,
            json.dumps(new.profile),
            registration,
        ),
    )
    customer = Customer(id=new.id, number=number, email=new.email, name=new.name)
    return CustomerLink(customer=customer, created=True)


def _delete(conn: sqlite3.Connection, table: str, record_id: str) -> bool:
    """Idempotent delete: ``False`` when the row was already gone."""
    assert table in {"principals", "customers"}
    return conn.execute(f"DELETE FROM {table} WHERE id = ?", (record_id,)).rowcount > 0  # noqa: S608


_LEFTOVER_PRINCIPALS = (
    "SELECT id, email_canonical, registration, created_at FROM principals"
    " WHERE active = 0 AND created_at < ? AND id > ? ORDER BY id LIMIT ?"
)
_LEFTOVER_CUSTOMERS = (
    "SELECT id, email_canonical, registration, created_at FROM customers c"
    " WHERE registration IS NOT NULL AND created_at < ? AND id > ?"
    " AND NOT EXISTS (SELECT 1 FROM principals p WHERE p.customer_id = c.id AND p.active = 1)"
    " ORDER BY id LIMIT ?"
)


def _iso(moment: datetime) -> str:
    """As ``_now`` writes ``created_at`` (UTC, so the text compares like the time)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _leftovers(
    conn: sqlite3.Connection, query: str, created_before: str, after: str | None, limit: int
) -> LeftoverPage:
    rows = conn.execute(query, (created_before, after or "", limit)).fetchall()
    records = [
        Leftover(
            id=row["id"],
            email_canonical=row["email_canonical"],
            registration=row["registration"],
            created_at=datetime.fromisoformat(row["created_at"]),
        )
        for row in rows
    ]
    return LeftoverPage(records=records, after=records[-1].id if len(records) == limit else None)


def _in_own_transaction(
    fn: Callable[Concatenate[sqlite3.Connection, P], T],
) -> Callable[Concatenate[sqlite3.Connection, P], T]:
    """``fn`` (a ``..._in`` helper, which runs within its caller's transaction) as a database
    call of its own: one write transaction around it."""

    def call(conn: sqlite3.Connection, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with _transaction(conn):
            return fn(conn, *args, **kwargs)

    return call


_activate_principal = _in_own_transaction(_activate_in)
_link_or_insert_customer = _in_own_transaction(_link_or_insert_in)


def _directory(resources: Resources) -> LocalDirectory:
    """One SQLite file for both roles (``Resources.shared``)."""
    path = resources.settings.database_path
    return resources.shared("local", lambda: LocalDirectory(path))


SPEC = ProviderSpec(
    name="local",
    identity=lambda resources: _directory(resources).identity,
    customers=lambda resources: _directory(resources).customers,
    capabilities=LocalIdentity.capabilities,
    listable_leftovers=True,
)
