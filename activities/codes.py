"""Activation secrets: derived with a keyed PRF, kept only as keyed HMACs, checked in constant time.

A code (and link token) is derived from the worker's code key and the issuance it belongs to
(workflow id, run id, code sequence), not drawn afresh per attempt: every attempt of one issuance,
a retry after a lost answer or a local activity run again after a lost workflow task, mails the
same code, so the mail that went out first still carries the code whose digest the workflow
keeps. A resend (the next sequence) and every new run get new codes. Without the key the codes
are as unpredictable as a CSPRNG's: every issuance is a PRF input of its own, and the outputs of
HMAC-SHA256 under a secret key cannot be told from random ones.

The digest binds a secret to its registration and code sequence, so a code from another
registration, or one replaced by a resend, never matches. Without the worker's code key a digest
in history reveals nothing (a plain hash of a 6-digit code would be reversed in microseconds).
Derivation and digest use the same key, but never the same function: derivation runs under a
subkey (``HMAC(key, _DERIVATION_LABEL)``), a digest under the key itself, and the label, unlike
every digest message, holds no NUL byte, so no digest message can produce the subkey.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.models import IssuedActivation, VerifyActivationInput
from activities.roles import CodeIssuer
from common.sealing import Sealer, SealError
from common.settings import env_variable
from workflows.models import CODE_DIGITS, LINK_TOKEN_BYTES, SEAL_MISMATCH

_DERIVATION_LABEL = b"registration activation secrets, derivation subkey, v1"
"""Makes the derivation subkey from a code key. No NUL byte: every digest message has two."""
_CODE_SPACE = 10**CODE_DIGITS
_WORD = 4
"""Bytes of PRF output per candidate code."""
_ACCEPTED_BELOW = (2 ** (8 * _WORD) // _CODE_SPACE) * _CODE_SPACE
"""Rejection sampling: a 32-bit word below this is reduced mod 10**6 without bias (a word is
rejected with probability 2.25e-4; a block of 8 words all rejected, ~1e-29, takes the next)."""


@dataclass(frozen=True)
class Issuance:
    """What names one issued code: the registration's workflow id and run id, and the code's
    sequence (1, then +1 per resend). All retries of its mail share it; nothing else does."""

    workflow_id: str
    run_id: str
    sequence: int


class ActivationCodes:
    """Codes, tokens and digests are made with the newest key and digests checked against every
    key (``REGISTRATION_CODE_KEY=new,old``), so rotating the key does not spoil pending codes."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._keys = tuple(keys)  # at least one: common.keys.hmac_keys
        self._derivation_key = hmac.new(self._keys[0], _DERIVATION_LABEL, hashlib.sha256).digest()

    def code(self, issuance: Issuance) -> str:
        """The issuance's code: ``CODE_DIGITS`` digits, uniform (rejection sampling, no modulo
        bias), the same on every call for the same issuance and newest key."""
        for block in itertools.count():
            output = self._prf("code", issuance, str(block))
            for start in range(0, len(output), _WORD):
                word = int.from_bytes(output[start : start + _WORD], "big")
                if word < _ACCEPTED_BELOW:
                    return f"{word % _CODE_SPACE:0{CODE_DIGITS}d}"
        raise AssertionError("unreachable")  # pragma: no cover (itertools.count never ends)

    def link_token(self, issuance: Issuance) -> str:
        """The issuance's link token: ``LINK_TOKEN_BYTES`` (192 bits) of PRF output, unpadded
        base64url, as ``secrets.token_urlsafe`` writes them."""
        raw = self._prf("link-token", issuance)[:LINK_TOKEN_BYTES]
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def mail_tag(self, issuance: Issuance, *carried: str) -> str:
        """Names the secrets an issuance's mail carries, for its idempotency key: the same
        secrets give the same tag, other ones (a provider's new code, a code made after a key
        rotation) another. Keyed, so the tag does not give a code away (an unkeyed hash of 6
        digits would)."""
        return self._prf("mail", issuance, *carried).hex()[:32]

    def _prf(self, label: str, issuance: Issuance, *extra: str) -> bytes:
        fields = (label, issuance.workflow_id, issuance.run_id, str(issuance.sequence), *extra)
        message = b"".join(_length_prefixed(field.encode()) for field in fields)
        return hmac.new(self._derivation_key, message, hashlib.sha256).digest()

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


def _length_prefixed(field: bytes) -> bytes:
    """A field that cannot run into the next: any workflow id (a NUL in it included) is one."""
    return len(field).to_bytes(4, "big") + field


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
