"""Identity-role activities: the login principal's life from inactive (or nothing, for a login
created at activation) to active, or undone."""

from __future__ import annotations

from collections.abc import Callable

from temporalio import activity

from activities.errors import (
    ConcurrentModification,
    InvalidRequest,
    PasswordRejected,
)
from activities.models import (
    ActivatePrincipalInput,
    CreatePrincipalInput,
    EmailLookup,
    PrincipalRef,
)
from activities.roles import IdentityProvider, Principal, activation_target
from common.passwords import PasswordPolicy, PasswordPolicyError
from common.sealing import Sealer, SealError
from workflows.models import password_text

ACTIVATION_READS = 3
"""How often activation re-reads a principal that changed under it before calling it a conflict."""


class IdentityActivities:
    def __init__(
        self,
        provider: IdentityProvider,
        sealer: Sealer,
        policy: PasswordPolicy,
        check_email: Callable[[str], None],
    ) -> None:
        self._provider = provider
        self._sealer = sealer
        self._policy = policy
        self._check_email = check_email

    @activity.defn
    async def find_principal(self, lookup: EmailLookup) -> Principal | None:
        """The registration's first step, so an address a configured provider cannot work with
        (``ProviderSpec.email_rule``) fails it here, before anything is created or mailed."""
        try:
            self._check_email(lookup.email_canonical)
        except ValueError as err:
            raise InvalidRequest(f"email: {err}") from None
        return await self._provider.find_principal(lookup.email_canonical)

    @activity.defn
    async def create_principal(self, request: CreatePrincipalInput) -> Principal:
        """Opens the sealed password (the only place that does), checks the policy, creates."""
        return await self._provider.create_principal(request.principal, self._password(request))

    @activity.defn
    async def decoy_create(self, request: CreatePrincipalInput) -> None:
        """``create_principal`` for an email that already has an account: the same checks (and
        errors), the provider's ``decoy_create`` instead of a create. Its owner's first mail then
        goes out as late as a new email's code would."""
        await self._provider.decoy_create(request.principal, self._password(request))

    def _password(self, request: CreatePrincipalInput) -> str:
        """The opened password, if the policy takes it."""
        new = request.principal
        try:
            password = self._sealer.open(request.sealed_password)
        except SealError as err:
            raise InvalidRequest(f"password: {err}") from None
        try:
            password_text(password)  # a sender that sealed the password itself is held to it too
        except ValueError as err:
            raise PasswordRejected(f"password: {err}") from None
        try:
            self._policy.check(password, context=(new.email, new.name))
        except PasswordPolicyError as err:
            raise PasswordRejected(str(err)) from None
        return password

    @activity.defn
    async def activate_principal(self, request: ActivatePrincipalInput) -> Principal:
        """The login goes active with its customer link: created now, for a provider whose
        logins exist only once the email is proven (``request.login``), else activated."""
        customer = request.customer
        if request.login is not None:
            new = request.login.principal.model_copy(update={"link": customer})
            return await self._provider.create_principal(new, self._password(request.login))
        customer_id = customer.id if customer else None
        # Read-modify-write under the principal's version: a concurrent change is re-read and
        # kept (never overwritten); one that keeps changing ends as ``ConcurrentModification``.
        for _ in range(ACTIVATION_READS):
            principal = activation_target(
                await self._provider.get_principal(request.principal_id),
                request.principal_id,
                customer_id,
            )
            if principal.active:
                return principal  # a retry of an activation that already went through
            try:
                return await self._provider.activate_principal(
                    request.principal_id,
                    customer_id,
                    customer.number if customer else None,
                    expected_version=principal.version,
                )
            except ConcurrentModification:
                activity.logger.info("principal changed during activation, reading it again")
        raise ConcurrentModification(
            f"principal {request.principal_id} kept changing during activation"
        )

    @activity.defn
    async def undo_principal(self, ref: PrincipalRef) -> bool:
        """Compensation: idempotent, a principal that is already gone counts as undone."""
        return await self._provider.undo_principal(ref.principal_id)
