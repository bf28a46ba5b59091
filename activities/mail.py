"""Mail-role activities: the activation code, the welcome and the already-registered notice."""

from __future__ import annotations

import secrets
from urllib.parse import urlencode

from temporalio import activity

from activities.codes import ActivationCodes
from activities.models import IssueActivationInput, IssuedActivation, NoticeInput
from activities.rendering import MailRenderer
from activities.roles import CodeIssuer, MailProvider


def _idempotency_key(purpose: str) -> str:
    """Unique per registration run and purpose: retries dedupe, a later registration does not."""
    info = activity.info()
    return f"{info.workflow_id}/{info.workflow_run_id}/{purpose}"


class MailActivities:
    def __init__(
        self,
        mail: MailProvider,
        renderer: MailRenderer,
        codes: ActivationCodes,
        link_base: str | None,
        code_issuer: CodeIssuer | None = None,
    ) -> None:
        self._mail = mail
        self._renderer = renderer
        self._codes = codes
        self._link_base = link_base
        self._code_issuer = code_issuer
        """The identity provider, where it makes the codes (``CodeOwner.PROVIDER``)."""

    @activity.defn
    async def issue_activation(self, request: IssueActivationInput) -> IssuedActivation:
        """Makes a fresh code (and link token), mails it and returns only their HMACs.

        The code is ours (a CSPRNG), or the identity provider's where it makes them; either way
        the workflow keeps only its keyed HMAC. Every run makes a new code, so every run sends
        its own mail: the idempotency key names
        the code (a random nonce), not the attempt. The attempt number would not do: a local
        activity that runs again because its workflow task was lost (worker killed after the
        mail went out) starts again at attempt 1, and the outbox would keep the first mail while
        the workflow stored the digest of a code nobody received. The newest mail always
        carries the code that the returned digest belongs to.
        """
        code = (
            await self._code_issuer.new_code(request.principal_id)
            if self._code_issuer is not None
            else self._codes.new_code()
        )
        # A link token stands in for our code only: a provider that checks its own codes needs
        # the code itself, so its mails carry no link.
        ours = self._code_issuer is None
        token = self._codes.new_link_token() if self._link_base and ours else None
        link = (
            f"{self._link_base}?{urlencode({'email': request.email, 'token': token})}"
            if token
            else None
        )
        message = self._renderer.activation(
            to=request.email,
            name=request.name,
            code=code,
            expires_at=request.expires_at,
            link=link,
            idempotency_key=_idempotency_key(
                f"activation/{request.sequence}/{secrets.token_hex(8)}"
            ),
        )
        await self._mail.send(message.model_copy(update={"redact": (code, *filter(None, [token]))}))
        digest = self._codes.digest
        return IssuedActivation(
            sequence=request.sequence,
            code_digest=digest(request.registration_id, request.sequence, code),
            token_digest=digest(request.registration_id, request.sequence, token)
            if token
            else None,
        )

    @activity.defn
    async def send_welcome(self, notice: NoticeInput) -> None:
        await self._mail.send(
            self._renderer.welcome(
                to=notice.email,
                name=notice.name,
                customer_number=notice.customer_number or "",
                idempotency_key=_idempotency_key("welcome"),
            )
        )

    @activity.defn
    async def send_already_registered(self, notice: NoticeInput) -> None:
        """Sent instead of a code (and again for each resend) when the email has an account."""
        purpose = "already-registered"
        await self._mail.send(
            self._renderer.already_registered(
                to=notice.email,
                idempotency_key=_idempotency_key(
                    purpose if notice.sequence == 1 else f"{purpose}/{notice.sequence}"
                ),
            )
        )
