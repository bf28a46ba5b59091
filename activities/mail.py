"""Mail-role activities: the activation code, the welcome and the already-registered notice."""

from __future__ import annotations

from urllib.parse import urlencode

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.codes import ActivationCodes, Issuance
from activities.models import IssueActivationInput, IssuedActivation, NoticeInput
from activities.rendering import MailRenderer, mail_language
from activities.roles import CodeIssuer, MailProvider
from common.i18n import DEFAULT


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
        """Mails the issuance's code (and link token) and returns only their HMACs.

        The code is ours, derived from the code key and the issuance (workflow id, run id,
        sequence: ``ActivationCodes.code``), or the identity provider's where it makes them;
        either way the workflow keeps only its keyed HMAC. Every attempt of one issuance derives
        the same code, so when a provider took a send whose answer was lost, the retry mails the
        code already delivered, under the same idempotency key, and a provider that deduplicates
        (the outbox, Hantera) delivers it once. That holds for a local activity run again because
        its workflow task was lost too: it starts at attempt 1 again, but in the same run. A
        resend (the next sequence) and a new run get new codes.

        The idempotency key names the code (``ActivationCodes.mail_tag``), not only the
        issuance: a provider that makes its own codes is asked again on a retry, and where it
        makes a new one (its earlier code then stops working) the retry must mail the new code,
        which a deduplicating mail provider would swallow under the first mail's key. Likewise a
        code derived after a key rotation between two attempts. So the newest mail always
        carries the code that the returned digest belongs to.
        """
        info = activity.info()
        if info.workflow_id is None or info.workflow_run_id is None:
            raise ApplicationError(
                "issue_activation runs for a registration's workflow run: it derives the code"
                " from the run",
                non_retryable=True,
            )
        issuance = Issuance(info.workflow_id, info.workflow_run_id, request.sequence)
        # A link token stands in for our code only: a provider that checks its own codes needs
        # the code itself, so its mails carry no link.
        if self._code_issuer is not None:
            code, token = await self._code_issuer.new_code(request.principal_id), None
        else:
            code = self._codes.code(issuance)
            token = self._codes.link_token(issuance) if self._link_base else None
        # The link's page speaks the mail's language: ``lang`` where it is not English (the
        # pages' default, which a browser's Accept-Language may still override).
        language = mail_language(request.locale)
        query = {"email": request.email, "token": token}
        if language != DEFAULT:
            query["lang"] = language
        link = f"{self._link_base}?{urlencode(query)}" if token else None
        tag = self._codes.mail_tag(issuance, code, token or "")
        message = self._renderer.activation(
            to=request.email,
            name=request.name,
            code=code,
            expires_at=request.expires_at,
            link=link,
            idempotency_key=_idempotency_key(f"activation/{request.sequence}/{tag}"),
            locale=request.locale,
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
                locale=notice.locale,
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
                locale=notice.locale,
            )
        )
