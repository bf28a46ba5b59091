"""Activation secrets: made with a CSPRNG, kept only as keyed HMACs, checked in constant time.

The HMAC binds a secret to its registration and code sequence, so a code from another
registration, or one replaced by a resend, never matches. Without the worker's code key a digest
in history reveals nothing (a plain hash of a 6-digit code would be reversed in microseconds).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.models import IssuedActivation, VerifyActivationInput
from activities.roles import CodeIssuer
from common.sealing import Sealer, SealError
from common.settings import env_variable
from workflows.models import CODE_DIGITS, LINK_TOKEN_BYTES, SEAL_MISMATCH


class ActivationCodes:
    """Digests are made with the newest key and checked against every key
    (``REGISTRATION_CODE_KEY=new,old``), so rotating the key does not spoil pending codes."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._keys = tuple(keys)  # at least one: common.keys.hmac_keys

    @staticmethod
    def new_code() -> str:
        return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"

    @staticmethod
    def new_link_token() -> str:
        return secrets.token_urlsafe(LINK_TOKEN_BYTES)

    def digest(self, registration_id: str, sequence: int, secret: str) -> str:
        return _digest(self._keys[0], registration_id, sequence, secret)

    def matches(self, registration_id: str, issued: IssuedActivation, secret: str) -> bool:
        issued_digests = [issued.code_digest]
        if issued.token_digest is not None:
            issued_digests.append(issued.token_digest)
        found = False
        for key in self._keys:  # every comparison runs: the time says nothing about a match
            candidate = _digest(key, registration_id, issued.sequence, secret)
            for expected in issued_digests:
                found |= hmac.compare_digest(candidate, expected)
        return found


def _digest(key: bytes, registration_id: str, sequence: int, secret: str) -> str:
    message = f"{registration_id}\x00{sequence}\x00{secret.strip()}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class CodeActivities:
    """The check runs as a local activity: pure CPU, no server round trip needed."""

    def __init__(
        self, codes: ActivationCodes, sealer: Sealer, code_issuer: CodeIssuer | None = None
    ) -> None:
        self._codes = codes
        self._sealer = sealer
        self._code_issuer = code_issuer
        """The identity provider, where it has the last word on codes (``CodeOwner.PROVIDER``)."""

    @activity.defn
    async def verify_activation(self, request: VerifyActivationInput) -> bool:
        """Whether the submitted code (or link token) is the issued one, and, where the identity
        provider has the last word on codes, whether it accepts it too.

        A sealed code this worker cannot open is not a wrong code: the starter sealed it with a
        key the worker lacks (a seal key rotation half done, or two configurations). Counted as
        wrong, every code of every registration would fail quietly until they lock and are
        undone; so it is a non-retryable error instead (a retry opens nothing), which fails the
        update before the workflow counts an attempt. Nothing here can guess a code: only a
        value the worker opens is ever compared.
        """
        submission = request.submission
        if submission.sealed_code is not None:
            try:
                secret = self._sealer.open(submission.sealed_code)
            except SealError:
                variable = env_variable("seal_key")
                activity.logger.warning(
                    "a submitted code is sealed with a key this worker does not have: check that"
                    " the starter and the worker share %s",
                    variable,
                )
                raise ApplicationError(
                    "the submitted code is sealed with a key the worker does not have: the"
                    f" starter and the worker must share {variable} (the worker's keys must"
                    " include the first key of the starter's); no attempt was counted",
                    type=SEAL_MISMATCH,
                    non_retryable=True,
                ) from None
        else:
            secret = submission.code or ""
        if not self._codes.matches(request.registration_id, request.issued, secret):
            return False  # our limits first: a wrong code never reaches the provider
        if request.principal_id is None or self._code_issuer is None:
            return True
        return await self._code_issuer.confirm_code(request.principal_id, secret.strip())
