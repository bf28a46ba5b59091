"""What the command-line tools share: one JSON object on stdout for every answer, usage errors
included, and the exit codes (``python -m starter``, ``python -m activities.import_customers``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NoReturn

from pydantic import BaseModel

OK, REJECTED, USAGE, UNREACHABLE, INTERRUPTED = 0, 1, 2, 3, 130
INTERRUPTED_ANSWER = {"error": "interrupted", "message": "interrupted by Ctrl-C"}


class JsonArgumentParser(argparse.ArgumentParser):
    """Usage errors answer in JSON on stdout too (exit 2), so a backend calling a tool reads one
    format; the usage text still goes to stderr for a person."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(json.dumps({"error": "usage", "message": message}, indent=2))
        self.exit(USAGE)


def print_answer(answer: Any) -> None:
    """``answer`` (a model, or anything ``json`` takes) as the tool's one JSON object. A reader
    that stopped reading (``| head``) is not an error of the tool: the rest of the answer is
    dropped, without a traceback, and the exit code stays the answer's."""
    payload = answer.model_dump(mode="json") if isinstance(answer, BaseModel) else answer
    try:
        print(json.dumps(payload, indent=2, default=str), flush=True)
    except BrokenPipeError:
        # Python's advice: point stdout at devnull, so its flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
