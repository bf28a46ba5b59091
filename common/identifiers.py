"""Canonical emails and the workflow IDs derived from them.

One registration per canonical email at a time is enforced by Temporal itself: the workflow ID is a
function of the canonical email, and Temporal allows one running execution per ID.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from enum import StrEnum

import idna

PREFIX = "registration-"


class WorkflowIdMode(StrEnum):
    """How a registration's workflow ID is derived from the canonical email."""

    EMAIL = "email"
    """``registration-<canonical email>``: readable in the Temporal UI."""
    HASHED = "hashed"
    """``registration-<keyed hash>``: keeps PII out of workflow IDs (and search attributes)."""


def canonical_email(email: str) -> str:
    """Trim, NFC-normalize and lower-case: the identity key (the display spelling is kept apart).

    A domain written in IDNA's ASCII form (``xn--exmple-cua.com``) is the same mailbox as its
    Unicode form (``exämple.com``), so it is decoded first: one canonical email, one principal,
    one workflow ID. Domains that are not valid IDNA stay as given (the email validator refuses
    them anyway)."""
    local, at, domain = unicodedata.normalize("NFC", email.strip()).rpartition("@")
    if "xn--" in domain.lower():
        try:
            domain = idna.decode(domain)
        except idna.IDNAError:
            pass
    return f"{local}{at}{domain}".lower()


def registration_id(email: str, mode: WorkflowIdMode, key: bytes | None = None) -> str:
    """The workflow ID for an email; ``hashed`` mode keeps the address out of Temporal."""
    canonical = canonical_email(email)
    if mode is WorkflowIdMode.EMAIL:
        return PREFIX + canonical
    if not key:
        raise ValueError("REGISTRATION_ID_KEY is required with workflow_id_mode=hashed")
    return PREFIX + hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()[:40]
