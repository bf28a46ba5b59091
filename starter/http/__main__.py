"""``python -m starter.http``: the HTTP API and pages as their own stateless process."""

from __future__ import annotations

import logging
import sys

from common.keys import KeyConfigError, fernet_keys
from common.settings import InvalidSettings, PortInUse, load_settings
from common.temporal import exit_at_once
from starter.http.app import create_app
from starter.http.server import bound_server, server_url

log = logging.getLogger("starter.http")


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
        server, listener = bound_server(create_app(settings), settings)
    except (InvalidSettings, PortInUse) as err:
        log.error("configuration error: %s", err)
        sys.exit(2)
    try:
        fernet_keys(settings.seal_key, settings.data_dir)
    except KeyConfigError as err:
        # Not fatal: beside a worker that is generating its dev keys (make run) they appear in a
        # moment; until they do, calls are answered 500 and this is logged again.
        log.warning("%s", err)
    url = server_url(settings)
    log.info("HTTP API on %s/v1 (reference: %s/docs)", url, url)
    if settings.api_staff_token is None:
        log.info("staff endpoints refuse every call: REGISTRATION_API_STAFF_TOKEN is not set")
    server.run(sockets=[listener])
    exit_at_once(0)  # the Temporal client's threads could abort the interpreter's shutdown


if __name__ == "__main__":
    main()
