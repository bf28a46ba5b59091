"""``python -m starter.http.openapi``: prints the API's OpenAPI document, as committed in
docs/openapi.json (a test checks that it is current)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from common.settings import Settings
from starter.http.app import create_app


def document() -> str:
    settings = Settings(_env_file=None, data_dir=Path(".data"))
    return json.dumps(create_app(settings).openapi(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(document())
