"""Small in-memory providers, one per shape an identity provider can declare
(``IdentityCapabilities`` in ``activities/roles.py``), to prove the seam end to end
(``tests/test_provider_shapes.py``) and to serve as worked examples for a new vendor
(``docs/providers/adding-a-provider.md``):

- ``SeparateRecords``: the default shape: a login created inactive at sign-up, a customer record
  of its own, the login deleted by compensation, our codes;
- ``OneRecord``: the login and the customer are one record, created at sign-up (inactive) with
  the customer part, activated with it, and deactivated (never deleted) by compensation;
- ``LoginAtActivation``: nothing is created at sign-up; the login is created, active and linked,
  once the email is proven;
- ``ProviderCodes``: separate records, but the provider makes the activation codes and has the
  last word on them (``CodeIssuer``), with its own brute-force limit.

Each role object is a plain class that mypy checks against its Protocol (see the end of this
module). State lives in dicts; no method awaits between reading and writing them, so a call is
atomic on the event loop that runs the worker and the test. ``in_process=False`` makes a
provider run the way a remote one does (one regular activity per call). Every call is recorded
in ``calls``, and ``calls.fail(method, error)`` makes a method raise, so a test can break a step
on purpose.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from activities.errors import (
    ConcurrentModification,
    Conflict,
    InvalidRequest,
    NotFound,
    TooManyAttempts,
)
from activities.roles import (
    CodeIssuer,
    CodeOwner,
    Customer,
    CustomerLink,
    CustomerProvider,
    IdentityCapabilities,
    IdentityProvider,
    LoginCreated,
    LoginUndo,
    NewCustomer,
    NewPrincipal,
    Principal,
)

FIRST_NUMBER = 500001
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""``ProviderCodes``' codes: 8 characters, no 0/O or 1/I (not the 6 digits of ours)."""
CODE_LENGTH = 8


def _hash(password: str) -> str:
    """Enough for an in-memory fake: the password is not kept in clear."""
    return hashlib.sha256(password.encode()).hexdigest()


class Calls:
    """What a provider was asked, in order, and the failures a test planted."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        """``(method, key)``, the key being the principal id, customer id or email asked for."""
        self._failures: dict[str, Callable[[], Exception]] = {}

    def fail(self, method: str, error: Callable[[], Exception]) -> None:
        """From now on ``method`` raises ``error()`` (after recording the call)."""
        self._failures[method] = error

    def record(self, method: str, key: str) -> None:
        self.log.append((method, key))
        failure = self._failures.get(method)
        if failure is not None:
            raise failure()

    def names(self) -> list[str]:
        return [method for method, _ in self.log]

    def count(self, method: str) -> int:
        return self.names().count(method)


# -- Separate records: logins and customers --------------------------------------------------------


@dataclass
class Login:
    id: str
    email: str
    email_canonical: str
    name: str
    password_hash: str
    active: bool = False
    version: int = 1
    customer_id: str | None = None
    customer_number: str | None = None
    verified: bool = False
    """The provider's own mark that the address was proven (``ProviderCodes``)."""

    def principal(self) -> Principal:
        return Principal(
            id=self.id,
            email=self.email,
            name=self.name,
            active=self.active,
            version=str(self.version),
            customer_id=self.customer_id,
            customer_number=self.customer_number,
            replaceable=not self.active,  # every inactive login here is a registration's
        )


class MemoryIdentity:
    """``IdentityProvider``, default shape: created inactive at sign-up, activated with the
    customer link, deleted by compensation."""

    capabilities = IdentityCapabilities()

    def __init__(self, *, in_process: bool = True) -> None:
        self.in_process = in_process
        self.logins: dict[str, Login] = {}
        self.calls = Calls()

    async def aclose(self) -> None:
        pass

    def login_for(self, email_canonical: str) -> Login | None:
        """For the tests: the login of an email, whatever its state."""
        return next((x for x in self.logins.values() if x.email_canonical == email_canonical), None)

    def password_matches(self, principal_id: str, password: str) -> bool:
        login = self.logins.get(principal_id)
        return login is not None and hmac.compare_digest(login.password_hash, _hash(password))

    async def find_principal(self, email_canonical: str) -> Principal | None:
        self.calls.record("find_principal", email_canonical)
        login = self.login_for(email_canonical)
        return login.principal() if login else None

    async def get_principal(self, principal_id: str) -> Principal | None:
        self.calls.record("get_principal", principal_id)
        login = self.logins.get(principal_id)
        return login.principal() if login else None

    async def create_principal(self, new: NewPrincipal, password: str) -> Principal:
        self.calls.record("create_principal", new.id)
        return self._create(new, password, active=False, link=None).principal()

    def _create(
        self, new: NewPrincipal, password: str, *, active: bool, link: Customer | None
    ) -> Login:
        """Idempotent on ``new.id``; ``Conflict`` for an email another login has."""
        existing = self.logins.get(new.id)
        if existing is not None:
            if existing.email_canonical != new.email_canonical:
                raise Conflict(f"principal {new.id} already exists with another email")
            return existing
        other = self.login_for(new.email_canonical)
        if other is not None:
            raise Conflict(f"email already belongs to principal {other.id}")
        login = Login(
            id=new.id,
            email=new.email,
            email_canonical=new.email_canonical,
            name=new.name,
            password_hash=_hash(password),
            active=active,
            customer_id=link.id if link else None,
            customer_number=link.number if link else None,
        )
        self.logins[login.id] = login
        return login

    async def decoy_create(self, new: NewPrincipal, password: str) -> None:
        self.calls.record("decoy_create", new.id)
        _hash(password)

    async def activate_principal(
        self,
        principal_id: str,
        customer_id: str | None,
        customer_number: str | None,
        expected_version: str,
    ) -> Principal:
        self.calls.record("activate_principal", principal_id)
        if customer_id is None or customer_number is None:
            raise InvalidRequest(f"principal {principal_id}: activation without a customer")
        login = self.logins.get(principal_id)
        if login is None:
            raise NotFound(f"principal {principal_id} does not exist")
        if str(login.version) != expected_version:
            raise ConcurrentModification(f"principal {principal_id}: version {login.version}")
        login.active = True
        login.customer_id, login.customer_number = customer_id, customer_number
        login.version += 1
        return login.principal()

    async def undo_principal(self, principal_id: str) -> bool:
        self.calls.record("undo_principal", principal_id)
        return self.logins.pop(principal_id, None) is not None


@dataclass
class CustomerRecord:
    customer: Customer
    email_canonical: str
    created_for: str | None
    """The ``NewCustomer.id`` of the registration that created it; ``None`` if imported."""
    profile: dict[str, str] = field(default_factory=dict)


class MemoryCustomers:
    """``CustomerProvider``: link the customer of the email, or create one numbered
    ``<prefix><n>``. ``own_ids`` makes it assign ids of its own (``NewCustomer.id`` then only
    makes a retried create idempotent), as some vendors do."""

    def __init__(self, *, in_process: bool = True, own_ids: bool = False) -> None:
        self.in_process = in_process
        self.own_ids = own_ids
        self.records: dict[str, CustomerRecord] = {}
        self.calls = Calls()
        self._numbers = itertools.count(FIRST_NUMBER)

    async def aclose(self) -> None:
        pass

    def customer_for(self, email_canonical: str) -> Customer | None:
        """For the tests: the customer of an email."""
        return next(
            (r.customer for r in self.records.values() if r.email_canonical == email_canonical),
            None,
        )

    def add_existing(self, email: str, name: str, number_prefix: str = "OLD") -> Customer:
        """A customer that existed before any registration (imported)."""
        number = f"{number_prefix}{next(self._numbers)}"
        customer = Customer(id=f"imported-{number}", number=number, email=email, name=name)
        self.records[customer.id] = CustomerRecord(customer, email.lower(), created_for=None)
        return customer

    async def link_or_create_customer(self, new: NewCustomer) -> CustomerLink:
        self.calls.record("link_or_create_customer", new.id)
        for record in self.records.values():  # a retry: what an earlier attempt created
            if record.created_for == new.id:
                return CustomerLink(customer=record.customer, created=True)
        existing = self.customer_for(new.email_canonical)
        if existing is not None:
            return CustomerLink(customer=existing, created=False)
        number = f"{new.number_prefix}{next(self._numbers)}"
        customer = Customer(
            id=f"c-{secrets.token_hex(6)}" if self.own_ids else new.id,
            number=number,
            email=new.email,
            name=new.name,
        )
        self.records[customer.id] = CustomerRecord(
            customer, new.email_canonical, created_for=new.id, profile=dict(new.profile)
        )
        return CustomerLink(customer=customer, created=True)

    async def undo_customer(self, customer_id: str) -> bool:
        self.calls.record("undo_customer", customer_id)
        return self.records.pop(customer_id, None) is not None


@dataclass
class SeparateRecords:
    """Shape 1 (the default): login and customer are separate records."""

    identity: MemoryIdentity
    customers: MemoryCustomers

    @classmethod
    def make(cls, *, in_process: bool = True, own_ids: bool = False) -> SeparateRecords:
        return cls(
            MemoryIdentity(in_process=in_process),
            MemoryCustomers(in_process=in_process, own_ids=own_ids),
        )


# -- One record: the login is the customer ---------------------------------------------------------


@dataclass
class Record:
    """A customer record that may have a login bound to it."""

    id: str
    number: str
    email: str
    email_canonical: str
    name: str
    existed_before: bool
    """Imported: it was there before any registration bound a login to it."""
    active: bool
    login_id: str | None = None
    password_hash: str | None = None
    login_active: bool = False
    deactivated: bool = False
    """Undone by a compensation: inactive, its login unusable; left for the vendor's clean-up."""
    version: int = 1

    def principal(self) -> Principal:
        assert self.login_id is not None
        return Principal(
            id=self.login_id,
            email=self.email,
            name=self.name,
            active=self.login_active,
            version=str(self.version),
            customer_id=self.id,
            customer_number=self.number,
            linked_existing_customer=self.existed_before,
            replaceable=not self.login_active and not self.deactivated,
        )


class OneRecordStore:
    """The vendor's one table, shared by its two role objects."""

    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self._numbers = itertools.count(FIRST_NUMBER)

    def next_number(self) -> int:
        return next(self._numbers)

    def by_login(self, principal_id: str) -> Record | None:
        return next((r for r in self.records.values() if r.login_id == principal_id), None)

    def live_for(self, email_canonical: str) -> Record | None:
        """The email's record that is not deactivated (deactivated ones wait for clean-up)."""
        return next(
            (
                r
                for r in self.records.values()
                if r.email_canonical == email_canonical and not r.deactivated
            ),
            None,
        )

    def add_existing(self, email: str, name: str, number_prefix: str = "OLD") -> Record:
        """An active customer record without a login (imported before the registrations)."""
        number = f"{number_prefix}{self.next_number()}"
        record = Record(
            id=f"imported-{number}",
            number=number,
            email=email,
            email_canonical=email.lower(),
            name=name,
            existed_before=True,
            active=True,
        )
        self.records[record.id] = record
        return record


class OneRecordIdentity:
    """``IdentityProvider`` of one record per customer: ``create_principal`` makes the record
    (inactive) with its customer part from ``new.customer``, or binds the login to the email's
    imported record; ``activate_principal`` activates it and returns the customer part; undo
    deactivates (this vendor has no delete) and unbinds the login from an imported record,
    which stays as it was."""

    capabilities = IdentityCapabilities(one_record=True, login_undo=LoginUndo.DEACTIVATE)

    def __init__(self, store: OneRecordStore, *, in_process: bool = True) -> None:
        self.store = store
        self.in_process = in_process
        self.calls = Calls()

    async def aclose(self) -> None:
        pass

    async def find_principal(self, email_canonical: str) -> Principal | None:
        self.calls.record("find_principal", email_canonical)
        record = self.store.live_for(email_canonical)
        if record is None or record.login_id is None:
            return None  # a customer without a login is no account yet
        return record.principal()

    async def get_principal(self, principal_id: str) -> Principal | None:
        self.calls.record("get_principal", principal_id)
        record = self.store.by_login(principal_id)
        return record.principal() if record else None

    async def create_principal(self, new: NewPrincipal, password: str) -> Principal:
        self.calls.record("create_principal", new.id)
        mine = self.store.by_login(new.id)
        if mine is not None:  # a retry
            if mine.email_canonical != new.email_canonical:
                raise Conflict(f"principal {new.id} already exists with another email")
            return mine.principal()
        record = self.store.live_for(new.email_canonical)
        if record is not None and record.login_id is not None:
            raise Conflict(f"email already belongs to principal {record.login_id}")
        if record is None:
            if new.customer is None:
                raise InvalidRequest(f"principal {new.id}: one record needs its customer part")
            number = self.store.next_number()
            record = Record(
                id=f"rec-{number}",
                number=f"{new.customer.number_prefix}{number}",
                email=new.email,
                email_canonical=new.email_canonical,
                name=new.customer.name,
                existed_before=False,
                active=False,
            )
            self.store.records[record.id] = record
        record.login_id, record.password_hash = new.id, _hash(password)
        return record.principal()

    async def decoy_create(self, new: NewPrincipal, password: str) -> None:
        self.calls.record("decoy_create", new.id)
        _hash(password)

    async def activate_principal(
        self,
        principal_id: str,
        customer_id: str | None,
        customer_number: str | None,
        expected_version: str,
    ) -> Principal:
        self.calls.record("activate_principal", principal_id)
        if customer_id is not None or customer_number is not None:
            raise InvalidRequest(f"principal {principal_id}: one record links its own customer")
        record = self.store.by_login(principal_id)
        if record is None or record.deactivated:
            raise NotFound(f"principal {principal_id} does not exist")
        if str(record.version) != expected_version:
            raise ConcurrentModification(f"principal {principal_id}: version {record.version}")
        record.active = record.login_active = True
        record.version += 1
        return record.principal()

    async def undo_principal(self, principal_id: str) -> bool:
        self.calls.record("undo_principal", principal_id)
        record = self.store.by_login(principal_id)
        if record is None or record.deactivated:
            return False
        if record.existed_before:  # not ours to deactivate: only the login goes
            record.login_id = record.password_hash = None
            record.login_active = False
        else:
            record.active = record.login_active = False
            record.password_hash = None  # unusable
            record.deactivated = True
        record.version += 1
        return True


class OneRecordCustomers:
    """The customers role of the one-record vendor (the registry requires it to be the same
    provider). The workflow makes no customers-role call for a one-record shape, so
    ``link_or_create_customer`` refuses (loudly, and recorded)."""

    def __init__(self, store: OneRecordStore, *, in_process: bool = True) -> None:
        self.store = store
        self.in_process = in_process
        self.calls = Calls()

    async def aclose(self) -> None:
        pass

    async def link_or_create_customer(self, new: NewCustomer) -> CustomerLink:
        self.calls.record("link_or_create_customer", new.id)
        raise InvalidRequest("one record: the customer part comes with the login")

    async def undo_customer(self, customer_id: str) -> bool:
        """Deactivates a record a registration created (the identity undo does the same)."""
        self.calls.record("undo_customer", customer_id)
        record = self.store.records.get(customer_id)
        if record is None or record.existed_before or record.deactivated:
            return False
        record.active = record.login_active = False
        record.deactivated = True
        return True


@dataclass
class OneRecord:
    """Shape 2: one record is both the login and the customer."""

    store: OneRecordStore
    identity: OneRecordIdentity
    customers: OneRecordCustomers

    @classmethod
    def make(cls, *, in_process: bool = True) -> OneRecord:
        store = OneRecordStore()
        return cls(
            store,
            OneRecordIdentity(store, in_process=in_process),
            OneRecordCustomers(store, in_process=in_process),
        )


# -- Login created at activation -------------------------------------------------------------------


class ActivationLogins(MemoryIdentity):
    """``IdentityProvider`` with no inactive logins: ``create_principal`` is called only once the
    email is proven, and creates the login active and linked to ``new.link``."""

    capabilities = IdentityCapabilities(login_created=LoginCreated.ACTIVATION)

    async def create_principal(self, new: NewPrincipal, password: str) -> Principal:
        self.calls.record("create_principal", new.id)
        if new.link is None:
            raise InvalidRequest(f"principal {new.id}: created at activation, with its customer")
        return self._create(new, password, active=True, link=new.link).principal()

    async def activate_principal(
        self,
        principal_id: str,
        customer_id: str | None,
        customer_number: str | None,
        expected_version: str,
    ) -> Principal:
        self.calls.record("activate_principal", principal_id)
        raise InvalidRequest("logins are created active: there is nothing to activate")


@dataclass
class LoginAtActivation:
    """Shape 3: nothing exists at sign-up; the login is created at activation."""

    identity: ActivationLogins
    customers: MemoryCustomers

    @classmethod
    def make(cls, *, in_process: bool = True) -> LoginAtActivation:
        return cls(ActivationLogins(in_process=in_process), MemoryCustomers(in_process=in_process))


# -- The provider's codes --------------------------------------------------------------------------


@dataclass
class IssuedCode:
    code: str
    wrong: int = 0


class CodeLogins(MemoryIdentity):
    """``IdentityProvider`` and ``CodeIssuer``: makes the activation codes (a new one replaces
    the last) and checks them, locking a login after ``max_wrong`` wrong ones; a right one marks
    the address verified."""

    capabilities = IdentityCapabilities(
        code=CodeOwner.PROVIDER, code_pattern=f"[{CODE_ALPHABET}]{{{CODE_LENGTH}}}"
    )

    def __init__(self, *, in_process: bool = True, max_wrong: int = 3) -> None:
        super().__init__(in_process=in_process)
        self.max_wrong = max_wrong
        self.codes: dict[str, IssuedCode] = {}
        self.wrong: dict[str, int] = {}
        """Wrong codes per login, over all its codes (a resend does not reset the limit)."""

    async def new_code(self, principal_id: str) -> str:
        self.calls.record("new_code", principal_id)
        if principal_id not in self.logins:
            raise NotFound(f"principal {principal_id} does not exist")
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        self.codes[principal_id] = IssuedCode(code)
        return code

    async def confirm_code(self, principal_id: str, code: str) -> bool:
        self.calls.record("confirm_code", principal_id)
        login, issued = self.logins.get(principal_id), self.codes.get(principal_id)
        if login is None or issued is None:
            raise NotFound(f"principal {principal_id} has no code")
        if self.wrong.get(principal_id, 0) >= self.max_wrong:
            raise TooManyAttempts(f"principal {principal_id}: locked after too many codes")
        if not hmac.compare_digest(code.encode(), issued.code.encode()):
            self.wrong[principal_id] = self.wrong.get(principal_id, 0) + 1
            return False
        login.verified = True
        return True


@dataclass
class ProviderCodes:
    """Shape 4: separate records, the codes the provider's."""

    identity: CodeLogins
    customers: MemoryCustomers

    @classmethod
    def make(cls, *, in_process: bool = True, max_wrong: int = 3) -> ProviderCodes:
        return cls(
            CodeLogins(in_process=in_process, max_wrong=max_wrong),
            MemoryCustomers(in_process=in_process),
        )


# mypy checks each role object against its Protocol here (and so against what ``ProviderSpec``'s
# factories require).
_identities: tuple[type[IdentityProvider], ...] = (
    MemoryIdentity,
    OneRecordIdentity,
    ActivationLogins,
    CodeLogins,
)
_customers: tuple[type[CustomerProvider], ...] = (MemoryCustomers, OneRecordCustomers)
_issuers: tuple[type[CodeIssuer], ...] = (CodeLogins,)
