"""Activation codes: CSPRNG-made, kept as keyed HMACs, and checked across a key rotation."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr

from activities.codes import ActivationCodes
from activities.models import IssuedActivation
from common.keys import KeyConfigError, hmac_key, hmac_keys

OLD, NEW = secrets.token_bytes(32), secrets.token_bytes(32)
REGISTRATION = "registration-ann@example.com"


def issued_with(codes: ActivationCodes, code: str) -> IssuedActivation:
    return IssuedActivation(sequence=1, code_digest=codes.digest(REGISTRATION, 1, code))


def test_codes_are_six_digits() -> None:
    assert all(len(c) == 6 and c.isdigit() for c in (ActivationCodes.new_code() for _ in "abc"))


def test_a_rotated_key_still_checks_the_codes_it_made() -> None:
    pending = issued_with(ActivationCodes([OLD]), "042137")
    rotated = ActivationCodes([NEW, OLD])
    assert rotated.matches(REGISTRATION, pending, "042137")
    assert not rotated.matches(REGISTRATION, pending, "042138")
    assert not ActivationCodes([NEW]).matches(REGISTRATION, pending, "042137")  # old one gone
    fresh = issued_with(rotated, "555000")
    assert ActivationCodes([NEW]).matches(REGISTRATION, fresh, "555000")  # made with the newest


def key_text(*keys: bytes) -> SecretStr:
    return SecretStr(",".join(base64.urlsafe_b64encode(key).decode() for key in keys))


def test_code_keys_are_a_list_and_the_id_key_is_one(tmp_path: Path) -> None:
    assert hmac_keys(key_text(NEW, OLD), tmp_path, "code") == [NEW, OLD]
    assert hmac_key(key_text(NEW), tmp_path, "id") == NEW
    with pytest.raises(KeyConfigError, match=r"^REGISTRATION_ID_KEY: one key only"):
        hmac_key(key_text(NEW, OLD), tmp_path, "id")
    with pytest.raises(KeyConfigError, match=r"^REGISTRATION_CODE_KEY: needs at least 32 bytes"):
        hmac_keys(key_text(NEW, b"short"), tmp_path, "code")
