"""``python -m starter``: the registration client on the command line.

Every command prints one JSON object on stdout. Exit codes: 0 success, 1 the action was rejected
(wrong code, nothing pending, unknown email, invalid input), 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import sys
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from activities.providers import open_providers
from activities.roles import NewCustomer
from common.identifiers import canonical_email
from common.settings import Settings
from starter.client import InvalidInput, RegistrationClient, UnknownRegistration
from workflows.models import ActivationOutcome, ResendOutcome

OK, REJECTED, USAGE = 0, 1, 2
_DURATION = re.compile(r"^(\d+)([smhd])$")


def duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``24h``, ``7d``."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration like 24h or 15m: {text!r}")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return timedelta(**{unit: int(match.group(1))})


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m starter", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)

    register = commands.add_parser("register", help="start a registration")
    register.add_argument("--email", required=True)
    register.add_argument("--name", required=True)
    register.add_argument("--phone")
    register.add_argument("--locale")
    register.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    register.add_argument("--ttl", type=duration, help="activation window, e.g. 24h (default)")

    activate = commands.add_parser("activate", help="submit an activation code or link token")
    activate.add_argument("--email", required=True)
    activate.add_argument("--code", required=True)

    approve = commands.add_parser("approve", help="staff: activate without a code")
    approve.add_argument("--email", required=True)
    approve.add_argument("--operator", required=True)
    approve.add_argument("--reason", required=True)

    resend = commands.add_parser("resend", help="mail a new code (the old one stops working)")
    resend.add_argument("--email", required=True)

    status = commands.add_parser("status", help="show a registration's state")
    status.add_argument("--email", required=True)

    cancel = commands.add_parser("cancel", help="cancel a registration and undo what it did")
    cancel.add_argument("--email", required=True)
    cancel.add_argument("--reason", default="cancelled from the command line")

    customers = commands.add_parser("customers", help="customer records")
    customer_commands = customers.add_subparsers(dest="customers_command", required=True)
    load = customer_commands.add_parser(
        "import", help="pre-load customers (JSON lines: email, name, optional phone)"
    )
    load.add_argument("file", type=Path)
    return root


class ImportedCustomer(BaseModel):
    email: str
    name: str
    phone: str | None = None


async def import_customers(settings: Settings, file: Path) -> dict[str, Any]:
    """Load existing customers into the configured customers provider, so that registrations
    with their emails link to them instead of creating new records. Re-importing is harmless."""
    imported, skipped = [], []
    async with open_providers(settings) as providers:
        lines = (await asyncio.to_thread(file.read_text)).splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = ImportedCustomer.model_validate_json(line)
            except ValidationError as err:
                raise InvalidInput(f"line {number}", str(err.errors()[0]["msg"])) from None
            link = await providers.customers.link_or_create_customer(
                NewCustomer(
                    id=str(uuid.uuid4()),
                    email=row.email.strip(),
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
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return getpass.getpass("Password: ")


async def run(args: argparse.Namespace, settings: Settings) -> tuple[int, Any]:
    if args.command == "customers":
        return OK, await import_customers(settings, args.file)
    client = await RegistrationClient.connect(settings)
    if args.command == "register":
        receipt = await client.register(
            email=args.email,
            name=args.name,
            phone=args.phone,
            locale=args.locale,
            password=read_password(args.password_stdin),
            activation_ttl=args.ttl,
        )
        return OK, receipt
    if args.command == "activate":
        reply = await client.submit_code(args.email, args.code)
        return (OK if reply.outcome is ActivationOutcome.ACTIVATED else REJECTED), reply
    if args.command == "approve":
        await client.approve(args.email, args.operator, args.reason)
        return OK, {"approved": True, "by": args.operator}
    if args.command == "resend":
        resent = await client.resend(args.email)
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
        code, answer = asyncio.run(run(args, Settings()))
    except InvalidInput as err:
        code, answer = REJECTED, {"error": "invalid_input", "field": err.field, "message": str(err)}
    except UnknownRegistration as err:
        code, answer = REJECTED, {"error": "unknown_registration", "message": str(err)}
    except ValidationError as err:  # settings
        code, answer = USAGE, {"error": "configuration", "message": str(err)}
    payload = answer.model_dump(mode="json") if isinstance(answer, BaseModel) else answer
    print(json.dumps(payload, indent=2, default=str))
    return code
