"""Rate limits per client address and per email, with the ``limits`` library: counts in this
process's memory by default, in Redis (``REGISTRATION_API_RATE_LIMIT_STORAGE``) when several API
processes serve one shop, so that a client cannot multiply its allowance by the replicas.

The client's address is the peer's, unless the peer is a trusted proxy
(``REGISTRATION_API_TRUSTED_PROXIES``): then it is the right-most address of ``X-Forwarded-For``
that is not itself a trusted proxy. Addresses further left were written by the client, who can
write anything there, so only the part the trusted proxies appended counts.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Refused:
    """A request over a limit: ``retry_after`` seconds until it would be taken."""

    retry_after: int
    scope: str


def storage_for(uri: str | None) -> Storage:
    """The counts' storage for ``uri``: memory when None, Redis (through redis-py's asyncio
    client) for ``redis://``, ``rediss://`` and ``redis+unix://``."""
    if uri is None:
        storage = storage_from_string("async+memory://")
    elif uri.startswith(("redis://", "rediss://", "redis+unix://")):
        storage = storage_from_string(
            f"async+{uri}", implementation="redispy", wrap_exceptions=True
        )
    else:
        storage = storage_from_string(uri if uri.startswith("async+") else f"async+{uri}")
    assert isinstance(storage, Storage)
    return storage


class Limits:
    """The limits of one API process. Each action (``start``, ``activate``, ``resend``) counts
    on its own per address and per email."""

    def __init__(self, per_address: str, per_email: str, storage: Storage) -> None:
        self._per_address = parse_many(per_address)
        self._per_email = parse_many(per_email)
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)

    async def hit(self, action: str, address: str, email_key: str | None) -> Refused | None:
        """Counts one request; a refusal says for how long. An address over its limit is
        refused before its email is counted, so a flood from one address does not lock the
        owner of the email out."""
        refused = await self._hit(self._per_address, action, "address", address)
        if refused is None and email_key is not None:
            refused = await self._hit(self._per_email, action, "email", email_key)
        return refused

    async def _hit(
        self, items: Sequence[RateLimitItem], action: str, scope: str, key: str
    ) -> Refused | None:
        for item in items:
            if not await self._limiter.hit(item, "registration-api", action, scope, key):
                stats = await self._limiter.get_window_stats(
                    item, "registration-api", action, scope, key
                )
                return Refused(max(1, math.ceil(stats.reset_time - time.time())), scope)
        return None

    async def check_storage(self) -> bool:
        return bool(await self._storage.check())

    async def reset(self) -> None:
        await self._storage.reset()


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client's address: the peer's, or, from a trusted proxy, the right-most untrusted
    address of ``X-Forwarded-For`` (all of its headers joined by commas)."""
    address = peer or "unknown"
    if not trusted or not forwarded_for or not _in(address, trusted):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        try:
            parsed = ipaddress.ip_address(hop)
        except ValueError:
            return address  # garbage where a proxy of ours would have written an address
        address = str(parsed)
        if not _in(address, trusted):
            return address
    return address


def _in(address: str, networks: Sequence[Network]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in networks)
