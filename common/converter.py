"""The one data converter used by the worker, the starter, the tests and the replayer."""

from __future__ import annotations

import dataclasses

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes

from common.codec import EncryptionCodec, encryption_keys
from common.settings import Settings


def data_converter(settings: Settings | None = None) -> DataConverter:
    """Pydantic (JSON) conversion, plus payload encryption when ``settings.encryption`` is on
    (of failure messages and stack traces too).

    Without settings (or with encryption off) payloads stay plain JSON. Processes sharing a
    namespace must agree: a plain one cannot read what an encrypting one wrote.
    """
    if settings is None or not settings.encryption:
        return pydantic_data_converter
    keys, current_key_id = encryption_keys(settings)
    # Failure messages and stack traces go into the encrypted attributes too: provider errors
    # and a failed registration's reason are stored in history, where the default converter
    # keeps them in clear (the UI decodes them through the codec server like any payload).
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keys, current_key_id),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
