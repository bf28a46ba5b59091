"""Canonical emails and workflow IDs: one identity per mailbox, however its address is spelled."""

from __future__ import annotations

import unicodedata

import pytest

from common.identifiers import WorkflowIdMode, canonical_email, registration_id
from workflows.models import RegistrationInput

KEY = b"k" * 32


@pytest.mark.parametrize(
    "spelling",
    [
        "  Åsa@Exämple.COM ",
        unicodedata.normalize("NFD", "åsa@exämple.com"),
        "åsa@xn--exmple-cua.com",
        "ÅSA@XN--EXMPLE-CUA.COM",
    ],
)
def test_spellings_of_one_mailbox_have_one_canonical_email(spelling: str) -> None:
    assert canonical_email(spelling) == "åsa@exämple.com"
    for mode in WorkflowIdMode:
        assert registration_id(spelling, mode, KEY) == registration_id("åsa@exämple.com", mode, KEY)


def test_a_domain_that_is_not_idna_stays_as_given() -> None:
    assert canonical_email("a@xn--zz.example") == "a@xn--zz.example"


def test_hashed_ids_keep_the_address_out_and_need_a_key() -> None:
    hashed = registration_id("ann@example.com", WorkflowIdMode.HASHED, KEY)
    assert "ann" not in hashed and hashed.startswith("registration-")
    assert (
        registration_id("ann@example.com", WorkflowIdMode.EMAIL) == "registration-ann@example.com"
    )
    with pytest.raises(ValueError, match="REGISTRATION_ID_KEY"):
        registration_id("ann@example.com", WorkflowIdMode.HASHED, None)


ONE_MAILBOX = (
    "x@example.com",
    "X@EXAMPLE.COM",
    "x@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",  # fullwidth letters
    "x@example\u3002com",  # ideographic full stop
    "x@example\uff0ecom",  # fullwidth full stop
    "\uff58@example.com",  # fullwidth local part
)


@pytest.mark.parametrize("spelling", ONE_MAILBOX)
def test_every_spelling_that_reaches_one_mailbox_is_one_identity(spelling: str) -> None:
    """The canonical email is the address mail is delivered to: the domain as UTS-46 maps it
    (what the validator and the mail builder use), the local part NFKC; one workflow ID."""
    assert canonical_email(spelling) == "x@example.com"
    for mode in WorkflowIdMode:
        assert registration_id(spelling, mode, KEY) == registration_id("x@example.com", mode, KEY)


@pytest.mark.parametrize("spelling", ONE_MAILBOX)
def test_a_registration_keeps_an_address_mail_reaches(spelling: str) -> None:
    """What the registration keeps, and mails, is a spelling of the canonical mailbox up to
    letter case: no fullwidth domain in a customer record, no code mailed to another local
    part than the one the identity names."""
    registration = RegistrationInput(email=spelling, name="X", sealed_password="sealed")
    assert registration.email.lower() == "x@example.com"
    assert registration.canonical_email == "x@example.com"


def test_a_spelling_that_differs_only_in_case_is_kept_for_display() -> None:
    registration = RegistrationInput(email="Nia@Example.com", name="N", sealed_password="s")
    assert registration.email == "Nia@Example.com"
    assert registration.canonical_email == "nia@example.com"


def test_a_look_alike_domain_in_another_script_stays_another_mailbox() -> None:
    cyrillic = "x@ex\u0430mple.com"  # CYRILLIC SMALL LETTER A
    assert canonical_email(cyrillic) == "x@ex\u0430mple.com"
    assert canonical_email(cyrillic) != canonical_email("x@example.com")
    for mode in WorkflowIdMode:
        assert registration_id(cyrillic, mode, KEY) != registration_id("x@example.com", mode, KEY)
