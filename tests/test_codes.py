"""Activation codes: derived per issuance with a keyed PRF (the same on a retry, uniform), kept as
keyed HMACs, and checked across a key rotation; their keys are read strictly; a code sealed with
a key the worker lacks is a configuration error."""

from __future__ import annotations

import base64
import logging
import re
import secrets
from collections import Counter
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.codes import ActivationCodes, CodeActivities, Issuance
from activities.models import IssuedActivation, VerifyActivationInput
from common import command_line as exits
from common.keys import KeyConfigError, hmac_key, hmac_keys
from common.sealing import Sealer
from starter.client import RegistrationClient, SealKeyMismatch
from tests.helpers import eventually, register, wait_for_state, wrong_code
from tests.stack import Stack
from tests.test_bad_input import cli as run_cli
from tests.test_bad_input import server_of
from workflows.models import SEAL_MISMATCH, ActivationOutcome, CodeSubmission, RegistrationState
from workflows.registration import RegistrationWorkflow

OLD, NEW = secrets.token_bytes(32), secrets.token_bytes(32)
REGISTRATION = "registration-ann@example.com"


def issued_with(codes: ActivationCodes, code: str) -> IssuedActivation:
    return IssuedActivation(sequence=1, code_digest=codes.digest(REGISTRATION, 1, code))


FIXED = ActivationCodes([bytes(range(32))])
"""Fixed key and inputs: the statistical checks below are deterministic, never flaky."""


def issuance(sequence: int = 1, run_id: str = "run-1") -> Issuance:
    return Issuance(REGISTRATION, run_id, sequence)


def test_codes_and_tokens_are_derived_per_issuance() -> None:
    code, token = FIXED.code(issuance()), FIXED.link_token(issuance())
    assert len(code) == 6 and code.isdigit()
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token)  # 192 bits, as secrets.token_urlsafe(24)
    assert (FIXED.code(issuance()), FIXED.link_token(issuance())) == (code, token)  # a retry
    again = ActivationCodes([bytes(range(32)), OLD])  # the newest key derives
    assert (again.code(issuance()), again.link_token(issuance())) == (code, token)
    others = [issuance(2), issuance(run_id="run-2"), Issuance("registration-bob", "run-1", 1)]
    assert code not in {FIXED.code(other) for other in others}
    assert token not in {FIXED.link_token(other) for other in others}
    assert ActivationCodes([NEW]).code(issuance()) != ActivationCodes([OLD]).code(issuance())


def test_a_derived_code_is_not_its_own_digest() -> None:
    """Derivation and digest share the key but not the function: nothing derived (code, token,
    mail tag) is a digest or part of one, so history's digests tell nothing about the next."""
    secrets_ = (FIXED.code(issuance()), FIXED.link_token(issuance()))
    digests = {FIXED.digest(REGISTRATION, 1, secret) for secret in secrets_}
    derived = [*secrets_, FIXED.mail_tag(issuance(), *secrets_)]
    assert not any(part in digest for part in derived for digest in digests)


def test_derived_codes_are_uniform() -> None:
    """20,000 codes over fixed inputs: each leading and trailing digit about a tenth (the
    standard deviation is 42; the bound is 6 of it), and the codes spread over the range."""
    codes = [FIXED.code(issuance(sequence)) for sequence in range(1, 20_001)]
    for position in (0, 5):
        counts = Counter(code[position] for code in codes)
        assert sorted(counts) == list("0123456789")
        assert all(abs(count - 2_000) <= 250 for count in counts.values()), counts
    assert len(set(codes)) > 19_500  # birthday collisions expected: ~200
    values = sorted(int(code) for code in codes)
    assert values[0] < 1_000 and values[-1] > 999_000


def test_a_word_that_would_bias_the_code_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rejection sampling: a 32-bit word at or above the last whole multiple of 10**6 is skipped
    (reducing it mod 10**6 would favour the low codes), also for a whole block of them."""
    limit = (2**32 // 10**6) * 10**6
    blocks = [
        (limit + 1).to_bytes(4, "big") * 8,  # every word rejected: the next block
        limit.to_bytes(4, "big") + (limit - 1).to_bytes(4, "big") + bytes(24),
    ]
    asked: list[tuple[str, ...]] = []

    def prf(label: str, issued: Issuance, *extra: str) -> bytes:
        asked.append(extra)
        return blocks[len(asked) - 1]

    codes = ActivationCodes([NEW])
    monkeypatch.setattr(codes, "_prf", prf)
    assert codes.code(issuance()) == f"{(limit - 1) % 10**6:06d}" == "999999"
    assert asked == [("0",), ("1",)]


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
    with pytest.raises(KeyConfigError, match=r"^REGISTRATION_CODE_KEY: key 2 has fewer than 32"):
        hmac_keys(key_text(NEW, b"short"), tmp_path, "code")
    unpadded = SecretStr(f"{key_text(NEW).get_secret_value().rstrip('=')},")
    assert hmac_key(unpadded, tmp_path, "id") == NEW  # one key, and a trailing comma


URLSAFE = bytes.fromhex("fbff" * 16)
"""A key whose base64 uses the two characters where the urlsafe alphabet differs: ``-_``."""
URLSAFE_TEXT = base64.urlsafe_b64encode(URLSAFE).decode()
NEW_TEXT = base64.urlsafe_b64encode(NEW).decode()


@pytest.mark.parametrize(
    ("value", "keys"),
    [
        (URLSAFE_TEXT.rstrip("="), [URLSAFE]),  # unpadded, as REGISTRATION_ENCRYPTION_KEYS takes
        (f"{URLSAFE_TEXT.rstrip('=')}, {NEW_TEXT}", [URLSAFE, NEW]),
        (f"{URLSAFE_TEXT},", [URLSAFE]),  # a trailing comma, as REGISTRATION_SEAL_KEY takes
        (f" , {URLSAFE_TEXT} ,, {NEW_TEXT} ", [URLSAFE, NEW]),
    ],
    ids=["unpadded", "unpadded-first", "trailing-comma", "blank-parts"],
)
def test_hmac_keys_read_like_the_other_keys(tmp_path: Path, value: str, keys: list[bytes]) -> None:
    assert hmac_keys(SecretStr(value), tmp_path, "code") == keys


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "password password password password password pass",  # 44 letters without the blanks
            "REGISTRATION_CODE_KEY: key 1 is not urlsafe base64",
        ),
        (
            f"{NEW_TEXT[:20]} $!*{NEW_TEXT[20:]}",  # a key with stray characters
            "REGISTRATION_CODE_KEY: key 1 is not urlsafe base64",
        ),
        (
            f"{NEW_TEXT},{NEW_TEXT[:20]}={NEW_TEXT[20:]}",
            "REGISTRATION_CODE_KEY: key 2 is not urlsafe base64",
        ),
        (f"{NEW_TEXT}, {NEW_TEXT[:20]}", "REGISTRATION_CODE_KEY: key 2 has fewer than 32 bytes"),
        (" , ,", "REGISTRATION_CODE_KEY is empty"),
    ],
    ids=["passphrase", "stray-characters", "padding-inside", "short", "only-commas"],
)
def test_a_malformed_hmac_key_is_refused_without_echoing_it(
    tmp_path: Path, value: str, message: str
) -> None:
    with pytest.raises(KeyConfigError) as error:
        hmac_keys(SecretStr(value), tmp_path, "code")
    assert str(error.value) == message
    with pytest.raises(KeyConfigError, match=r"^REGISTRATION_ID_KEY"):
        hmac_key(SecretStr(value), tmp_path, "id")


# -- A code sealed with a key the worker lacks ---------------------------------------------------


async def test_a_code_the_worker_cannot_open_fails_loudly_and_is_not_a_wrong_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A non-retryable typed error (a retry opens nothing) and a warning naming the variable,
    never the sealed value; a code the worker can open is still checked as before."""
    codes = ActivationCodes([NEW])
    worker_key = Fernet.generate_key()
    verify = CodeActivities(codes, Sealer([worker_key])).verify_activation
    issued = issued_with(codes, "042137")

    def request(sealed_with: bytes, code: str) -> VerifyActivationInput:
        sealed = Sealer([sealed_with]).seal(code)
        return VerifyActivationInput(
            registration_id=REGISTRATION,
            issued=issued,
            submission=CodeSubmission(sealed_code=sealed),
        )

    activities = ActivityEnvironment()
    assert await activities.run(verify, request(worker_key, "042137"))
    assert not await activities.run(verify, request(worker_key, "042138"))

    foreign = request(Fernet.generate_key(), "042137")
    with caplog.at_level(logging.WARNING), pytest.raises(ApplicationError) as error:
        await activities.run(verify, foreign)
    assert error.value.type == SEAL_MISMATCH and error.value.non_retryable
    assert "must share REGISTRATION_SEAL_KEY" in error.value.message
    assert "REGISTRATION_SEAL_KEY" in caplog.text
    sealed = foreign.submission.sealed_code
    assert sealed is not None
    for secret in (sealed, "042137"):
        assert secret not in error.value.message and secret not in caplog.text


async def test_a_code_sealed_with_a_key_the_worker_lacks_is_a_configuration_error(
    dev_env: WorkflowEnvironment, stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A starter that seals with a new key before the workers have it (a rotation in the wrong
    order, or two configurations): the caller is told which variable to fix, the CLI exits 2 as
    for any configuration error, the ``activate`` signal logs it, and no attempt is counted, so
    the code mailed still activates once the keys agree."""
    email = "sealed.elsewhere@example.com"
    receipt = await register(stack, email)  # the password sealed with the worker's key
    await wait_for_state(stack, email, RegistrationState.PENDING)
    assert stack.settings.seal_key is not None
    rotated_first = stack.settings.model_copy(
        update={
            "seal_key": SecretStr(
                f"{Fernet.generate_key().decode()},{stack.settings.seal_key.get_secret_value()}"
            )
        }
    )
    starter = RegistrationClient(stack.client, rotated_first)
    code = stack.code_for(email)

    with pytest.raises(SealKeyMismatch) as error:
        await starter.submit_code(email, code)
    message = str(error.value)
    assert message.startswith("REGISTRATION_SEAL_KEY: ")
    assert "must share REGISTRATION_SEAL_KEY" in message
    with pytest.raises(SealKeyMismatch):  # a wrong code alike: the worker cannot tell them apart
        await starter.submit_code(email, wrong_code(code))
    exit_code, answer = await run_cli(
        server_of(dev_env), rotated_first, "activate", "--email", email, "--code", code
    )
    assert (exit_code, answer) == (exits.USAGE, {"error": "configuration", "message": message})

    caplog.set_level(logging.WARNING)
    sealed = Sealer([Fernet.generate_key()]).seal(code)
    handle = stack.client.get_workflow_handle(receipt.registration_id)
    await handle.signal(RegistrationWorkflow.activate, CodeSubmission(sealed_code=sealed))

    async def logged() -> bool:
        return f"code check failed: {SEAL_MISMATCH}: " in caplog.text

    await eventually(logged, "the activate signal logs the seal mismatch")
    assert code not in caplog.text and sealed not in caplog.text

    status = await stack.registrations.status(email)
    assert status.state is RegistrationState.PENDING
    assert (status.code_attempts_left, status.attempts_left) == (5, 20)
    reply = await stack.registrations.submit_code(email, code)
    assert reply.outcome is ActivationOutcome.ACTIVATED
