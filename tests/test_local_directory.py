"""The local SQLite provider against a real database file in tmp_path."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from activities.errors import ConcurrentModification, ConfigurationError, Conflict, NotFound
from activities.providers.local import LocalDirectory
from activities.roles import CustomerProvider, IdentityProvider, NewCustomer, NewPrincipal

PASSWORD = "correct horse battery staple 42"


@pytest.fixture
async def directory(tmp_path: Path) -> AsyncIterator[LocalDirectory]:
    d = LocalDirectory(tmp_path / "directory.sqlite3")
    try:
        yield d
    finally:
        await d.aclose()


def new_principal(n: int = 1, email: str | None = None) -> NewPrincipal:
    email = email or f"User{n}@Example.com"
    return NewPrincipal(
        id=f"p-{n}",
        email=email,
        email_canonical=email.lower(),
        name=f"User {n}",
        phone="+4930123456",
        locale="de-DE",
    )


def new_customer(n: int = 1, email: str | None = None, prefix: str = "CUST") -> NewCustomer:
    email = email or f"user{n}@example.com"
    return NewCustomer(
        id=f"c-{n}",
        email=email,
        email_canonical=email.lower(),
        name=f"User {n}",
        number_prefix=prefix,
    )


def raw_row(path: Path, sql: str, *params: object) -> tuple[object, ...] | None:
    """Read through a separate connection: what is really committed to the file."""
    with sqlite3.connect(path) as conn:
        row = conn.execute(sql, params).fetchone()
    conn.close()
    return None if row is None else tuple(row)


def database_files(folder: Path) -> dict[str, bytes]:
    """The database file with its -wal and -shm companions, by name."""
    return {p.name: p.read_bytes() for p in folder.glob("directory.sqlite3*")}


async def test_role_objects_satisfy_protocols(directory: LocalDirectory) -> None:
    identity: IdentityProvider = directory.identity
    customers: CustomerProvider = directory.customers
    assert identity.in_process is True
    assert customers.in_process is True


async def test_database_calls_run_on_the_dedicated_thread(directory: LocalDirectory) -> None:
    name = await directory.run(lambda conn: threading.current_thread().name)
    assert name.startswith("local-directory")
    assert name != threading.current_thread().name


async def test_wal_mode_and_pragmas(directory: LocalDirectory) -> None:
    assert raw_row(directory.path, "PRAGMA journal_mode") == ("wal",)
    synchronous, busy = await directory.run(
        lambda conn: (
            conn.execute("PRAGMA synchronous").fetchone()[0],
            conn.execute("PRAGMA busy_timeout").fetchone()[0],
        )
    )
    assert synchronous == 2  # FULL: a reported commit survives a power cut
    assert busy > 0


async def test_parent_folder_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "dir.sqlite3"
    d = LocalDirectory(path)
    try:
        assert path.exists()
        assert await d.identity.find_principal("nobody@example.com") is None
    finally:
        await d.aclose()


def test_unusable_path_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigurationError, match="REGISTRATION_DATABASE"):
        LocalDirectory(blocker / "dir.sqlite3")


async def test_closed_directory_refuses_calls_and_aclose_is_idempotent(tmp_path: Path) -> None:
    d = LocalDirectory(tmp_path / "dir.sqlite3")
    await d.aclose()
    await d.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await d.identity.get_principal("p-1")


# Identity


async def test_create_find_get_principal(directory: LocalDirectory) -> None:
    identity = directory.identity
    created = await identity.create_principal(new_principal(1), PASSWORD)
    assert created.id == "p-1"
    assert created.email == "User1@Example.com"
    assert created.name == "User 1"
    assert created.active is False
    assert created.version == "1"
    assert created.customer_id is None
    assert await identity.find_principal("user1@example.com") == created
    assert await identity.get_principal("p-1") == created
    assert await identity.find_principal("User1@Example.com") is None  # canonical key only
    assert await identity.get_principal("p-2") is None


async def test_create_principal_is_idempotent_and_does_not_rehash(
    directory: LocalDirectory,
) -> None:
    identity = directory.identity
    first = await identity.create_principal(new_principal(1), PASSWORD)
    stored = raw_row(directory.path, "SELECT password_hash FROM principals WHERE id='p-1'")
    again = await identity.create_principal(new_principal(1), "another password entirely")
    assert again == first
    assert raw_row(directory.path, "SELECT password_hash FROM principals WHERE id='p-1'") == stored
    assert await identity.verify_password("p-1", PASSWORD) is True
    assert await identity.verify_password("p-1", "another password entirely") is False
    assert raw_row(directory.path, "SELECT count(*) FROM principals") == (1,)


async def test_duplicate_email_is_a_conflict(directory: LocalDirectory) -> None:
    identity = directory.identity
    await identity.create_principal(new_principal(1, "same@example.com"), PASSWORD)
    with pytest.raises(Conflict) as info:
        await identity.create_principal(new_principal(2, "Same@Example.com"), PASSWORD)
    assert info.value.type == "Conflict"
    assert info.value.non_retryable is True
    assert "same@example.com" not in str(info.value).lower()  # no PII in workflow history
    assert await identity.get_principal("p-2") is None


async def test_same_id_with_other_email_is_a_conflict(directory: LocalDirectory) -> None:
    identity = directory.identity
    await identity.create_principal(new_principal(1, "a@example.com"), PASSWORD)
    with pytest.raises(Conflict):
        await identity.create_principal(new_principal(1, "b@example.com"), PASSWORD)


async def test_activate_with_current_version(directory: LocalDirectory) -> None:
    identity = directory.identity
    created = await identity.create_principal(new_principal(1), PASSWORD)
    activated = await identity.activate_principal("p-1", "c-1", "CUST100001", created.version)
    assert activated.active is True
    assert activated.customer_id == "c-1"
    assert activated.version == "2"
    assert await identity.get_principal("p-1") == activated
    assert raw_row(
        directory.path, "SELECT active, customer_number, version FROM principals WHERE id='p-1'"
    ) == (1, "CUST100001", 2)


async def test_activate_with_stale_version_is_concurrent_modification(
    directory: LocalDirectory,
) -> None:
    identity = directory.identity
    await identity.create_principal(new_principal(1), PASSWORD)
    await identity.activate_principal("p-1", "c-1", "CUST100001", "1")
    # Strict: even re-activating with the same customer needs the current version.
    with pytest.raises(ConcurrentModification) as info:
        await identity.activate_principal("p-1", "c-1", "CUST100001", "1")
    assert "expected version 1" in str(info.value)
    assert "current version 2" in str(info.value)
    assert info.value.type == "ConcurrentModification"
    assert isinstance(info.value, Conflict)
    with pytest.raises(ConcurrentModification):
        await identity.activate_principal("p-1", "c-1", "CUST100001", "not-a-version")
    current = await identity.get_principal("p-1")
    assert current is not None and current.version == "2"


async def test_stale_activation_of_inactive_principal_changes_nothing(
    directory: LocalDirectory,
) -> None:
    identity = directory.identity
    await identity.create_principal(new_principal(1), PASSWORD)
    with pytest.raises(ConcurrentModification):
        await identity.activate_principal("p-1", "c-1", "CUST100001", "7")
    current = await identity.get_principal("p-1")
    assert current is not None
    assert (current.active, current.version, current.customer_id) == (False, "1", None)


async def test_activate_deleted_principal_is_not_found(directory: LocalDirectory) -> None:
    identity = directory.identity
    await identity.create_principal(new_principal(1), PASSWORD)
    assert await identity.undo_principal("p-1") is True
    with pytest.raises(NotFound):
        await identity.activate_principal("p-1", "c-1", "CUST100001", "1")
    with pytest.raises(NotFound):
        await identity.activate_principal("never-existed", "c-1", "CUST100001", "1")


async def test_delete_principal_is_idempotent(directory: LocalDirectory) -> None:
    identity = directory.identity
    await identity.create_principal(new_principal(1), PASSWORD)
    assert await identity.undo_principal("p-1") is True
    assert await identity.undo_principal("p-1") is False
    assert await identity.get_principal("p-1") is None
    assert await identity.find_principal("user1@example.com") is None
    # The email is free again.
    again = await identity.create_principal(new_principal(3, "User1@Example.com"), PASSWORD)
    assert again.id == "p-3"


async def test_password_stored_as_argon2id_phc_and_never_in_plaintext(
    directory: LocalDirectory, tmp_path: Path
) -> None:
    identity = directory.identity
    await identity.create_principal(new_principal(1), PASSWORD)
    await identity.create_principal(new_principal(2), PASSWORD)
    (h1,) = raw_row(directory.path, "SELECT password_hash FROM principals WHERE id='p-1'") or ("",)
    (h2,) = raw_row(directory.path, "SELECT password_hash FROM principals WHERE id='p-2'") or ("",)
    assert isinstance(h1, str)
    assert h1.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert h1 != h2  # random salt per password
    assert await identity.verify_password("p-1", PASSWORD) is True
    assert await identity.verify_password("p-1", PASSWORD + "x") is False
    assert await identity.verify_password("nobody", PASSWORD) is False
    # Database, WAL and shared-memory files: the password must be in none of them.
    files = database_files(tmp_path)
    assert directory.path.name in files
    for name, content in files.items():
        assert PASSWORD.encode() not in content, name


async def test_password_matches_in_either_unicode_normal_form(directory: LocalDirectory) -> None:
    """Set in composed form (NFC) and checked decomposed (NFD), or the other way round."""
    composed = unicodedata.normalize("NFC", "Crème brûlée für Åsa")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    identity = directory.identity
    await identity.create_principal(new_principal(1), composed)
    await identity.create_principal(new_principal(2), decomposed)
    assert await identity.verify_password("p-1", decomposed) is True
    assert await identity.verify_password("p-2", composed) is True
    assert await identity.verify_password("p-1", "Creme brulee fur Asa") is False


async def test_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "dir.sqlite3"
    d = LocalDirectory(path)
    await d.identity.create_principal(new_principal(1), PASSWORD)
    await d.customers.create_customer(new_customer(1))
    await d.aclose()
    d = LocalDirectory(path)
    try:
        assert await d.identity.get_principal("p-1") is not None
        assert await d.identity.verify_password("p-1", PASSWORD) is True
        second = await d.customers.create_customer(new_customer(2))
        assert second.number == "CUST100002"
    finally:
        await d.aclose()


# Customers


async def test_create_and_find_customer(directory: LocalDirectory) -> None:
    customers = directory.customers
    created = await customers.create_customer(new_customer(1, "Ann@Example.com"))
    assert created.id == "c-1"
    assert created.number == "CUST100001"
    assert created.email == "Ann@Example.com"
    assert created.name == "User 1"
    assert await customers.find_customer("ann@example.com") == created
    assert await customers.find_customer("bob@example.com") is None


async def test_customer_numbers_sequential_per_prefix(directory: LocalDirectory) -> None:
    customers = directory.customers
    numbers = [(await customers.create_customer(new_customer(n))).number for n in (1, 2, 3)]
    assert numbers == ["CUST100001", "CUST100002", "CUST100003"]
    shop = await customers.create_customer(new_customer(4, prefix="SHOP"))
    assert shop.number == "SHOP100001"
    assert (await customers.create_customer(new_customer(5))).number == "CUST100004"


async def test_customer_numbers_skip_a_number_another_prefix_made(
    directory: LocalDirectory,
) -> None:
    """Prefix "C1" at 100001 reads C1100001, the same as prefix "C" at 1100001."""
    customers = directory.customers
    taken = await customers.create_customer(new_customer(1, prefix="C1"))
    assert taken.number == "C1100001"
    with sqlite3.connect(directory.path) as conn:  # "C" has come as far as 1100000
        conn.execute("INSERT INTO customer_number_sequences VALUES ('C', 1100000)")
    conn.close()
    assert (await customers.create_customer(new_customer(2, prefix="C"))).number == "C1100002"
    assert (await customers.create_customer(new_customer(3, prefix="C"))).number == "C1100003"


async def test_customer_numbers_unique_across_processes(tmp_path: Path) -> None:
    """Two directories on one file (a worker and ``customers import``, say): each its own
    connection, so only SQLite's locking (BEGIN IMMEDIATE, busy_timeout) keeps numbers apart."""
    first, second = LocalDirectory(tmp_path / "d.sqlite3"), LocalDirectory(tmp_path / "d.sqlite3")
    try:
        created = await asyncio.gather(
            *(
                (first if n % 2 else second).customers.create_customer(new_customer(n))
                for n in range(40)
            )
        )
    finally:
        await first.aclose()
        await second.aclose()
    assert {c.number for c in created} == {f"CUST{100001 + i}" for i in range(40)}


async def test_customer_numbers_unique_under_concurrency(directory: LocalDirectory) -> None:
    customers = directory.customers
    created = await asyncio.gather(*(customers.create_customer(new_customer(n)) for n in range(50)))
    numbers = {c.number for c in created}
    assert numbers == {f"CUST{100001 + i}" for i in range(50)}
    assert raw_row(directory.path, "SELECT count(DISTINCT number) FROM customers") == (50,)


async def test_create_customer_is_idempotent(directory: LocalDirectory) -> None:
    customers = directory.customers
    first = await customers.create_customer(new_customer(1))
    again = await customers.create_customer(new_customer(1))
    assert again == first
    assert raw_row(directory.path, "SELECT count(*) FROM customers") == (1,)
    # The retry did not burn a number.
    assert (await customers.create_customer(new_customer(2))).number == "CUST100002"


async def test_duplicate_customer_email_is_a_conflict(directory: LocalDirectory) -> None:
    customers = directory.customers
    await customers.create_customer(new_customer(1, "dup@example.com"))
    with pytest.raises(Conflict):
        await customers.create_customer(new_customer(2, "DUP@example.com"))
    with pytest.raises(Conflict):  # same id, other email
        await customers.create_customer(new_customer(1, "other@example.com"))
    assert (await customers.create_customer(new_customer(3))).number == "CUST100002"


async def test_link_or_create_links_the_customer_with_the_email(directory: LocalDirectory) -> None:
    customers = directory.customers
    imported = await customers.create_customer(new_customer(1, "Imp@Example.com"))
    link = await customers.link_or_create_customer(new_customer(2, "imp@example.com"))
    assert link.created is False and link.customer == imported
    assert raw_row(directory.path, "SELECT count(*) FROM customers") == (1,)
    # Linking burnt no number.
    assert (await customers.create_customer(new_customer(3))).number == "CUST100002"


async def test_link_or_create_creates_once_and_a_retry_gets_it_back(
    directory: LocalDirectory,
) -> None:
    customers = directory.customers
    first = await customers.link_or_create_customer(new_customer(1))
    assert first.created is True and first.customer.number == "CUST100001"
    retried = await customers.link_or_create_customer(new_customer(1))
    assert retried == first  # the earlier attempt's customer, still marked as created
    assert raw_row(directory.path, "SELECT count(*) FROM customers") == (1,)
    with pytest.raises(Conflict):  # same id, other email: not ours to link
        await customers.link_or_create_customer(new_customer(1, "other@example.com"))


async def test_link_or_create_under_concurrency_creates_one_customer(
    directory: LocalDirectory,
) -> None:
    customers = directory.customers
    links = await asyncio.gather(
        *(customers.link_or_create_customer(new_customer(n, "same@example.com")) for n in range(10))
    )
    assert sum(link.created for link in links) == 1
    assert len({link.customer.id for link in links}) == 1
    assert raw_row(directory.path, "SELECT count(*) FROM customers") == (1,)


async def test_link_and_activate_is_one_transaction(directory: LocalDirectory) -> None:
    principal = await directory.identity.create_principal(new_principal(), PASSWORD)
    link, active = await directory.link_customer_and_activate(principal.id, new_customer())
    assert link.created and link.customer.number == "CUST100001"
    assert active.active and active.customer_id == link.customer.id
    assert active.version != principal.version

    again = await directory.link_customer_and_activate(principal.id, new_customer())  # a retry
    assert again == (link, active)


async def test_link_and_activate_links_an_existing_customer(directory: LocalDirectory) -> None:
    imported = await directory.customers.create_customer(new_customer(7, "user1@example.com"))
    principal = await directory.identity.create_principal(new_principal(), PASSWORD)
    link, active = await directory.link_customer_and_activate(principal.id, new_customer())
    assert not link.created and link.customer == imported
    assert active.customer_id == imported.id


async def test_a_failed_activation_leaves_no_customer(directory: LocalDirectory) -> None:
    with pytest.raises(NotFound):
        await directory.link_customer_and_activate("p-gone", new_customer())
    assert await directory.customers.find_customer("user1@example.com") is None

    principal = await directory.identity.create_principal(new_principal(2), PASSWORD)
    await directory.link_customer_and_activate(principal.id, new_customer(2))
    with pytest.raises(Conflict, match="activated for another customer"):
        await directory.link_customer_and_activate(principal.id, new_customer(3))
    assert await directory.customers.find_customer("user3@example.com") is None
    assert raw_row(directory.path, "SELECT last FROM customer_number_sequences") == (100001,)


async def test_delete_customer_is_idempotent(directory: LocalDirectory) -> None:
    customers = directory.customers
    await customers.create_customer(new_customer(1))
    assert await customers.undo_customer("c-1") is True
    assert await customers.undo_customer("c-1") is False
    assert await customers.find_customer("user1@example.com") is None
    # Numbers are never reused, even after a delete.
    assert (await customers.create_customer(new_customer(2))).number == "CUST100002"


async def test_created_customer_keeps_the_profile_and_a_linked_one_its_own(
    directory: LocalDirectory,
) -> None:
    imported = await directory.customers.create_customer(new_customer(1, "pia@example.com"))
    profile = {"company": "Pia & Co", "newsletter": "yes"}
    created = await directory.customers.link_or_create_customer(
        new_customer(2).model_copy(update={"profile": profile})
    )
    linked = await directory.customers.link_or_create_customer(
        new_customer(3, "pia@example.com").model_copy(update={"profile": profile})
    )
    assert created.created and not linked.created and linked.customer == imported
    path = directory.path
    stored = raw_row(path, "SELECT profile FROM customers WHERE id = ?", created.customer.id)
    assert stored is not None and json.loads(str(stored[0])) == profile
    assert raw_row(path, "SELECT profile FROM customers WHERE id = ?", imported.id) == ("{}",)


async def test_a_database_file_from_before_the_profile_column_gets_it_on_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE customers (id TEXT PRIMARY KEY, number TEXT NOT NULL UNIQUE,"
            " email TEXT NOT NULL, email_canonical TEXT NOT NULL UNIQUE, name TEXT, phone TEXT,"
            " tenant TEXT, created_at TEXT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO customers VALUES ('c-old', 'CUST1', 'old@example.com',"
            " 'old@example.com', 'Old', NULL, NULL, '2026-01-01T00:00:00.000+00:00')"
        )
    conn.close()
    directory = LocalDirectory(path)
    try:
        link = await directory.customers.link_or_create_customer(
            new_customer(1).model_copy(update={"profile": {"company": "New"}})
        )
        assert link.created
        assert await directory.customers.find_customer("old@example.com") is not None
    finally:
        await directory.aclose()
    assert raw_row(path, "SELECT profile FROM customers WHERE id = 'c-old'") == ("{}",)
    assert raw_row(path, "SELECT profile FROM customers WHERE id = 'c-1'") == (
        '{"company": "New"}',
    )
