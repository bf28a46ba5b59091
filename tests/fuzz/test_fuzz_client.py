"""``RegistrationClient`` under fuzzing, against the dev server with a worker: each call succeeds
or raises one of the client's documented exceptions (``InvalidInput`` naming a field of the call,
``UnknownRegistration``, ``NotPending``, ``Busy``), never anything else; and a call refused as
invalid input started nothing (no workflow for the email's id)."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from temporalio.service import RPCError, RPCStatusCode

from starter.client import Busy, InvalidInput, NotPending, UnknownRegistration
from tests.fuzz.conftest import scaled
from tests.fuzz.strategies import any_text, emails, text_maps
from tests.helpers import PASSWORD
from tests.stack import Stack

FIELDS = {
    "register": {
        "email", "name", "password", "phone", "locale", "profile", "tenant", "metadata",
        "activation_ttl",
    },
    "submit_code": {"email", "code", "request_id"},
    "resend": {"email", "requested_by", "request_id"},
    "status": {"email"},
    "approve": {"email", "operator", "reason"},
    "cancel": {"email", "reason"},
}  # fmt: skip
"""The fields each call's ``InvalidInput`` may name. A ``terminate`` in an example is staff
ending the registration's run in the Temporal UI (not a client call)."""
MAX_ID_BYTES = 1000
"""The server's longest workflow ID (``limit.maxIDLength``)."""

POOL = ["fuzz.a@example.com", "Fuzz.A@Example.COM", "fuzz.b@example.com"]
"""Emails that several calls of an example share (two spell one mailbox), so that calls meet
registrations that exist: pending, active, cancelled."""

_maybe = st.none() | any_text
_emails = st.sampled_from(POOL) | emails
_call = st.one_of(
    st.fixed_dictionaries(
        {
            "call": st.just("register"),
            "email": _emails,
            "name": st.just("Fuzz Tester") | any_text,
            "password": st.just(PASSWORD) | any_text,
        },
        optional={
            "phone": _maybe | st.just("+46 70 123 45 67"),
            "locale": _maybe | st.just("sv-SE"),
            "profile": text_maps,
            "tenant": _maybe,
            "metadata": text_maps,
            "activation_ttl": st.none()
            | st.timedeltas(min_value=timedelta(days=-1), max_value=timedelta(days=40)),
        },
    ),
    st.fixed_dictionaries(
        {"call": st.just("submit_code"), "email": _emails},
        optional={
            "code": any_text | st.from_regex(r"[0-9]{6}", fullmatch=True),
            "request_id": _maybe,
        },
    ),
    st.fixed_dictionaries(
        {"call": st.just("resend"), "email": _emails},
        optional={"requested_by": any_text, "request_id": _maybe},
    ),
    st.fixed_dictionaries({"call": st.just("status"), "email": _emails}),
    st.fixed_dictionaries(
        {
            "call": st.just("approve"),
            "email": _emails,
            "operator": st.just("support") | any_text,
            "reason": st.just("ticket 42") | any_text,
        }
    ),
    st.fixed_dictionaries(
        {"call": st.just("cancel"), "email": _emails}, optional={"reason": any_text}
    ),
    st.fixed_dictionaries({"call": st.just("terminate"), "email": st.sampled_from(POOL)}),
)
calls = st.lists(_call, min_size=1, max_size=4)


async def run_of(stack: Stack, email: str) -> str | None:
    """The run id of the workflow for ``email``'s id, asked of Temporal itself, or None. An id
    that the server cannot take (not UTF-8, longer than its limit) names no workflow: the server
    refuses to start one (and a describe of an id of kilobytes breaks the connection)."""
    try:
        workflow_id = stack.registrations.registration_id(email)
        if len(workflow_id.encode()) > MAX_ID_BYTES:
            return None
    except (ValueError, UnicodeEncodeError):
        return None
    try:
        return (await stack.client.get_workflow_handle(workflow_id).describe()).run_id
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            return None
        raise


@settings(max_examples=scaled(50))
@given(calls)
@example([{"call": "submit_code", "email": POOL[0], "code": "123456", "request_id": ""}])
@example([{"call": "register", "email": POOL[1], "name": "Kim", "password": "\udcff" * 9}])
@example(  # the status query of a run terminated before a worker took it was a raw RPCError
    [
        {"call": "register", "email": POOL[0], "name": "Fuzz Tester", "password": PASSWORD},
        {"call": "terminate", "email": POOL[0]},
        {"call": "submit_code", "email": POOL[1], "code": "123456"},
        {"call": "status", "email": POOL[0]},
    ]
)
@example(
    [
        {"call": "register", "email": POOL[0], "name": "Fuzz Tester", "password": PASSWORD},
        {"call": "approve", "email": POOL[1], "operator": "support", "reason": "ticket 42"},
        {"call": "cancel", "email": POOL[0]},
    ]
)
async def test_a_call_succeeds_or_raises_a_documented_error(
    stack: Stack, calls: list[dict[str, Any]]
) -> None:
    try:
        for call in calls:
            await one_call(stack, dict(call))
    finally:  # the next example starts afresh: no registration open for the pool's emails
        for email in POOL:
            with contextlib.suppress(RPCError):
                handle = stack.client.get_workflow_handle(
                    stack.registrations.registration_id(email)
                )
                await handle.terminate("fuzz example done")


async def one_call(stack: Stack, arguments: dict[str, Any]) -> None:
    name = arguments.pop("call")
    email = arguments["email"]
    if name == "terminate":
        with contextlib.suppress(RPCError):
            handle = stack.client.get_workflow_handle(stack.registrations.registration_id(email))
            await handle.terminate("terminated in the UI")
        return
    before = await run_of(stack, email)
    method = getattr(stack.registrations, name)
    try:
        if name == "register":
            await method(**arguments)
        else:
            await method(arguments.pop("email"), *_positional(name, arguments), **arguments)
        event(f"{name}: done")
    except InvalidInput as err:
        event(f"{name}: invalid {err.field}")
        assert err.field in FIELDS[name], err
        assert await run_of(stack, email) == before, f"{name} started a run for {email!r}"
    except (UnknownRegistration, NotPending, Busy) as err:
        event(f"{name}: {type(err).__name__}")


def _positional(name: str, arguments: dict[str, Any]) -> list[Any]:
    """The positional arguments of ``name`` after the email, taken out of ``arguments``."""
    order = {
        "submit_code": ["code"],
        "approve": ["operator", "reason"],
    }.get(name, [])
    return [arguments.pop(key, "123456") for key in order]
