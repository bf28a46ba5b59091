"""Bad input gets a clear error naming the field, and nothing is half-created."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError
from temporalio.testing import WorkflowEnvironment

from activities.errors import PasswordRejected
from activities.identity import IdentityActivities
from activities.models import CreatePrincipalInput
from activities.roles import NewPrincipal
from common.keys import fernet_keys
from common.passwords import PasswordPolicy
from common.sealing import Sealer
from common.settings import Settings
from starter.client import InvalidInput, RegistrationClient, UnknownRegistration
from tests.helpers import (
    PASSWORD,
    identity,
    nothing_started,
    register,
    result_of,
    wait_for_state,
    wrong_code,
)
from tests.stack import Stack
from workflows.models import (
    ActivationOutcome,
    Approval,
    Reason,
    RegistrationInput,
    RegistrationState,
    ResendRequest,
    password_text,
)

REPO = Path(__file__).resolve().parent.parent
NO_SERVER = "127.0.0.1:1"
"""Nothing listens there: for commands that must not need a server, or must report its absence."""


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"email": "not-an-email"}, "email", "not a valid email"),
        ({"email": "a@b@example.com"}, "email", "not a valid email"),
        ({"email": "x" * 250 + "@example.com"}, "email", "254"),
        ({"name": "   "}, "name", "at least 1"),
        ({"name": "N" * 201}, "name", "at most 200"),
        ({"name": "Ivy\r\nBcc: eve@example.com"}, "name", "control characters"),
        ({"name": "Ivy\u2028Eve"}, "name", "line breaks"),
        ({"phone": "call me maybe"}, "phone", "not a phone number"),
        ({"password": "password"}, "password", "commonly used"),
        ({"password": "short"}, "password", "at least 8"),
        ({"password": "p" * 200}, "password", "at most 128"),
        ({"password": "ivy.innes-2024"}, "password", "email or name"),
        ({"password": "\ud83d\ude00" * 6}, "password", "lone surrogate"),  # UTF-16 halves
        ({"password": "correct horse\x00battery"}, "password", "control characters"),
        ({"password": "correct horse\x1b[8mbattery"}, "password", "control characters"),
        ({"name": "Ivy \udcff"}, "name", "unicode string"),  # pydantic's own word
        ({"metadata": {"source": "web\ud800"}}, "metadata", "lone surrogate"),
        ({"tenant": "acme\x00"}, "tenant", "control characters"),
        ({"tenant": "acme\u202e"}, "tenant", "bidirectional"),
        ({"tenant": "acme\nbeta"}, "tenant", "line breaks"),
        ({"profile": {"company\x00": "Acme"}}, "profile", "key 'company\\x00'"),
        ({"profile": {"company": "Acme\x00"}}, "profile", "control characters"),
        ({"metadata": {"source\u2067": "web"}}, "metadata", "bidirectional"),
        ({"metadata": {"source": "web\u202e"}}, "metadata", "bidirectional"),
        ({"metadata": {"a\nb": "web"}}, "metadata", "line breaks"),
    ],
)
async def test_invalid_registration_names_the_field_and_starts_nothing(
    stack: Stack, fields: dict[str, Any], field: str, words: str
) -> None:
    request: dict[str, Any] = {
        "email": "ivy.innes@example.com",
        "name": "Ivy Innes",
        "password": PASSWORD,
    }
    request.update(fields)
    with pytest.raises(InvalidInput) as error:
        await stack.registrations.register(**request)
    assert error.value.field == field
    assert words in str(error.value)
    assert await nothing_started(stack, request["email"])
    assert await identity(stack).find_principal("ivy.innes@example.com") is None


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("Ivy\nInnes", "line breaks"),
        ("Ivy\r\nBcc: eve@example.com", "control characters"),
        ("Ivy\u2028Eve", "line breaks"),
        ("Eve\u202egnp.exe", "bidirectional text controls"),
    ],
)
def test_the_workflow_input_itself_refuses_a_name_that_is_not_one_line(
    name: str, words: str
) -> None:
    """The rule is the contract's: any sender (the Temporal UI, another SDK) is held to it, not
    only the client."""
    fields = {"email": "ivy.innes@example.com", "name": name, "sealed_password": "sealed"}
    decoders: list[Callable[[], RegistrationInput]] = [
        lambda: RegistrationInput.model_validate(fields),
        lambda: RegistrationInput.model_validate_json(json.dumps(fields)),  # as Temporal does
    ]
    for decode in decoders:
        with pytest.raises(ValidationError) as error:
            decode()
        (problem,) = error.value.errors()
        assert problem["loc"] == ("name",) and words in problem["msg"]
    joined = RegistrationInput.model_validate(
        {**fields, "name": "Mehr\u200cdad"}
    )  # ZWNJ, as in Persian
    assert joined.name == "Mehr\u200cdad"


async def test_wrong_codes_are_counted_and_garbage_never_reaches_the_workflow(
    stack: Stack,
) -> None:
    await register(stack, "jack@example.com")
    await wait_for_state(stack, "jack@example.com", RegistrationState.PENDING)
    garbage = ("", "abc", "12345", "1234567", "' or 1=1 --", "9" * 5000, "١٢٣٤٥٦", "t" * 31)
    for text in garbage:
        with pytest.raises(InvalidInput) as error:
            await stack.registrations.submit_code("jack@example.com", text)
        assert error.value.field == "code"
    assert (await stack.registrations.status("jack@example.com")).attempts_left == 20

    code = stack.code_for("jack@example.com")
    token_shaped = "A" * 32  # a link token's form, though none was issued
    spaced = f" {wrong_code(code, 5)} "
    for wrong in (*(wrong_code(code, offset) for offset in range(1, 5)), spaced, token_shaped):
        reply = await stack.registrations.submit_code("jack@example.com", wrong)
        assert reply.outcome in (
            ActivationOutcome.INVALID_CODE,
            ActivationOutcome.TOO_MANY_ATTEMPTS,
        )
    status = await stack.registrations.status("jack@example.com")
    assert status.attempts_left == 15  # five counted; the sixth hit a burned code
    assert status.state is RegistrationState.PENDING


@pytest.mark.parametrize(
    "command",
    [
        lambda registrations, email: registrations.status(email),
        lambda registrations, email: registrations.submit_code(email, "123456"),
        lambda registrations, email: registrations.resend(email),
        lambda registrations, email: registrations.approve(email, "support:kim", "phone"),
        lambda registrations, email: registrations.cancel(email),
    ],
    ids=["status", "submit_code", "resend", "approve", "cancel"],
)
async def test_an_invalid_email_is_named_by_every_command(
    stack: Stack, command: Callable[[RegistrationClient, str], Awaitable[object]]
) -> None:
    """The rules of a registration's email, not an "unknown registration" answer."""
    for email in ("not-an-email", "x" * 250 + "@example.com"):
        with pytest.raises(InvalidInput) as error:
            await command(stack.registrations, email)
        assert error.value.field == "email"


async def test_a_bad_resend_requester_names_the_field(stack: Stack) -> None:
    with pytest.raises(InvalidInput) as error:
        await stack.registrations.resend("kim@example.com", requested_by="")
    assert error.value.field == "requested_by"


async def test_unknown_email_is_a_clear_error(stack: Stack) -> None:
    with pytest.raises(UnknownRegistration, match=r"no registration for nobody@example\.com"):
        await stack.registrations.status("nobody@example.com")
    with pytest.raises(UnknownRegistration):
        await stack.registrations.submit_code("nobody@example.com", "123456")
    with pytest.raises(UnknownRegistration):
        await stack.registrations.cancel("nobody@example.com")


async def cli(
    address: str,
    settings: Settings,
    *args: str,
    stdin: str = "",
    module: str = "starter",
    **variables: str,
) -> tuple[int, dict[str, Any]]:
    """Runs ``python -m starter`` (or another tool's ``module``) as a backend or an operator
    would, against the server at ``address`` (asynchronously: the worker answering it lives in
    this process's event loop). ``variables`` are set in its environment on top of
    ``settings``."""
    environment = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "REGISTRATION_DATA_DIR": str(settings.data_dir),
        "REGISTRATION_TASK_QUEUE": settings.task_queue,
        "REGISTRATION_SEAL_KEY": settings.seal_key.get_secret_value() if settings.seal_key else "",
        "REGISTRATION_CODE_KEY": settings.code_key.get_secret_value() if settings.code_key else "",
        "REGISTRATION_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value()
        if settings.encryption_keys
        else "",
        **variables,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=REPO, env=environment,
    )  # fmt: skip
    # surrogateescape: a lone surrogate U+DC80..U+DCFF in ``stdin`` is sent as the byte it
    # stands for (``"\udcff"`` as 0xFF), as os.fsencode sends it in an argument.
    data = stdin.encode(errors="surrogateescape")
    stdout, stderr = await asyncio.wait_for(process.communicate(data), 60)
    assert process.returncode is not None
    text = stdout.decode()
    output = json.loads(text) if text.strip().startswith("{") else {}
    assert process.returncode == 2 or output, stderr.decode()[-2000:]
    return process.returncode, output


def server_of(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


async def test_cli_exit_codes(dev_env: WorkflowEnvironment, stack: Stack) -> None:
    settings, server = stack.settings, server_of(dev_env)
    code, out = await cli(
        server, settings, "register", "--email", "kim@example.com", "--name", "Kim",
        "--password-stdin", stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0 and out["registration_id"] == "registration-kim@example.com"
    await wait_for_state(stack, "kim@example.com", RegistrationState.PENDING)

    wrong = wrong_code(stack.code_for("kim@example.com"))
    code, out = await cli(
        server, settings, "activate", "--email", "kim@example.com", "--code", wrong
    )
    assert code == 1 and out["outcome"] == "invalid_code"
    code, out = await cli(server, settings, "activate", "--email", "kim@example.com", "--code", "x")
    assert code == 1 and out["error"] == "invalid_input" and out["field"] == "code"
    code, out = await cli(server, settings, "activate", "--email", "kim", "--code", "123456")
    assert code == 1 and out["error"] == "invalid_input" and out["field"] == "email"
    code, out = await cli(server, settings, "status", "--email", "nobody@example.com")
    assert code == 1 and out["error"] == "unknown_registration"
    code, out = await cli(
        server, settings, "register", "--email", "bad", "--name", "B", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert code == 1 and out["field"] == "email"
    code, out = await cli(server, settings, "activate", "--email", "kim@example.com")
    assert code == 2 and out["error"] == "usage" and "--code" in out["message"]

    code, out = await cli(
        server, settings, "activate", "--email", "kim@example.com",
        "--code", stack.code_for("kim@example.com"),
    )  # fmt: skip
    assert code == 0 and out["outcome"] == "activated"
    code, out = await cli(server, settings, "status", "--email", "KIM@example.com")
    assert code == 0 and out["state"] == "active" and out["customer_number"] == "CUST100001"
    await result_of(stack, "registration-kim@example.com")  # the run closes after the welcome
    # Once it has closed, an account's email answers as one never registered (anti-enumeration).
    for command in ("resend", "activate"):
        args = ("--code", "123456") if command == "activate" else ()
        answers = [
            await cli(server, settings, command, "--email", email, *args)
            for email in ("kim@example.com", "nobody@example.com")
        ]
        (code, kim), (same, nobody) = answers
        assert code == same == 1 and kim["error"] == nobody["error"] == "unknown_registration"
        assert kim["message"].replace("kim@", "@") == nobody["message"].replace("nobody@", "@")

    await register(stack, "lee@example.com")
    await wait_for_state(stack, "lee@example.com", RegistrationState.PENDING)
    approve = ("approve", "--operator", "ops", "--reason", "verified by phone", "--email")
    code, out = await cli(server, settings, *approve, "lee@example.com")
    assert code == 0 and out == {"approved": True, "by": "ops"}
    code, out = await cli(server, settings, *approve, "kim@example.com")
    assert code == 1 and (out["error"], out["state"]) == ("not_pending", "active")
    assert "not pending" in out["message"]

    await register(stack, "max@example.com")
    await wait_for_state(stack, "max@example.com", RegistrationState.PENDING)
    code, out = await cli(server, settings, "cancel", "--email", "max@example.com")
    assert code == 0 and out == {"cancelled": True}
    await wait_for_state(stack, "max@example.com", RegistrationState.CANCELLED)
    code, out = await cli(server, settings, "cancel", "--email", "max@example.com")
    assert code == 1 and (out["error"], out["state"]) == ("not_pending", "cancelled")
    # "..., not running" once the run has closed, "already cancelled" while its undos still run
    assert out["message"].startswith("the registration of max@example.com is")
    code, out = await cli(server, settings, "cancel", "--email", "nobody@example.com")
    assert code == 1 and out["error"] == "unknown_registration"


async def test_cli_unreachable_server_and_bad_configuration(settings: Settings) -> None:
    code, out = await cli(NO_SERVER, settings, "status", "--email", "kim@example.com")
    assert code == 3 and out["error"] == "server_unreachable" and out["address"] == NO_SERVER
    assert NO_SERVER in out["message"]

    code, out = await cli(
        NO_SERVER, settings, "status", "--email", "kim@example.com",
        REGISTRATION_ACTIVATION_TTL="PT0S",
    )  # fmt: skip
    assert code == 2 and out["error"] == "configuration"  # found before trying to connect
    assert out["message"].startswith("REGISTRATION_ACTIVATION_TTL: ")


# -- Staff input: one line each (issue 16, defect 7) ----------------------------------------------


@pytest.mark.parametrize(
    ("model", "fields", "field", "words"),
    [
        (Approval, {"operator": "ops\nEve", "reason": "phone"}, "operator", "line breaks"),
        (Approval, {"operator": "ops\u202e", "reason": "phone"}, "operator", "bidirectional"),
        (Approval, {"operator": "ops", "reason": "ok\r\nBcc: x"}, "reason", "control characters"),
        (Approval, {"operator": "ops", "reason": "R" * 501}, "reason", "at most 500"),
        (ResendRequest, {"requested_by": "desk\x00"}, "requested_by", "control characters"),
        (ResendRequest, {"requested_by": "desk\n2"}, "requested_by", "line breaks"),
        (ResendRequest, {"requested_by": "desk\u2066"}, "requested_by", "bidirectional"),
    ],
)
def test_the_contract_holds_staff_input_to_one_line(
    model: type[BaseModel], fields: dict[str, str], field: str, words: str
) -> None:
    """An operator, a requester and a reason show in the status, the Temporal UI and log lines,
    where a line break or a control forges or hides text; the UI's signal dialog is held to it
    too."""
    decoders: list[Callable[[], BaseModel]] = [
        lambda: model.model_validate(fields),
        lambda: model.model_validate_json(json.dumps(fields)),  # as Temporal does
    ]
    for decode in decoders:
        with pytest.raises(ValidationError) as error:
            decode()
        (problem,) = error.value.errors()
        assert problem["loc"] == (field,) and words in problem["msg"]


async def test_an_approval_with_a_bad_operator_or_reason_is_refused_and_sends_nothing(
    stack: Stack,
) -> None:
    email = "opal@example.com"
    await register(stack, email)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    for operator, reason, field in (
        ("support:kim\nsupport:eve", "verified by phone", "operator"),
        ("support:kim\x00", "verified by phone", "operator"),
        ("support:kim", "verified\u202eenohp yb", "reason"),
    ):
        with pytest.raises(InvalidInput) as error:
            await stack.registrations.approve(email, operator, reason)
        assert error.value.field == field
    status = await stack.registrations.status(email)
    assert status.state is RegistrationState.PENDING and status.approved_by is None


async def test_a_resend_requester_on_two_lines_is_refused(stack: Stack) -> None:
    with pytest.raises(InvalidInput) as error:
        await stack.registrations.resend("kim@example.com", requested_by="desk\nadmin")
    assert error.value.field == "requested_by"


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("R" * 10_000, "at most 500"),
        ("duplicate\nrequested by: ceo", "line breaks"),
        ("dup\x1b[2Jlicate", "control characters"),
    ],
)
async def test_a_cancel_with_a_bad_reason_is_refused_and_cancels_nothing(
    stack: Stack, reason: str, words: str
) -> None:
    """The reason goes into the run's history and the Temporal UI as it is given."""
    email = f"quinn.{words.replace(' ', '-')}@example.com"  # the dev server outlives each test
    await register(stack, email)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    with pytest.raises(InvalidInput) as error:
        await stack.registrations.cancel(email, reason)
    assert error.value.field == "reason" and words in str(error.value)
    description = await stack.client.get_workflow_handle(
        stack.registrations.registration_id(email)
    ).describe()
    assert not description.raw_description.workflow_extended_info.cancel_requested
    assert (await stack.registrations.status(email)).state is RegistrationState.PENDING


def test_a_cancel_reason_may_be_empty_and_is_trimmed() -> None:
    assert TypeAdapter(Reason).validate_python("  duplicate sign-up ") == "duplicate sign-up"
    assert TypeAdapter(Reason).validate_python("") == ""


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"tenant": "acme\x00"}, "tenant", "control characters"),
        ({"tenant": "acme\u2066x"}, "tenant", "bidirectional"),
        ({"tenant": "   "}, "tenant", "at least 1"),
        ({"profile": {"\x00": "x"}}, "profile", "control characters"),
        ({"profile": {"company": "Acme\x1b[31m"}}, "profile", "control characters"),
        ({"metadata": {"utm\u202esource": "web"}}, "metadata", "bidirectional"),
        ({"metadata": {"source": "web\x7f"}}, "metadata", "control characters"),
    ],
)
def test_the_workflow_input_refuses_controls_in_tenant_and_entries(
    fields: dict[str, Any], field: str, words: str
) -> None:
    """A tenant and the keys of profile and metadata are one line (names of things, shown in
    the status and written into provider records); their values may span lines, but hold no
    other control character (NUL ends a C string, ESC drives a terminal) and no bidi control."""
    fields = {"email": "ivy@example.com", "name": "Ivy", "sealed_password": "s", **fields}
    decoders: list[Callable[[], RegistrationInput]] = [
        lambda: RegistrationInput.model_validate(fields),
        lambda: RegistrationInput.model_validate_json(json.dumps(fields)),  # as Temporal does
    ]
    for decode in decoders:
        with pytest.raises(ValidationError) as error:
            decode()
        (problem,) = error.value.errors()
        assert problem["loc"] == (field,) and words in problem["msg"]


def test_entry_values_may_span_lines_and_a_tenant_is_trimmed() -> None:
    registration = RegistrationInput(
        email="ivy@example.com",
        name="Ivy",
        sealed_password="s",
        tenant=" acme-se ",
        profile={"delivery_note": "Ring twice.\r\nThen wait.\tThanks"},
        metadata={"k\u00e4lla": "webb"},
    )
    assert registration.tenant == "acme-se"
    assert registration.profile["delivery_note"] == "Ring twice.\r\nThen wait.\tThanks"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "Ivy\ud800"}, "name"),
        ({"tenant": "acme\udcff"}, "tenant"),
        ({"profile": {"company\udfff": "Acme"}}, "profile"),
        ({"profile": {"company": "Acme\udc80"}}, "profile"),
    ],
)
def test_the_workflow_input_refuses_lone_surrogates(fields: dict[str, Any], field: str) -> None:
    """Half a UTF-16 pair is no character: no payload (UTF-8 JSON) can carry it, so it is
    refused by the rule of the field, not by a ``UnicodeEncodeError`` at the start."""
    fields = {"email": "ivy@example.com", "name": "Ivy", "sealed_password": "s", **fields}
    with pytest.raises(ValidationError) as error:
        RegistrationInput.model_validate(fields)
    (problem,) = error.value.errors()
    # A constrained string (a name, a tenant) is refused by pydantic itself ("unable to parse
    # raw data as a unicode string"), the others by the rule of the field.
    assert problem["loc"] == (field,) and "unicode" in problem["msg"].lower()


def test_a_password_may_hold_any_printable_unicode() -> None:
    for password in (
        "correct horse battery staple",
        "\u00e5sa \u263a \U0001f600 \u202e k\u00e4",
        "\u3000x" * 5,
    ):
        assert password_text(password) == password


@pytest.mark.parametrize(
    ("stdin", "encoding"),
    [
        ("correct horse \udcff battery\n", "utf-8:surrogateescape"),  # the C locale's way
        ("correct horse \udcff battery\n", "utf-8:strict"),  # a UTF-8 locale's way
        ("correct horse\tbattery staple\n", "utf-8"),
    ],
    ids=["surrogateescape", "strict", "tab"],
)
async def test_cli_names_a_password_that_is_not_text_without_a_traceback(
    dev_env: WorkflowEnvironment, stack: Stack, stdin: str, encoding: str
) -> None:
    """Bytes on stdin that are not UTF-8 reach Python as lone surrogates (or a decoding error,
    by the locale): either is the JSON error naming the password, and nothing starts."""
    code, out = await cli(
        server_of(dev_env), stack.settings, "register", "--email", "uma@example.com",
        "--name", "Uma", "--password-stdin", stdin=stdin, PYTHONIOENCODING=encoding,
    )  # fmt: skip
    assert code == 1 and out["error"] == "invalid_input" and out["field"] == "password", out
    assert await nothing_started(stack, "uma@example.com")


async def test_cli_names_an_argument_that_is_not_text(
    dev_env: WorkflowEnvironment, stack: Stack
) -> None:
    """An argument's bytes that are not UTF-8 arrive as lone surrogates (os.fsdecode)."""
    code, out = await cli(
        server_of(dev_env), stack.settings, "register", "--email", "vic@example.com",
        "--name", "Vic \udcff", "--password-stdin", stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert code == 1 and out["error"] == "invalid_input" and out["field"] == "name", out
    assert await nothing_started(stack, "vic@example.com")


async def test_cli_names_bad_staff_input(dev_env: WorkflowEnvironment, stack: Stack) -> None:
    email = "wes@example.com"
    await register(stack, email)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    server = server_of(dev_env)
    code, out = await cli(
        server, stack.settings, "approve", "--email", email, "--operator", "ops\nsupport:ceo",
        "--reason", "verified by phone",
    )  # fmt: skip
    assert code == 1 and (out["error"], out["field"]) == ("invalid_input", "operator")
    code, out = await cli(
        server, stack.settings, "cancel", "--email", email, "--reason", "R" * 10_000
    )
    assert code == 1 and (out["error"], out["field"]) == ("invalid_input", "reason")
    assert (await stack.registrations.status(email)).state is RegistrationState.PENDING


@pytest.mark.parametrize("password", ["tab\there and more", "nul\x00byte and more"])
async def test_the_worker_refuses_a_password_the_client_would_have(
    settings: Settings, password: str
) -> None:
    """A sender that seals the password itself (not through the client) is held to the same
    characters: the create fails with ``PasswordRejected``, before the provider sees it."""
    sealer = Sealer(fernet_keys(settings.seal_key, settings.data_dir))
    provider: Any = RefusingProvider()
    identity = IdentityActivities(
        provider, sealer, PasswordPolicy.from_settings(settings), check_email=lambda _: None
    )
    request = CreatePrincipalInput(
        principal=NewPrincipal(
            id="p-1", email="tab@example.com", email_canonical="tab@example.com", name="Tab"
        ),
        sealed_password=sealer.seal(password),
    )
    with pytest.raises(PasswordRejected, match=r"password: must not contain"):
        await identity.create_principal(request)


class RefusingProvider:
    """An identity provider whose create must never be called."""

    in_process = True

    async def create_principal(self, *args: Any) -> Any:
        raise AssertionError("the provider was called")
