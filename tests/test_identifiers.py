"""Canonical emails and workflow IDs: one identity per mailbox, however its address is spelled."""

from __future__ import annotations

import unicodedata

import pytest

from common.identifiers import WorkflowIdMode, canonical_email, registration_id

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
