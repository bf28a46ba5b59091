"""``python -m activities.import_customers FILE``: pre-load existing customers into the configured
customers provider, so that registrations with their emails link to them instead of creating new
records. Re-importing is harmless. An operator's tool: it opens the providers as the worker does.

FILE has one JSON object per line: ``{"email", "name", "phone"?}``, no other keys, each held to
the rules of a registration's fields. Every row is checked before any is imported. With the local
provider it loads into the worker's database: run it with the worker's ``REGISTRATION_DATA_DIR``
(or ``REGISTRATION_DATABASE``) once the worker has started.

It prints one JSON object on stdout, usage errors included. Exit codes:
  0  success: {"imported": [{"email", "customer_number"}...], "already_present": [emails]}
  1  the customers provider refused or failed the import ("provider", with the error's type)
  2  usage error: bad arguments, an unreadable file or an invalid row in it (named by line and
     field; nothing is imported), invalid configuration (the JSON names the variable)
  130  interrupted by Ctrl-C
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from activities.errors import ConfigurationError, ProviderError
from activities.providers import check_email, open_providers, provider_prefixes
from activities.roles import NewCustomer
from common.command_line import (
    INTERRUPTED,
    INTERRUPTED_ANSWER,
    OK,
    REJECTED,
    USAGE,
    JsonArgumentParser,
    print_answer,
)
from common.identifiers import canonical_email
from common.settings import InvalidSettings, Settings, env_variable, load_settings
from workflows.models import Email, Name, Phone


def parser() -> argparse.ArgumentParser:
    summary, details = __doc__.split("\n\n", 1)
    root = JsonArgumentParser(
        prog="python -m activities.import_customers",
        description=summary,
        epilog=details,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument("file", type=Path, help="JSON lines: email, name, optional phone")
    return root


class UsageError(Exception):
    """A bad argument that shows only once it is used (the file); ``answer`` is the JSON."""

    def __init__(self, error: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.answer: dict[str, Any] = {"error": error, "message": message, **details}


class ImportedCustomer(BaseModel):
    """One line of an import file, held to the rules of a registration's fields (the types of
    ``RegistrationInput``), so nothing is imported that could not have registered. A key it does
    not know (``Phone`` for ``phone``) refuses the row, instead of dropping what the file meant to
    import."""

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


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits with 2 on usage errors
    answer: Any
    try:
        settings = load_settings(provider_prefixes())
        code, answer = OK, asyncio.run(import_customers(settings, args.file))
    except KeyboardInterrupt:
        code, answer = INTERRUPTED, INTERRUPTED_ANSWER
    except UsageError as err:
        code, answer = USAGE, err.answer
    except (InvalidSettings, ConfigurationError) as err:
        code, answer = USAGE, {"error": "configuration", "message": str(err)}
    except ProviderError as err:  # the customers provider refused or failed
        code, answer = REJECTED, {"error": "provider", "type": err.type, "message": err.message}
    print_answer(answer)
    return code


if __name__ == "__main__":
    sys.exit(main())
