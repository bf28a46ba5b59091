"""Loopback ports for servers a test starts and that bind their port themselves."""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10_000

_pick = random.SystemRandom()  # pytest-randomly reseeds ``random`` alike for every test
_handed_out: set[int] = set()


def ephemeral_start() -> int:
    """The first port the kernel hands out for a bind to port 0 or an outgoing connection."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_port() -> int:
    """A loopback port nothing listens on, for a server that binds it after this returns.

    Picked below the kernel's ephemeral range, so that nothing binding port 0 and no outgoing
    connection can take it in the meantime (a dev server once lost its gRPC port that way in CI),
    and never the same one twice in a run."""
    top = ephemeral_start()
    while True:
        port = _pick.randrange(LOWEST, top)
        if port in _handed_out:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
