"""Turns a rendered ``MailMessage`` into an RFC 5322 message, the same way for every provider.

The Message-ID is derived from the idempotency key, so a retried send carries the same ID and
receivers (and the outbox, which names its files after it) can drop the duplicate.

Internationalized recipients (RFC 6530): an address cannot hold an RFC 2047 encoded-word, so a
non-ASCII domain is written in its IDNA (punycode) form, which every server accepts, and a message
to a non-ASCII local part, which has no ASCII form, gets a UTF-8 policy: it can only be delivered
as SMTPUTF8 (RFC 6531/6532).

Bodies are quoted-printable UTF-8. ``MimeBuilder.build`` makes an ``EmailMessage`` (the SMTP
provider hands it to ``smtplib``); ``MimeBuilder.as_bytes`` writes the same message's bytes from a
layout per template and language (the outbox, which only writes bytes).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import re
import secrets
from datetime import UTC, datetime
from email import quoprimime
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP, SMTPUTF8, Policy, default
from email.utils import format_datetime, parseaddr

from email_validator import validate_email

from activities.errors import ConfigurationError, InvalidRequest
from activities.roles import MailMessage

LAYOUT_CACHE_SIZE = 16
"""Layouts kept (``MimeBuilder.as_bytes``): one per sender, subject and category. The subject
is the mail's language's (``activities.rendering``): a worker's sender has nine, three mails in
three languages."""

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

_LINE_LENGTH = POLICY.max_line_length or 78
"""``POLICY``'s line length (78), to which ``_part`` encodes the bodies."""


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
        if not domain.isascii():  # it goes into every Message-ID, which must be ASCII
            raise ConfigurationError(
                f"REGISTRATION_MAIL_FROM={mail_from!r}: write the domain in its ASCII (IDNA) form,"
                " such as xn--bcher-kva.example for bücher.example"
            )
        self.mail_from = mail_from
        self._domain = domain

    def message_id(self, idempotency_key: str) -> str:
        return self.message_id_of_digest(key_digest(idempotency_key))

    def message_id_of_digest(self, digest: str) -> str:
        return f"<{digest}@{self._domain}>"

    def build(self, message: MailMessage) -> EmailMessage:
        """The message to deliver; ``InvalidRequest`` if a header value would break the header.

        Its policy is ``UTF8_POLICY`` when it needs SMTPUTF8 (see the module docstring and
        ``needs_smtputf8``).
        """
        return self._email(
            message,
            _ascii_domain_or_invalid(message),
            date=format_datetime(datetime.now(UTC)),
            message_id=self.message_id(message.idempotency_key),
            boundary=_boundary(),
        )

    def as_bytes(self, message: MailMessage) -> tuple[bytes, bool]:
        """``build(message)`` as SMTP writes it (CRLF line ends), and whether it needs SMTPUTF8.

        The same bytes, about ten times faster for an everyday recipient (``_PLAIN_ADDRESS``).
        Building and generating a message with the ``email`` package costs ~0.4 ms, most of it
        parsing and folding headers that are the same in every message of a template, and two
        such mails were the largest part of what a registration costs the worker beyond the
        benchmark's no-op shape. So the package generates each template's message once, with
        stand-ins where the per-message values go (``_Layout``), and a message is that layout
        with its values put in. Those values need no encoding (the recipient must be a plain
        address; the date, the Message-ID's digest and the boundary are ASCII made here, of
        fixed length), except the bodies, which are quoted-printable exactly as ``build``
        encodes them (``_quoted_printable``).
        ``tests/test_mail.py`` compares the two byte for byte. Any other recipient (non-ASCII,
        long, quoted) takes ``build``."""
        to = _ascii_domain_or_invalid(message)
        plain = _PLAIN_ADDRESS.fullmatch(to)
        layout = _layout(self.mail_from, message.subject, message.category) if plain else None
        if layout is None:
            email = self.build(message)
            utf8 = needs_smtputf8(email)
            return email.as_bytes(policy=SMTPUTF8 if utf8 else SMTP), utf8
        values = {
            _Field.TO: to,
            _Field.DATE: format_datetime(datetime.now(UTC)),
            _Field.MESSAGE_ID: key_digest(message.idempotency_key),
            _Field.BOUNDARY: _boundary(),
            _Field.TEXT: _quoted_printable(message.text),
            _Field.HTML: _quoted_printable(message.html),
        }
        return layout.fill(values), False

    def _email(
        self, message: MailMessage, to: str, *, date: str, message_id: str, boundary: str
    ) -> EmailMessage:
        # The package refuses a line break inside a value, not at its end, which would end the
        # header block early (the rest of the message read as its body).
        if any("\r" in value or "\n" in value for value in (to, message.subject, message.category)):
            raise InvalidRequest(
                f"cannot build the {message.category!r} mail: a header value holds a line break"
            )
        try:
            email = EmailMessage(policy=POLICY if to.isascii() else UTF8_POLICY)
            email["From"] = self.mail_from
            email["To"] = to
            email["Subject"] = message.subject
        except ValueError as err:  # a bad address, a value the package refuses: final
            raise InvalidRequest(f"cannot build the {message.category} mail: {err}") from None
        email["Date"] = date
        email["Message-ID"] = message_id
        email["X-Category"] = message.category
        email["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to no-reply
        # The container and its two parts are made as they end up, not by ``set_content`` then
        # ``make_alternative`` and ``add_alternative``, which move and re-parse headers (and gave
        # the HTML part a MIME-Version of its own).
        email["MIME-Version"] = "1.0"
        email["Content-Type"] = f'multipart/alternative; boundary="{boundary}"'
        email.set_payload(
            [
                _part(message.text, "plain", email.policy),
                _part(message.html, "html", email.policy),
            ]
        )
        return email


@functools.lru_cache(maxsize=LAYOUT_CACHE_SIZE)
def _layout(mail_from: str, subject: str, category: str) -> _Layout | None:
    """The template's message as ``MimeBuilder.build`` generates it, with stand-ins for the
    per-message values; None if the stand-ins do not come out as themselves, each as often as
    expected (a subject that contains one), and then every message of the template takes
    ``build``. A subject that ``build`` refuses (``InvalidRequest``) is refused here the same way.
    Kept by value, not per builder: a provider may make a builder per message (the benchmark's
    outbox makes one per recipient's folder)."""
    stand_in = MailMessage(
        to=_STAND_INS[_Field.TO],
        subject=subject,
        text=_STAND_INS[_Field.TEXT],
        html=_STAND_INS[_Field.HTML],
        category=category,
        idempotency_key="",
    )
    builder = MimeBuilder(mail_from)
    email = builder._email(
        stand_in,
        stand_in.to,
        date=_STAND_INS[_Field.DATE],
        message_id=builder.message_id_of_digest(_STAND_INS[_Field.MESSAGE_ID]),
        boundary=_STAND_INS[_Field.BOUNDARY],
    )
    return _Layout.cut(email.as_bytes(policy=SMTP).decode("ascii"))


def _part(body: str, subtype: str, policy: Policy) -> MIMEPart:
    """Quoted-printable always (``set_content`` would pick 7-bit for ASCII-only text), so that
    a layout's body is encoded by one rule (``_quoted_printable``)."""
    part = MIMEPart(policy=policy)
    part.set_content(body, subtype=subtype, charset="utf-8", cte="quoted-printable")
    return part


def _quoted_printable(body: str) -> str:
    """``body`` as a part from ``_part`` holds it and the SMTP generator writes it: the
    ``email`` package's quoted-printable of its UTF-8 lines, joined and ended by LF, then
    written with CRLF (``email.contentmanager._encode_text``, ``Generator._write_lines``)."""
    lines = body.encode("utf-8").splitlines()
    normal = b"\n".join(lines) + b"\n"
    encoded = quoprimime.body_encode(normal.decode("latin-1"), _LINE_LENGTH)
    return encoded.replace("\n", "\r\n")


class _Field(enum.Enum):
    """The per-message values of a layout."""

    TO = enum.auto()
    DATE = enum.auto()
    MESSAGE_ID = enum.auto()
    BOUNDARY = enum.auto()
    TEXT = enum.auto()
    HTML = enum.auto()


_STAND_INS = {
    _Field.TO: "stand-in-to@stand-in.invalid",
    _Field.DATE: "Sat, 01 Jan 2000 00:00:00 +0000",
    _Field.MESSAGE_ID: "c" * 32,  # the digest only: the package may fold the sender's domain
    _Field.BOUNDARY: f"=={'b' * 32}==",
    _Field.TEXT: "standintextbody",
    _Field.HTML: "standinhtmlbody",
}
"""Values that the ``email`` package writes as they are. A body's stand-in comes out with the
line end its encoding adds, which ``_quoted_printable`` adds too."""

_TIMES = {field: 1 for field in _Field} | {_Field.BOUNDARY: 4}
"""How often each stand-in appears in a layout: the boundary in the Content-Type header, before
each of the two parts and at the end."""

_CUTS = re.compile(
    "|".join(
        f"({re.escape(value)}\r\n)"
        if field in (_Field.TEXT, _Field.HTML)
        else f"({re.escape(value)})"
        for field, value in _STAND_INS.items()
    )
)

_PLAIN_ADDRESS = re.compile(
    r"(?=.{1,74}$)[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
)
"""A recipient that the ``email`` package writes as it is: ``To: <address>`` on one line of at
most 78 characters, with dot-atoms of letters, digits and ``_+-`` and an ASCII domain."""


@dataclasses.dataclass(frozen=True)
class _Layout:
    """A generated message cut at its stand-ins: ``texts[0]``, the value of ``fields[0]``,
    ``texts[1]``, and so on to ``texts[-1]``."""

    texts: tuple[str, ...]
    fields: tuple[_Field, ...]

    @classmethod
    def cut(cls, generated: str) -> _Layout | None:
        # ``split`` with one group per stand-in: text, the groups of one match (one of them set),
        # text, the groups of the next match, ... text.
        pieces = _CUTS.split(generated)
        step = len(_STAND_INS) + 1
        texts = tuple(pieces[::step])
        fields = tuple(
            next(
                field for field, hit in zip(_Field, pieces[at : at + step - 1], strict=True) if hit
            )
            for at in range(1, len(pieces), step)
        )
        if {field: fields.count(field) for field in _Field} != _TIMES:
            return None
        return cls(texts, fields)

    def fill(self, values: dict[_Field, str]) -> bytes:
        out = [self.texts[0]]
        for field, text in zip(self.fields, self.texts[1:], strict=True):
            out += (values[field], text)
        return "".join(out).encode("ascii")


def needs_smtputf8(email: EmailMessage) -> bool:
    """Whether a message from ``MimeBuilder.build`` can only travel as SMTPUTF8 (RFC 6531)."""
    return email.policy is UTF8_POLICY


def _ascii_domain_or_invalid(message: MailMessage) -> str:
    try:
        return _ascii_domain(message.to)
    except ValueError as err:  # a bad address: final
        raise InvalidRequest(f"cannot build the {message.category} mail: {err}") from None


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
