"""Password policy (NIST SP 800-63B): length in code points, blocklist, context words."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

import pytest

from common.passwords import PasswordPolicy, PasswordPolicyError, common_passwords
from common.settings import Settings

POLICY = PasswordPolicy()
GOOD = "vq8#Lm2z"  # 8 characters, not on the list


def rejected(password: str, context: Iterable[str] = ()) -> str:
    with pytest.raises(PasswordPolicyError) as info:
        POLICY.check(password, context=context)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_defaults() -> None:
    assert (POLICY.min_length, POLICY.max_length) == (8, 128)


def test_min_length_boundary() -> None:
    assert rejected(GOOD[:7]) == "password: must be at least 8 characters"
    POLICY.check(GOOD)
    assert rejected("") == "password: must be at least 8 characters"


def test_max_length_boundary() -> None:
    POLICY.check("ab1-" * 32)  # 128
    assert rejected("ab1-" * 32 + "x") == "password: must be at most 128 characters"
    assert rejected("x7" * 100) == "password: must be at most 128 characters"


def test_no_composition_rules() -> None:
    POLICY.check("all lower case words here")
    POLICY.check("zzyzx quokka")
    POLICY.check("19283746501")


def test_length_counts_code_points_after_nfkc() -> None:
    decomposed = unicodedata.normalize("NFD", "é") * 4  # 8 code points, 4 after NFKC
    assert len(decomposed) == 8
    assert rejected(decomposed) == "password: must be at least 8 characters"
    POLICY.check(unicodedata.normalize("NFD", "é") * 8)  # 16 raw, 8 after NFKC
    POLICY.check(unicodedata.normalize("NFD", "ü") * 128)  # 256 raw, 128 after NFKC
    POLICY.check("🔒" * 8)  # 8 code points, 32 UTF-8 bytes
    assert rejected("🔒" * 7) == "password: must be at least 8 characters"
    assert rejected("ß" * 129) == "password: must be at most 128 characters"
    # Halfwidth katakana KA with a separate halfwidth voicing mark: 8 code points typed, 4 hashed.
    assert rejected("\uff76\uff9e" * 4) == "password: must be at least 8 characters"


def fullwidth(text: str) -> str:
    """ASCII letters and digits in their fullwidth forms (U+FF01..U+FF5E), which NFKC folds back."""
    return "".join(chr(ord(char) + 0xFEE0) for char in text)


@pytest.mark.parametrize(
    "password",
    [
        fullwidth("password1"),
        fullwidth("12345678"),
        fullwidth("QWERTYUIOP"),
        "".join(chr(0x2460 + i) for i in range(8)),  # circled digits one to eight
    ],
)
def test_compatibility_forms_of_blocklisted_passwords_rejected(password: str) -> None:
    """Judged in the form Argon2id hashes (NFKC): these would be stored as ``password1``,
    ``12345678`` and ``qwertyuiop``."""
    assert unicodedata.normalize("NFKC", password).casefold() in common_passwords()
    assert rejected(password) == "password: is a commonly used password"


def test_context_words_matched_in_compatibility_forms() -> None:
    msg = rejected(fullwidth("janesecret99"), context=["jane@example.com", "Janet Doe"])
    assert msg == "password: must not contain your email or name"
    msg = rejected("janesecret99", context=[fullwidth("jane") + "@example.com"])
    assert msg == "password: must not contain your email or name"


@pytest.mark.parametrize("password", ["password", "PASSWORD", "Password1", "iloveyou", "trustno1"])
def test_blocklisted_passwords_rejected_case_insensitively(password: str) -> None:
    assert rejected(password) == "password: is a commonly used password"


def test_blocklist_loaded_from_package_data() -> None:
    words = common_passwords()
    assert len(words) == 10_000  # the header comment is not an entry
    assert not any(w.startswith("#") for w in words)
    assert {"123456", "password", "qwerty", "password1"} <= words
    assert GOOD.casefold() not in words
    assert common_passwords() is words  # loaded once


@pytest.mark.parametrize(
    "password",
    ["jsmith2024!", "xxJSMITHxx", "Watson-rules", "my name is mary-ann"],
)
def test_context_words_rejected(password: str) -> None:
    context = ["J.Smith+shop@example.org", "Mary-Ann Watson"]
    assert rejected(password, context=context) == "password: must not contain your email or name"


def test_context_equal_to_local_part_rejected() -> None:
    msg = rejected("alexander99", context=["alexander99@example.com"])
    assert msg == "password: must not contain your email or name"


def test_short_context_words_and_domain_are_ignored() -> None:
    context = ["jo@example.org", "Li Jo"]
    POLICY.check("jojo li li example.org", context=context)
    POLICY.check("jojo li li example.org")


def test_from_settings() -> None:
    settings = Settings(_env_file=None, password_min_length=12, password_max_length=64)
    policy = PasswordPolicy.from_settings(settings)
    assert (policy.min_length, policy.max_length) == (12, 64)
    with pytest.raises(PasswordPolicyError, match="at least 12"):
        policy.check("vq8#Lm2zRt9")
    policy.check("vq8#Lm2zRt9!")
    with pytest.raises(PasswordPolicyError, match="at most 64"):
        policy.check("k" * 65)


def test_inconsistent_limits_rejected() -> None:
    with pytest.raises(ValueError, match="min_length"):
        PasswordPolicy(min_length=20, max_length=10)
