"""The registration workflow's contract: input, messages (update, signals, query) and result.

These models are what backend services, the Temporal UI and recorded histories see, so they carry
no secret in clear: the password (and a code submitted by the starter) arrive sealed for the worker.
Every rule of a field is here, so that the client (``starter.client``) names a bad field before
any workflow starts, and the worker decodes what any other sender (the Temporal UI, another SDK)
sends by the same rules. The format of an activation code, which the client checks before a code
costs an attempt, and the error type of a code the worker cannot open belong to the contract too;
the activities take them from here.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Self

from email_validator import EmailNotValidError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from common.identifiers import canonical_email, mail_address
from common.policy import (
    ActivationTtl,
    Attempts,
    CustomerNumberPrefix,
    FailureWindow,
    Resends,
)

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
_PHONE = re.compile(r"^\+?[0-9][0-9 ()./-]{3,24}$")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


def _valid_email(email: str) -> str:
    try:
        return mail_address(email)
    except EmailNotValidError as err:
        raise ValueError(f"not a valid email address: {err}") from None


Email = Annotated[str, Field(max_length=254), AfterValidator(_valid_email)]
"""An address as a registration takes it and mails it (``common.identifiers.mail_address``):
trimmed, RFC 5321/5322-valid, the local part NFKC, the domain's spelling kept up to letter case
(``Alice@Example.com`` stays) and otherwise the form mail reaches (``example`` in fullwidth
letters, or ``example.com`` with an ideographic full stop, is kept as ``example.com``). Its
canonical email (the identity key) is ``common.identifiers.canonical_email``."""


def _valid_phone(phone: str | None) -> str | None:
    if phone is not None and not _PHONE.match(phone.strip()):
        raise ValueError("not a phone number (digits, spaces, ()-./, optional leading +)")
    return phone.strip() if phone else None


Phone = Annotated[str | None, AfterValidator(_valid_phone)]

_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Embeddings, overrides and isolates (U+202A..U+202E, U+2066..U+2069): they reorder the text
around them, so "Eve<U+202E>gnp.exe" shows as "Eveexe.png". The joiners (ZWJ, ZWNJ),
which names in Persian or Indic scripts need, are format characters too and stay allowed."""


def _whole_characters(text: str) -> None:
    """Refuse a lone surrogate (U+D800..U+DFFF, half of a UTF-16 pair: a string decoded from
    broken UTF-16, or bytes that were not UTF-8 decoded with ``surrogateescape``). It is no
    character, and no payload (UTF-8 JSON) can carry it: without this rule it failed the start
    with a ``UnicodeEncodeError`` instead of naming the field."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            "must be Unicode text: it holds a lone surrogate (U+D800..U+DFFF, half of a UTF-16"
            " pair)"
        ) from None


def _no_bidi_controls(text: str) -> None:
    if not _BIDI_CONTROLS.isdisjoint(text):
        raise ValueError(
            "must not contain bidirectional text controls (U+202A..U+202E, U+2066..U+2069)"
        )


def one_line(text: str) -> str:
    """Refuse control characters, line separators (CR, LF, NUL, U+2028...) and bidirectional
    controls: a name is one line of display text in mails, the Temporal UI and provider records.
    Lone surrogates are refused too (``_whole_characters``)."""
    _whole_characters(text)
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in text):
        raise ValueError("must not contain control characters or line breaks")
    _no_bidi_controls(text)
    return text


def plain_text(text: str) -> str:
    """Refuse control characters other than tab and line breaks (TAB, LF, CR: text may span
    lines) and bidirectional controls: NUL ends a C string in some stores, ESC drives the
    terminal a support engineer reads a record in, and a bidi control hides what text says.
    Lone surrogates are refused too (``_whole_characters``)."""
    _whole_characters(text)
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in text):
        raise ValueError("must not contain control characters other than tabs and line breaks")
    _no_bidi_controls(text)
    return text


def password_text(password: str) -> str:
    """Refuse a password that is not text one can type: control characters (NUL, TAB, ESC, DEL,
    C1: a web form's field cannot take them, and a provider may cut the password at a NUL) and
    lone surrogates. Anything else is a password character, as NIST SP 800-63B asks: spaces,
    every script, emoji, format characters; the policy judges and the provider hashes its NFKC
    form (``common.passwords``). The password is not a model field (it travels sealed): the
    client applies this before sealing it. The message never contains the password."""
    _whole_characters(password)
    if any(unicodedata.category(ch) == "Cc" for ch in password):
        raise ValueError("must not contain control characters (NUL, tab, escape...)")
    return password


OneLine = Annotated[ShortText, AfterValidator(one_line)]
"""Up to 200 characters of one line of display text, trimmed (``one_line``): who did something
(an approval's operator, a resend's requester). It shows in the status, the Temporal UI and log
lines, where a line break would forge another line and a bidi control hide what it says."""

Name = OneLine
"""A person's name as a registration (or a customer import) takes it: one line of display text."""

Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=500), AfterValidator(one_line)
]
"""Why staff did something (a cancel's reason, which may be empty): up to 500 characters of one
line, trimmed, shown where ``OneLine`` text is. A note of several paragraphs belongs in the
ticket it refers to."""

Note = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
    AfterValidator(one_line),
]
"""A ``Reason`` that must be given (an approval's)."""

Tenant = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(one_line),
]
"""The caller's tenant: a name (up to 100 characters of one line, trimmed), written into the
provider's records; a value whose lines or controls would split or hide it there is refused."""

ENTRY_KEY_LENGTH = 64
ENTRY_VALUE_LENGTH = 1000

CODE_DIGITS = 6
"""An activation code is this many decimal digits."""
LINK_TOKEN_BYTES = 24
"""Random bytes of an activation link's token (192 bits; the floor is 128), sent unpadded
base64url (``secrets.token_urlsafe``)."""
SEAL_MISMATCH = "SealMismatch"
"""``ApplicationError`` type of a submitted code that the worker's seal keys cannot open: the
update fails with it (no attempt is counted), and ``RegistrationClient`` reports it as a
configuration error."""


class _Model(BaseModel):
    """``hide_input_in_errors``: a validation error (a malformed signal the SDK logs and drops, a
    bad workflow input it writes into a failed task) must not echo the value, which may be a
    code."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class RegistrationPolicy(_Model):
    """Limits of one registration; copied from the settings at start so replays see the same."""

    activation_ttl: ActivationTtl = timedelta(hours=24)
    max_attempts_per_code: Attempts = 5
    max_attempts_total: Attempts = 20
    max_resends: Resends = 5
    resend_interval: timedelta = timedelta(minutes=1)
    customer_number_prefix: CustomerNumberPrefix = "CUST"
    max_failures_per_window: Attempts = 100
    """Wrong codes an email may have in all its registrations within ``failure_window`` (NIST SP
    800-63B caps consecutive failed attempts at 100): a registration that ends locked hands its
    count to the next one for the email (``PriorFailures``)."""
    failure_window: FailureWindow = timedelta(hours=24)


class PriorFailures(_Model):
    """The wrong codes of an email's locked registrations since ``since``, carried into its
    next registration while the failure window lasts."""

    count: int = Field(ge=0)
    since: datetime


class RegistrationInput(_Model):
    """What a backend sends to register someone. ``email`` is the address mailed, in the spelling
    given up to the mapping ``Email`` applies; ``canonical_email`` is its identity key, the same
    for every spelling of one mailbox (workflow ID, lookups, uniqueness, search attribute)."""

    email: Email
    name: Name
    phone: Phone = None
    locale: str | None = None
    profile: dict[str, str] = Field(default_factory=dict, max_length=32)
    sealed_password: str = Field(min_length=1, repr=False)
    tenant: Tenant | None = None
    metadata: dict[str, str] = Field(default_factory=dict, max_length=32)
    policy: RegistrationPolicy = RegistrationPolicy()
    prior_failures: PriorFailures | None = None
    """Set by the workflow itself when a locked registration continues as the next one."""

    @field_validator("locale")
    @classmethod
    def _valid_locale(cls, locale: str | None) -> str | None:
        if locale is not None and not _LOCALE.match(locale):
            raise ValueError("not a locale tag such as 'en' or 'sv-SE'")
        return locale

    @field_validator("profile", "metadata")
    @classmethod
    def _entries(cls, values: dict[str, str]) -> dict[str, str]:
        """Keys are names (1-64 characters of one line); values are text of at most 1000
        characters that may span lines (``plain_text``). The error names the key, escaped."""
        for key, value in values.items():
            shown = repr(key[:ENTRY_KEY_LENGTH])
            if not 1 <= len(key) <= ENTRY_KEY_LENGTH or len(value) > ENTRY_VALUE_LENGTH:
                raise ValueError(f"entry {shown}: keys 1-64 chars, values at most 1000")
            try:
                one_line(key)
            except ValueError as err:
                raise ValueError(f"key {shown}: {err}") from None
            try:
                plain_text(value)
            except ValueError as err:
                raise ValueError(f"value of {shown}: {err}") from None
        return values

    @property
    def canonical_email(self) -> str:
        return canonical_email(self.email)


class RegistrationState(StrEnum):
    STARTING = "starting"
    PENDING = "pending"
    ACTIVATING = "activating"
    ACTIVE = "active"
    ALREADY_REGISTERED = "already_registered"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    FAILED = "failed"
    LOCKED = "locked"


class CodeSubmission(_Model):
    """An activation code (or link token), sealed by the starter or typed plainly in the UI.

    The starter always seals, so the secret never lands in history. ``code`` exists for support
    staff typing JSON into the Temporal UI; such a code is single-use and is spent or rejected at
    once, but it does appear in that workflow's history, so prefer ``approve`` there.
    """

    sealed_code: str | None = Field(None, repr=False, min_length=1)
    """Not empty, and a constrained string: pydantic refuses a lone surrogate in it, which a
    plain ``str`` took (from Python) and could then not be encoded."""
    code: str | None = Field(None, repr=False, max_length=200, coerce_numbers_to_str=True)
    """A number is taken as typed (``{"code": 123456}``); the SDK would drop the signal else."""

    @model_validator(mode="before")
    @classmethod
    def _bare_code(cls, data: Any) -> Any:
        """The UI's signal form takes any JSON: a bare ``"123456"`` or ``123456`` is the code,
        not a malformed signal that the SDK drops without a word to the sender."""
        if isinstance(data, str | int) and not isinstance(data, bool):
            return {"code": str(data)}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.sealed_code is None) == (self.code is None):
            raise ValueError("give exactly one of 'code' or 'sealed_code'")
        return self


class ActivationOutcome(StrEnum):
    ACTIVATED = "activated"
    INVALID_CODE = "invalid_code"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    EXPIRED = "expired"
    NOT_PENDING = "not_pending"
    FAILED = "failed"
    """The code was right but the activation itself failed and was compensated (see status)."""
    ALREADY_REGISTERED = "already_registered"
    """The code was right, and the provider then found an account for the address that this
    registration may not take over: its owner (who just proved the address) got a mail."""


class ActivationReply(_Model):
    outcome: ActivationOutcome
    attempts_left: int | None = None


class Approval(_Model):
    """Staff activation without a code (like Cognito's AdminConfirmSignUp)."""

    operator: OneLine
    reason: Note


class ResendRequest(_Model):
    requested_by: OneLine = "customer"


class ResendOutcome(StrEnum):
    SENT = "sent"
    THROTTLED = "throttled"
    LIMIT_REACHED = "limit_reached"
    NOT_PENDING = "not_pending"


class ResendReply(_Model):
    outcome: ResendOutcome
    resends_left: int
    next_resend_at: datetime | None = None


class RegistrationStatus(_Model):
    """The ``status`` query: everything support staff need, and never a secret."""

    state: RegistrationState
    started_at: datetime
    expires_at: datetime | None = None
    activated_at: datetime | None = None
    attempts_left: int
    code_attempts_left: int
    resends_left: int
    next_resend_at: datetime | None = None
    principal_id: str | None = None
    customer_id: str | None = None
    customer_number: str | None = None
    linked_existing_customer: bool = False
    approved_by: str | None = None
    approval_reason: str | None = None
    reason: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    """The caller's ``RegistrationInput.metadata`` (e.g. where the sign-up came from)."""
    registered_again: bool = False
    """A ``register`` for this email came in that no code of this registration answers: it
    starts as a new registration when this one's run ends (its undos, its welcome mail)."""


class RegistrationResult(_Model):
    """How a registration ended (cancelled and failed registrations end as Temporal failures)."""

    state: RegistrationState
    principal_id: str | None = None
    customer_id: str | None = None
    customer_number: str | None = None
    linked_existing_customer: bool = False
    reason: str | None = None
