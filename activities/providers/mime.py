"""Turns a rendered ``MailMessage`` into an RFC 5322 message, the same way for every provider.

The Message-ID is derived from the idempotency key, so a retried send carries the same ID and
receivers (and the outbox, which names its files after it) can drop the duplicate.

Internationalized recipients (RFC 6530): an address cannot hold an RFC 2047 encoded-word, so a
non-ASCII domain is written in its IDNA (punycode) form, which every server accepts, and a message
to a non-ASCII local part, which has no ASCII form, gets a UTF-8 policy: it can only be delivered
as SMTPUTF8 (RFC 6531/6532).
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import UTC, datetime
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage, MIMEPart
from email.policy import Policy, default
from email.utils import format_datetime, parseaddr

from email_validator import validate_email

from activities.errors import ConfigurationError, InvalidRequest
from activities.roles import MailMessage

HEADER_CACHE_SIZE = 256
"""Parsed headers kept (LRU): the repeated ones stay, the per-message ones (To, Date, ID) cycle."""


class _FoldedOnce(BaseHeader):
    """A header that folds itself once per line length, line separator and UTF-8 setting: the
    cached headers (see ``_HeaderClasses``) are written into every message, and RFC 5322 folding
    re-parses the value each time (about a third of generating a mail). Header objects are
    immutable, so the folded text cannot go stale.

    Keyed on those three settings, the only ones folding reads (``_refold_parse_tree`` and
    ``MsgID.fold`` in ``email._header_value_parser``), not on the policy object: the generator
    clones its policy for every part of a multipart message, so a memo per policy object missed
    for every part's headers."""

    def fold(self, *, policy: Policy) -> str:
        memo: dict[tuple[int | None, str, bool], str] = self.__dict__.setdefault("_folded", {})
        key = (policy.max_line_length, policy.linesep, getattr(policy, "utf8", False))
        folded = memo.get(key)
        if folded is None:
            folded = memo[key] = super().fold(policy=policy)
        return folded


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, but each header class is made once per header name.

    ``HeaderRegistry.__getitem__`` creates a new class with ``type()`` on every call, and a message
    looks headers up about 30 times while it is built (every ``msg[name] = value`` also checks the
    name's ``max_count``): that was a third of the time of building a mail. The classes are the
    same in every respect but their identity, so the headers, and the bytes, come out unchanged.
    """

    def __init__(self) -> None:
        super().__init__(base_class=_FoldedOnce)
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls

    @functools.lru_cache(maxsize=HEADER_CACHE_SIZE)  # noqa: B019 (one registry, lives forever)
    def __call__(self, name: str, value: str) -> BaseHeader:
        """A header parsed once per name and value: most values repeat in every message (From,
        MIME-Version, Content-Type and its transfer encoding, the subject of a template)."""
        return super().__call__(name, value)


POLICY = default.clone(header_factory=_HeaderClasses())
"""``email.policy.default`` (what ``EmailMessage()`` uses) with the caching header registry."""

UTF8_POLICY = POLICY.clone(utf8=True)
"""``POLICY`` for a recipient whose local part is not ASCII: headers are written in UTF-8."""


def key_digest(idempotency_key: str) -> str:
    """A fixed-length, filename- and header-safe stand-in for the key (which may hold an email)."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


class MimeBuilder:
    """Builds ``multipart/alternative`` (text + HTML, UTF-8) messages from one sender."""

    def __init__(self, mail_from: str) -> None:
        _, address = parseaddr(mail_from)
        local, _, domain = address.rpartition("@")
        if not local or not domain:
            raise ConfigurationError(
                f"REGISTRATION_MAIL_FROM={mail_from!r} has no address such as no-reply@shop.example"
            )
        self.mail_from = mail_from
        self._domain = domain

    def message_id(self, idempotency_key: str) -> str:
        return f"<{key_digest(idempotency_key)}@{self._domain}>"

    def build(self, message: MailMessage) -> EmailMessage:
        """The message to deliver; ``InvalidRequest`` if a header value would break the header.

        Its policy is ``UTF8_POLICY`` when it needs SMTPUTF8 (see the module docstring and
        ``needs_smtputf8``).
        """
        try:
            to = _ascii_domain(message.to)
            email = EmailMessage(policy=POLICY if to.isascii() else UTF8_POLICY)
            email["From"] = self.mail_from
            email["To"] = to
            email["Subject"] = message.subject
        except ValueError as err:  # CR/LF in a value (header injection), a bad address: final
            raise InvalidRequest(f"cannot build the {message.category} mail: {err}") from None
        email["Date"] = format_datetime(datetime.now(UTC))
        email["Message-ID"] = self.message_id(message.idempotency_key)
        email["X-Category"] = message.category
        email["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to no-reply
        # The container and its two parts are made as they end up, not by ``set_content`` then
        # ``make_alternative`` and ``add_alternative``, which move and re-parse headers (and gave
        # the HTML part a MIME-Version of its own).
        email["MIME-Version"] = "1.0"
        email["Content-Type"] = f'multipart/alternative; boundary="{_boundary()}"'
        email.set_payload(
            [
                _part(message.text, "plain", email.policy),
                _part(message.html, "html", email.policy),
            ]
        )
        return email


def _part(body: str, subtype: str, policy: Policy) -> MIMEPart:
    part = MIMEPart(policy=policy)
    part.set_content(body, subtype=subtype, charset="utf-8")
    return part


def needs_smtputf8(email: EmailMessage) -> bool:
    """Whether a message from ``MimeBuilder.build`` can only travel as SMTPUTF8 (RFC 6531)."""
    return email.policy is UTF8_POLICY


def _ascii_domain(address: str) -> str:
    """The address with its domain in IDNA form, as the library that accepted it spells it.
    Only a non-ASCII address pays for that: building mail is on the benchmark's hot path."""
    if address.isascii():
        return address
    valid = validate_email(address, check_deliverability=False)  # EmailNotValidError: ValueError
    return f"{valid.local_part}@{valid.ascii_domain}"


def _boundary() -> str:
    """A random 128-bit multipart boundary, which no body contains but by a 2**-128 chance (what
    Go's ``mime/multipart`` relies on). Left to the generator, the boundary is 63 random bits
    checked against the bodies with a regular expression compiled anew for every message: a
    quarter of the time it takes to generate one. ``=`` cannot start a quoted-printable line."""
    return f"=={secrets.token_hex(16)}=="
