"""Encrypted end to end: what the Temporal cluster stores holds no customer data in clear, the
histories replay with rotated keys, and plain JSON typed into the UI still reaches the workflow."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.errors import NotFound
from activities.roles import Principal
from common.codec import PayloadDecryptionError
from common.converter import data_converter
from common.identifiers import WorkflowIdMode
from tests.doubles import RejectingIdentity
from tests.helpers import PASSWORD, identity, result_of, wait_for_state
from tests.stack import SESSION_KEYS, Stack, beside, make_settings, plain_client, running_stack
from tests.test_secrets import readable
from worker import SANDBOX
from workflows.models import ActivationOutcome, Approval, RegistrationState
from workflows.registration import RegistrationWorkflow

EMAIL = "Enc.Rypted@Example.com"
NAME = "Encarna Rypted"
PHONE = "+46 70 123 45 67"


class NamingIdentity(RejectingIdentity):
    """Activation fails for good with an error that names the customer."""

    async def activate_principal(
        self,
        principal_id: str,
        customer_id: str | None,
        customer_number: str | None,
        expected_version: str,
    ) -> Principal:
        raise NotFound(f"no principal {principal_id} for {NAME}")


async def encrypted_history(stack: Stack) -> WorkflowHistory:
    receipt = await stack.registrations.register(
        email=EMAIL, name=NAME, phone=PHONE, password=PASSWORD
    )
    await wait_for_state(stack, EMAIL, RegistrationState.PENDING)
    await stack.registrations.submit_code(EMAIL, stack.code_for(EMAIL))
    assert (await result_of(stack, receipt.registration_id)).state is RegistrationState.ACTIVE
    return await stack.client.get_workflow_handle(receipt.registration_id).fetch_history()


async def test_cluster_sees_no_customer_data_in_clear(stack: Stack) -> None:
    history = await encrypted_history(stack)
    raw = history.to_json()
    assert base64.b64encode(b"binary/encrypted").decode() in raw
    stored = readable(raw).lower()
    for clear in (NAME, PHONE, PASSWORD):
        assert clear.lower() not in stored


async def test_failure_messages_are_encrypted_too(stack: Stack) -> None:
    """A provider's error (here naming the customer, as a real reply may) and the failed
    registration's reason are stored encrypted; the status query still reads the reason."""
    personal = NamingIdentity(identity(stack), rejections=0)
    async for gated in beside(stack, "failing", identity=personal):
        receipt = await gated.registrations.register(email=EMAIL, name=NAME, password=PASSWORD)
        await wait_for_state(gated, EMAIL, RegistrationState.PENDING)
        reply = await gated.registrations.submit_code(EMAIL, gated.code_for(EMAIL))
        assert reply.outcome is ActivationOutcome.FAILED
        status = await gated.registrations.status(EMAIL)
        history = await gated.client.get_workflow_handle(receipt.registration_id).fetch_history()
    assert status.reason is not None and NAME in status.reason
    raw = history.to_json()
    assert "Encoded failure" in raw
    assert NAME.lower() not in readable(raw).lower()


async def test_hashed_ids_and_encryption_keep_even_the_email_out(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, workflow_id_mode=WorkflowIdMode.HASHED)
    async for stack in running_stack(dev_env.client, settings):
        stored = readable((await encrypted_history(stack)).to_json()).lower()
    for clear in (EMAIL, "enc.rypted", NAME, PHONE, PASSWORD):
        assert clear.lower() not in stored


async def test_history_written_with_key_1_replays_with_keys_2_and_1(
    stack: Stack, tmp_path: Path
) -> None:
    history = await encrypted_history(stack)
    key_2 = "test-2:" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    assert SESSION_KEYS["encryption_keys"] is not None
    key_1 = SESSION_KEYS["encryption_keys"].get_secret_value()
    rotated = make_settings(tmp_path, encryption_keys=SecretStr(f"{key_2},{key_1}"))
    replayer = Replayer(
        workflows=[RegistrationWorkflow],
        data_converter=data_converter(rotated),
        workflow_runner=SANDBOX,
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None

    only_2 = make_settings(tmp_path, encryption_keys=SecretStr(key_2))
    with pytest.raises(PayloadDecryptionError, match="test-1"):
        await data_converter(only_2).decode(
            history.events[0].workflow_execution_started_event_attributes.input.payloads
        )


async def test_plain_json_signal_from_the_ui_reaches_an_encrypted_workflow(stack: Stack) -> None:
    receipt = await stack.registrations.register(email=EMAIL, name=NAME, password=PASSWORD)
    await wait_for_state(stack, EMAIL, RegistrationState.PENDING)
    # Like the Temporal UI's signal dialog: plain JSON, no codec.
    ui = await plain_client(stack.client)
    await ui.get_workflow_handle(receipt.registration_id).signal(
        RegistrationWorkflow.approve, Approval(operator="support:ui", reason="typed in the UI")
    )
    assert (await result_of(stack, receipt.registration_id)).state is RegistrationState.ACTIVE
