"""``python -m starter``: the registration client on the command line.

Every command prints one JSON object on stdout, usage errors included. Exit codes:
  0  success
  1  the action was rejected: wrong code, nothing pending, unknown email, invalid input; a
     registration whose state does not allow it ("not_pending", with the state: approve of one
     that is not pending, cancel of one whose outcome is decided or whose run has ended); or the
     Temporal server refused the call (the JSON says "temporal"), or the customers provider
     refused an import ("provider", with the error's type)
  2  usage error: bad arguments, an unreadable import file or an invalid row in it, invalid
     configuration (the JSON names the variable)
  3  the Temporal server cannot be reached, at the start (TEMPORAL_ADDRESS; the JSON names the
     address) or during the call
  130  interrupted by Ctrl-C (at the password prompt, say)
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel, ConfigDict, ValidationError
from temporalio.exceptions import TemporalError
from temporalio.service import RPCError, RPCStatusCode

from activities.errors import ConfigurationError, ProviderError
from activities.providers import check_email, open_providers
from activities.roles import NewCustomer
from common.identifiers import canonical_email
from common.keys import KeyConfigError
from common.settings import DURATION, InvalidSettings, Settings, env_variable, load_settings
from common.temporal import connect_config
from starter.client import (
    InvalidInput,
    NotPending,
    RegistrationClient,
    ServerUnreachable,
    UnknownRegistration,
)
from workflows.models import (
    ActivationOutcome,
    Email,
    Name,
    Phone,
    RegistrationPolicy,
    ResendOutcome,
)

OK, REJECTED, USAGE, UNREACHABLE, INTERRUPTED = 0, 1, 2, 3, 130
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


class JsonArgumentParser(argparse.ArgumentParser):
    """Usage errors answer in JSON on stdout too (exit 2), so a backend calling the CLI reads
    one format; the usage text still goes to stderr for a person."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(json.dumps({"error": "usage", "message": message}, indent=2))
        self.exit(USAGE)


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

    customers = commands.add_parser("customers", help="customer records")
    customer_commands = customers.add_subparsers(
        dest="customers_command", metavar="import", required=True
    )
    load = customer_commands.add_parser(
        "import", help="pre-load customers (JSON lines: email, name, optional phone)"
    )
    load.add_argument("file", type=Path)
    return root


class UsageError(Exception):
    """A bad argument that shows only once it is used (an import file); ``answer`` is the JSON."""

    def __init__(self, error: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.answer: dict[str, Any] = {"error": error, "message": message, **details}


class ImportedCustomer(BaseModel):
    """One line of an import file, held to the rules of a registration's fields (the types the
    registration input and the client use), so nothing is imported that could not have
    registered. A key it does not know (``Phone`` for ``phone``) refuses the row, instead of
    dropping what the file meant to import."""

    model_config = ConfigDict(extra="forbid")

    email: Email
    name: Name
    phone: Phone = None


def read_customers(settings: Settings, file: Path) -> list[ImportedCustomer]:
    """Every row of an import file, all validated before any is imported: an unreadable file or
    a bad row (named by line and field) is a ``UsageError`` and the file is left unimported."""
    try:
        # utf-8-sig: a byte-order mark (spreadsheet exports write one) is not part of line 1.
        lines = file.read_text(encoding="utf-8-sig").splitlines()
    except OSError as err:
        raise UsageError("unreadable_file", f"{file}: {err.strerror}", file=str(file)) from None
    except UnicodeDecodeError:
        raise UsageError("unreadable_file", f"{file}: not UTF-8 text", file=str(file)) from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = ImportedCustomer.model_validate_json(line)
            check_email(settings, canonical_email(row.email))
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or None
            raise _bad_row(file, number, field, first["msg"]) from None
        except ValueError as err:  # check_email: the customers provider cannot take the address
            raise _bad_row(file, number, "email", str(err)) from None
        rows.append(row)
    return rows


def _bad_row(file: Path, line: int, field: str | None, message: str) -> UsageError:
    where = f"{file} line {line}" + (f", {field}" if field else "")
    return UsageError("invalid_row", f"{where}: {message}", file=str(file), line=line, field=field)


async def import_customers(settings: Settings, file: Path) -> dict[str, Any]:
    """Load existing customers into the configured customers provider, so that registrations
    with their emails link to them instead of creating new records. Re-importing is harmless."""
    rows = await asyncio.to_thread(read_customers, settings, file)
    if settings.customers_provider == "local" and not settings.database_path.exists():
        # Opening it would create an empty one, which no worker reads: the import would succeed
        # and registrations would never link. Like a missing key file, it names the variables.
        raise ConfigurationError(
            f"{env_variable('database')}: no local directory at {settings.database_path.resolve()}:"
            f" run the import with the worker's {env_variable('data_dir')}"
            f" (or {env_variable('database')}), once the worker has started"
        )
    imported, skipped = [], []
    async with open_providers(settings) as providers:
        for row in rows:
            link = await providers.customers.link_or_create_customer(
                NewCustomer(
                    id=str(uuid.uuid4()),
                    email=row.email,
                    email_canonical=canonical_email(row.email),
                    name=row.name,
                    phone=row.phone,
                    number_prefix=settings.customer_number_prefix,
                )
            )
            if not link.created:
                skipped.append(row.email)
                continue
            customer = link.customer
            imported.append({"email": customer.email, "customer_number": customer.number})
    return {"imported": imported, "already_present": skipped}


def read_password(from_stdin: bool) -> str:
    """The first line of stdin, or typed at a prompt without echo. Input that ends before a
    password (an empty stdin, Ctrl-D at the prompt) is ``InvalidInput`` naming the password."""
    if from_stdin:
        line = sys.stdin.readline()
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
    if args.command == "customers":
        return OK, await import_customers(settings, args.file)
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
        code, answer = INTERRUPTED, {"error": "interrupted", "message": "interrupted by Ctrl-C"}
    except InvalidInput as err:
        code, answer = REJECTED, {"error": "invalid_input", "field": err.field, "message": str(err)}
    except UnknownRegistration as err:
        code, answer = REJECTED, {"error": "unknown_registration", "message": str(err)}
    except NotPending as err:
        code, answer = REJECTED, {"error": "not_pending", "state": err.state, "message": str(err)}
    except UsageError as err:
        code, answer = USAGE, err.answer
    except (InvalidSettings, KeyConfigError, ConfigurationError) as err:
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
    except ProviderError as err:  # customers import: the customers provider refused or failed
        code, answer = REJECTED, {"error": "provider", "type": err.type, "message": err.message}
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
    payload = answer.model_dump(mode="json") if isinstance(answer, BaseModel) else answer
    print(json.dumps(payload, indent=2, default=str))
    return code
