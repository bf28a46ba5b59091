"""``python -m starter``: the registration client on the command line.

Every command prints one JSON object on stdout, usage errors included. Exit codes:
  0  success
  1  the action was rejected: wrong code, nothing pending, unknown email, invalid input; a
     registration whose state does not allow it ("not_pending", with the state: approve of one
     that is not pending, cancel of one whose outcome is decided or whose run has ended); or the
     Temporal server refused the call (the JSON says "temporal")
  2  usage error: bad arguments, invalid configuration (the JSON names the variable)
  3  the Temporal server cannot be reached, at the start (TEMPORAL_ADDRESS; the JSON names the
     address) or during the call; the message says whether the command is safe to run again
  4  busy: too many calls for the registration (or the server) at once ("busy"); run it again
     in a moment (activate and resend with the same --request-id)
  130  interrupted by Ctrl-C (at the password prompt, say)

Customers are imported by an operator's tool beside the worker: ``python -m
activities.import_customers``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from temporalio.exceptions import TemporalError
from temporalio.service import RPCError, RPCStatusCode

from common.command_line import (
    INTERRUPTED,
    INTERRUPTED_ANSWER,
    OK,
    REJECTED,
    UNREACHABLE,
    USAGE,
    JsonArgumentParser,
    print_answer,
)
from common.keys import KeyConfigError
from common.settings import DURATION, InvalidSettings, Settings, load_settings
from common.temporal import connect_config
from starter.client import (
    Busy,
    InvalidInput,
    NotPending,
    RegistrationClient,
    ServerUnreachable,
    UnknownRegistration,
)
from workflows.models import ActivationOutcome, RegistrationPolicy, ResendOutcome

BUSY = 4
"""Exit code of ``Busy``: a refusal that passes, unlike 1 (run the same command again)."""

REQUEST_ID_HELP = (
    "a new, unguessable id of this request, e.g. a UUID (up to 200 characters, one line): run"
    " again with the same id after a lost answer, and the first answer comes back instead of a"
    " second attempt (within the same registration: once a new one for the email has started,"
    " the id runs in that one)"
)


def activation_ttl(text: str) -> timedelta:
    """``--ttl``: what ``REGISTRATION_ACTIVATION_TTL`` takes (``86400``, ``24h``, ``PT24H``),
    within a registration's bounds, so that any bad value is a usage error naming the flag."""
    try:
        return RegistrationPolicy(activation_ttl=DURATION.validate_python(text)).activation_ttl
    except ValidationError as err:
        raise argparse.ArgumentTypeError(f"{err.errors()[0]['msg']}: {text!r}") from None


def parser() -> argparse.ArgumentParser:
    summary, exit_codes = __doc__.split("\n\n", 1)
    root = JsonArgumentParser(
        prog="python -m starter",
        description=summary,
        epilog=exit_codes,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = root.add_subparsers(dest="command", required=True)

    register = commands.add_parser("register", help="start a registration")
    register.add_argument("--email", required=True)
    register.add_argument("--name", required=True)
    register.add_argument("--phone")
    register.add_argument("--locale")
    register.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    register.add_argument(
        "--ttl",
        type=activation_ttl,
        help="activation window: 24h (default), 15m, 86400 (seconds) or PT24H (ISO 8601)",
    )

    activate = commands.add_parser("activate", help="submit an activation code or link token")
    activate.add_argument("--email", required=True)
    activate.add_argument("--code", required=True)
    activate.add_argument("--request-id", help=REQUEST_ID_HELP)

    approve = commands.add_parser("approve", help="staff: activate without a code")
    approve.add_argument("--email", required=True)
    approve.add_argument("--operator", required=True)
    approve.add_argument("--reason", required=True)

    resend = commands.add_parser("resend", help="mail a new code (the old one stops working)")
    resend.add_argument("--email", required=True)
    resend.add_argument("--request-id", help=REQUEST_ID_HELP)

    status = commands.add_parser("status", help="show a registration's state")
    status.add_argument("--email", required=True)

    cancel = commands.add_parser("cancel", help="cancel a registration and undo what it did")
    cancel.add_argument("--email", required=True)
    cancel.add_argument("--reason", default="cancelled from the command line")
    return root


def read_password(from_stdin: bool) -> str:
    """The first line of stdin, or typed at a prompt without echo. Input that ends before a
    password (an empty stdin, Ctrl-D at the prompt) is ``InvalidInput`` naming the password, and
    so are bytes that are not UTF-8 (by the locale, Python's stdin refuses them, or passes them
    on as lone surrogates, which the client refuses)."""
    if from_stdin:
        try:
            line = sys.stdin.readline()
        except UnicodeDecodeError:
            raise InvalidInput("password", "stdin is not UTF-8 text") from None
        if not line:
            raise InvalidInput("password", "none given: stdin is empty")
        return line.rstrip("\r\n")
    try:
        return getpass.getpass("Password: ")
    except EOFError:
        raise InvalidInput("password", "none given: the input ended at the prompt") from None


async def run(
    args: argparse.Namespace, settings: Settings, password: str | None
) -> tuple[int, Any]:
    """The command, with the password of ``register`` read before (see ``main``)."""
    client = await RegistrationClient.connect(settings)
    if args.command == "register":
        assert password is not None
        receipt = await client.register(
            email=args.email,
            name=args.name,
            phone=args.phone,
            locale=args.locale,
            password=password,
            activation_ttl=args.ttl,
        )
        return OK, receipt
    if args.command == "activate":
        reply = await client.submit_code(args.email, args.code, request_id=args.request_id)
        return (OK if reply.outcome is ActivationOutcome.ACTIVATED else REJECTED), reply
    if args.command == "approve":
        await client.approve(args.email, args.operator, args.reason)
        return OK, {"approved": True, "by": args.operator}
    if args.command == "resend":
        resent = await client.resend(args.email, request_id=args.request_id)
        return (OK if resent.outcome is ResendOutcome.SENT else REJECTED), resent
    if args.command == "status":
        return OK, await client.status(args.email)
    if args.command == "cancel":
        await client.cancel(args.email, args.reason)
        return OK, {"cancelled": True}
    raise AssertionError(f"unhandled command {args.command}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits with 2 on usage errors
    try:
        settings = load_settings()
        # Prompted for outside the event loop: there a Ctrl-C only cancels the task, and waits
        # for the blocking prompt to return.
        password = read_password(args.password_stdin) if args.command == "register" else None
        code, answer = asyncio.run(run(args, settings, password))
    except KeyboardInterrupt:
        code, answer = INTERRUPTED, INTERRUPTED_ANSWER
    except InvalidInput as err:
        code, answer = REJECTED, {"error": "invalid_input", "field": err.field, "message": str(err)}
    except UnknownRegistration as err:
        code, answer = REJECTED, {"error": "unknown_registration", "message": str(err)}
    except NotPending as err:
        code, answer = REJECTED, {"error": "not_pending", "state": err.state, "message": str(err)}
    except Busy as err:
        code, answer = BUSY, {"error": "busy", "message": str(err)}
    except (InvalidSettings, KeyConfigError) as err:
        code, answer = USAGE, {"error": "configuration", "message": str(err)}
    except ServerUnreachable as err:
        code, answer = (
            UNREACHABLE,
            {
                "error": "server_unreachable",
                "address": err.address,
                "message": str(err),
            },
        )
    except RPCError as err:  # the Temporal server refused or failed the call
        if err.status is RPCStatusCode.UNAVAILABLE:
            address = connect_config()["target_host"]
            code, answer = (
                UNREACHABLE,
                {"error": "server_unreachable", "address": address, "message": str(err)},
            )
        else:
            code, answer = REJECTED, {"error": "temporal", "message": str(err)}
    except TemporalError as err:  # e.g. an update that timed out waiting, a failed query
        code, answer = REJECTED, {"error": "temporal", "message": str(err)}
    print_answer(answer)
    return code
