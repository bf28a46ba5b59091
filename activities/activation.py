"""Step 5 in one activity, for when the identity and customers providers both run in-process.

Linking or creating the customer and activating the principal are two calls of a millisecond
each. As two local activities, the second one waits for a workflow activation of its own: about
3 ms of SDK work on the path of the caller's ``submit_activation_code``, which answers only once
the account is active. As one activity they run back to back, and where both roles live in one
store (the local provider's file) they are one transaction (``OneStepActivation``): one commit,
and a failed activation leaves no customer behind. Otherwise the calls are exactly those of the
separate activities (``CustomerActivities``, ``IdentityActivities``), so both paths behave alike:
a retry repeats both calls, and both are idempotent on the ids the workflow chose; a failed
activation leaves the customer this registration created under the workflow's id to the
workflow's compensation, whose undo is registered up front by that id; one created under the
provider's own id is undone here, since the workflow never learns that id. Remote providers
keep one regular activity per call, each with its own retries and timeout.
"""

from __future__ import annotations

from temporalio import activity

from activities.customers import CustomerActivities
from activities.identity import IdentityActivities
from activities.models import CustomerRef, LinkAndActivateInput, LinkedActivation
from activities.roles import OneStepActivation, customer_part


class ActivationActivities:
    def __init__(
        self,
        identity: IdentityActivities,
        customers: CustomerActivities,
        one_step: OneStepActivation | None = None,
    ) -> None:
        self._identity = identity
        self._customers = customers
        self._one_step = one_step

    @activity.defn
    async def link_customer_and_activate(self, request: LinkAndActivateInput) -> LinkedActivation:
        """The customer linked or created, then the login active with the link; a one-record
        provider's login brings its own customer part (``IdentityCapabilities.one_record``)."""
        if self._one_step is not None:
            link, principal = await self._one_step.link_customer_and_activate(
                request.principal.principal_id, request.customer
            )
            return LinkedActivation(link=link, principal=principal)
        if request.one_record:
            principal = await self._identity.activate_principal(request.principal)
            return LinkedActivation(link=customer_part(principal), principal=principal)
        link = await self._customers.link_or_create_customer(request.customer)
        try:
            principal = await self._identity.activate_principal(
                request.principal.model_copy(update={"customer": link.customer})
            )
        except Exception:
            # The workflow's up-front undo covers a customer created under its id; one created
            # under the provider's own id is known only here, since the step fails whole.
            if link.created and link.customer.id != request.customer.id:
                await self._customers.undo_customer(CustomerRef(customer_id=link.customer.id))
            raise
        return LinkedActivation(link=link, principal=principal)
