"""The workflow's contract under fuzzing: any JSON-ish value is a valid model or a pydantic
``ValidationError`` naming what is wrong, never another exception (``TypeError``,
``UnicodeEncodeError``...); a valid model round-trips through JSON as Temporal carries it; the
canonical email is idempotent and has no upper-case ASCII letter."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from common.identifiers import canonical_email
from tests.fuzz.strategies import any_text, emails, junk, or_junk, text_maps
from workflows.models import (
    Approval,
    CodeSubmission,
    RegistrationInput,
    RegistrationPolicy,
    ResendRequest,
)

_durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=60)) | st.sampled_from(
    ["24h", "PT24H", "86400", "P31D", "-1", "1e309", "nan"]
)
policies = st.fixed_dictionaries(
    {},
    optional={
        "activation_ttl": or_junk(_durations),
        "max_attempts_per_code": or_junk(st.integers(-2, 10**20)),
        "max_attempts_total": or_junk(st.integers(-2, 100)),
        "max_resends": or_junk(st.integers(-2, 100)),
        "resend_interval": or_junk(_durations),
        "customer_number_prefix": or_junk(st.from_regex(r"[A-Z][A-Z0-9-]{0,11}") | any_text),
        "max_failures_per_window": or_junk(st.integers(-2, 1000)),
        "failure_window": or_junk(_durations),
    },
)
registrations = st.fixed_dictionaries(
    {
        "email": or_junk(emails),
        "name": or_junk(any_text),
        "sealed_password": or_junk(any_text),
    },
    optional={
        "phone": or_junk(st.from_regex(r"\+?[0-9][0-9 ()./-]{3,24}") | any_text),
        "locale": or_junk(st.sampled_from(["en", "sv-SE", "zh_Hant_TW"]) | any_text),
        "profile": or_junk(text_maps),
        "metadata": or_junk(text_maps),
        "tenant": or_junk(any_text),
        "policy": or_junk(policies),
        "prior_failures": or_junk(st.fixed_dictionaries({"count": junk, "since": junk})),
    },
)
submissions = st.fixed_dictionaries(
    {}, optional={"code": or_junk(any_text), "sealed_code": or_junk(any_text)}
)
approvals = st.fixed_dictionaries(
    {}, optional={"operator": or_junk(any_text), "reason": or_junk(any_text)}
)
resends = st.fixed_dictionaries({}, optional={"requested_by": or_junk(any_text)})


def valid_or_refused(model: type[BaseModel], value: Any) -> BaseModel | None:
    """``value`` as ``model`` (round-tripped through JSON, as Temporal carries it), or None if
    it is refused with a ``ValidationError``. Any other exception fails the test."""
    try:
        valid = model.model_validate(value)
    except ValidationError as err:
        assert err.errors(), "a refusal names what is wrong"
        return None
    assert model.model_validate_json(valid.model_dump_json()) == valid
    return valid


@pytest.mark.parametrize(
    ("model", "values"),
    [
        (RegistrationInput, registrations),
        (CodeSubmission, submissions),
        (Approval, approvals),
        (ResendRequest, resends),
        (RegistrationPolicy, policies),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
@given(data=st.data())
def test_any_value_is_a_valid_model_or_a_validation_error(
    model: type[BaseModel], values: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    valid_or_refused(model, data.draw(values | junk, label=model.__name__))


@given(registrations)
@example({"email": "\u03aa\u0301@example.com", "name": "Ypsilon", "sealed_password": "x"})
def test_a_valid_registrations_canonical_email_is_idempotent(value: Any) -> None:
    """One mailbox, one key: the canonical email of the canonical email is itself, and it has no
    upper-case ASCII letter (the workflow ID and every lookup are made of it)."""
    registration = valid_or_refused(RegistrationInput, value)
    if registration is None:
        return
    assert isinstance(registration, RegistrationInput)
    canonical = registration.canonical_email
    assert canonical_email(canonical) == canonical
    assert canonical_email(registration.email) == canonical
    assert not any("A" <= letter <= "Z" for letter in canonical)


@given(emails)
@example("\u03aa\u0301@example.com")  # lower-casing undid NFKC: a second key for one mailbox
@example("\u00b8x@")  # invalid: NFKC made a leading space after the trim
def test_canonical_email_is_idempotent_for_any_text(email: str) -> None:
    """Also an address the validator refuses (a lookup's key: it must name no other one)."""
    canonical = canonical_email(email)
    assert canonical_email(canonical) == canonical
    assert not any("A" <= letter <= "Z" for letter in canonical)


@given(submissions)
@example({"sealed_code": "\ud800"})  # took a lone surrogate, which no payload can carry
def test_a_valid_code_submission_has_exactly_one_code(value: Any) -> None:
    submission = valid_or_refused(CodeSubmission, value)
    if submission is not None:
        assert isinstance(submission, CodeSubmission)
        assert (submission.code is None) != (submission.sealed_code is None)
