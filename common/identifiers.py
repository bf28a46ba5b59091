"""Canonical emails and the workflow IDs derived from them.

One registration per canonical email at a time is enforced by Temporal itself: the workflow ID is a
function of the canonical email, and Temporal allows one running execution per ID.

The canonical email is the mailbox that mail is delivered to, whatever the spelling that reached
it. The domain is the one IDNA 2008 with the UTS-46 mapping makes of it: what ``email_validator``
accepts, and what the mail builder turns into the A-label that mail travels to, so fullwidth
letters, ideographic full stops and A-labels spell one domain with the plain spelling. It is kept
in its Unicode form (U-label). The local part is NFKC. Both are lower-cased. A look-alike in
another script (a Cyrillic ``a``, U+0430) is another domain and stays one.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from enum import StrEnum
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

PREFIX = "registration-"


class WorkflowIdMode(StrEnum):
    """How a registration's workflow ID is derived from the canonical email."""

    EMAIL = "email"
    """``registration-<canonical email>``: readable in the Temporal UI."""
    HASHED = "hashed"
    """``registration-<keyed hash>``: keeps PII out of workflow IDs (and search attributes)."""


@lru_cache(maxsize=4096)
def _mailbox(email: str) -> tuple[str, str, str]:
    """``(local part, domain as given, domain as mail reaches it)``; ``EmailNotValidError`` (a
    ``ValueError``) for an address the validator refuses.

    The local part is NFKC: no transport maps it (the domain's mapping is IDNA's), so a
    fullwidth ``x`` (U+FF58) would be mailed as such, and mail servers (those that take
    non-ASCII local parts at all) deliver it to ``x`` or not at all; NFKC makes it the ``x``
    that mail reaches, as ``common.passwords`` does for passwords. The split is at the last ASCII
    ``@``: a fullwidth at-sign (U+FF20) stays, and the validator refuses it with its own
    message."""
    local, at, domain = unicodedata.normalize("NFC", email.strip()).rpartition("@")
    valid = validate_email(
        unicodedata.normalize("NFKC", local) + at + domain, check_deliverability=False
    )
    return valid.local_part, domain, valid.domain


def mail_address(email: str) -> str:
    """The address a registration keeps, shows and mails: trimmed, the local part NFKC (its case
    kept), the domain as given when it differs from its mapped form only in letter case
    (``Alice@Example.com`` stays), else the mapped form (``example`` in fullwidth letters is
    kept as ``example``, so no record holds a domain spelling that other software cannot mail).
    Raises ``EmailNotValidError`` (a ``ValueError``) for an address that is not valid."""
    local, given, mapped = _mailbox(email)
    return f"{local}@{given if given.lower() == mapped else mapped}"


def canonical_email(email: str) -> str:
    """The identity key: the mailbox (see the module docstring), lower-cased; the spelling given
    is kept apart (``mail_address``). ``Åsa@Exämple.COM`` and ``åsa@xn--exmple-cua.com`` give
    ``åsa@exämple.com``; ``x@example.com`` with ``example`` in fullwidth letters, or with an
    ideographic full stop (U+3002), gives ``x@example.com``: one canonical email, one principal,
    one workflow ID.

    An address the validator refuses (which no registration has) is only NFKC, trimmed and
    lower-cased, so that asking for it names no other registration.

    Idempotent: the canonical email of a canonical email is itself. Lower-casing may undo NFKC
    (``Ϊ́``, U+03AA U+0301, has no precomposed form, its lower case ``ΐ`` has: U+0390), so the
    lower-cased text is made NFKC again (``_folded``); else ``Ϊ́@x.com`` and ``ΐ@x.com``, one
    mailbox, were two canonical emails and two registrations. Trimmed after NFKC, which may
    make a leading space (U+00B8 is a space and a combining cedilla)."""
    try:
        local, _, domain = _mailbox(email)
    except EmailNotValidError:
        return _folded(unicodedata.normalize("NFKC", email).strip())
    return f"{_folded(local)}@{domain}"


def _folded(text: str) -> str:
    """``text`` lower-cased and NFKC again (for NFKC ``text``): what ``canonical_email`` keys on."""
    return unicodedata.normalize("NFKC", text.lower())


def registration_id(email: str, mode: WorkflowIdMode, key: bytes | None = None) -> str:
    """The workflow ID for an email; ``hashed`` mode keeps the address out of Temporal."""
    canonical = canonical_email(email)
    if mode is WorkflowIdMode.EMAIL:
        return PREFIX + canonical
    if not key:
        raise ValueError("REGISTRATION_ID_KEY is required with workflow_id_mode=hashed")
    return PREFIX + hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()[:40]
