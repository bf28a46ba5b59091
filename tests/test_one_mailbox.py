"""One mailbox, one identity: every spelling of an address that mail delivers to one mailbox
(fullwidth letters, an ideographic full stop, another letter case) is one registration, one
principal and one customer, and a second registration is told "already registered" (dev server).
"""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowFailureError

from tests.helpers import categories, customers, identity, register, result_of, wait_for_state
from tests.stack import Stack
from workflows.models import ActivationOutcome, RegistrationState

ASCII = "xena@example.com"
FULLWIDTH = "xena@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com"  # fullwidth letters
IDEOGRAPHIC_STOP = "Xena@example\u3002com"  # ideographic full stop (U+3002)


async def test_a_fullwidth_spelling_of_an_activated_email_is_already_registered(
    stack: Stack,
) -> None:
    first = await register(stack, ASCII)
    await wait_for_state(stack, ASCII, RegistrationState.PENDING)
    await stack.registrations.submit_code(ASCII, stack.code_for(ASCII))
    assert (await result_of(stack, first.registration_id)).state is RegistrationState.ACTIVE

    for spelling in (FULLWIDTH, IDEOGRAPHIC_STOP):
        again = await register(stack, spelling)
        assert again == first  # the same workflow ID: the same registration's identity
        await wait_for_state(stack, spelling, RegistrationState.ALREADY_REGISTERED)
        assert (await stack.registrations.status(ASCII)).state is (
            RegistrationState.ALREADY_REGISTERED
        )
        # The owner's mailbox is told, at the address the account has.
        assert categories(stack, ASCII)[-1] == "customer_already_registered"
        await stack.registrations.cancel(spelling)  # let the next spelling start afresh
        await result_of_cancelled(stack, first.registration_id)

    principal = await identity(stack).find_principal(ASCII)
    assert principal is not None and principal.active
    for other in (FULLWIDTH.lower(), IDEOGRAPHIC_STOP.lower()):  # the keys of the defect
        assert await identity(stack).find_principal(other) is None
        assert await customers(stack).find_customer(other) is None
    customer = await customers(stack).find_customer(ASCII)
    assert customer is not None and customer.id == principal.customer_id


async def test_a_code_mailed_to_a_fullwidth_spelling_reaches_the_plain_mailbox(
    stack: Stack,
) -> None:
    """Mail goes where the identity points: the code for ``yves@example.com`` spelled
    with a fullwidth ``example`` arrives at
    ``yves@example.com`` and activates the account every spelling names."""
    email = "yves@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com"
    await register(stack, email)
    await wait_for_state(stack, "yves@example.com", RegistrationState.PENDING)
    reply = await stack.registrations.submit_code(
        "yves@example\u3002com", stack.code_for("yves@example.com")
    )
    assert reply.outcome is ActivationOutcome.ACTIVATED
    principal = await identity(stack).find_principal("yves@example.com")
    assert principal is not None and principal.active
    assert principal.email == "yves@example.com"  # no fullwidth domain kept in the record


async def result_of_cancelled(stack: Stack, registration_id: str) -> None:
    """Waits until the run that a cancel reached has closed."""
    with pytest.raises(WorkflowFailureError):
        await stack.client.get_workflow_handle(registration_id).result()
