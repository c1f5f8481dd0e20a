"""How the worker's and the receiver's aiokafka clients connect: TLS and SASL from ``KafkaSecurity``.

kafka-python's clients get theirs from ``streams.kafka.admin.client_options``.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust

from streams.errors import ConfigError
from streams.settings import KafkaSecurity


def broker_credentials(security: KafkaSecurity) -> faust.auth.Credentials | None:
    """faust's form of the TLS and SASL settings; None for PLAINTEXT."""
    context = tls_context(security) if security.tls else None
    if security.sasl:
        return faust.SASLCredentials(username=security.sasl_username, password=security.sasl_password,
                                     mechanism=security.sasl_mechanism, ssl_context=context)
    return faust.SSLCredentials(context) if context else None


def tls_context(security: KafkaSecurity) -> ssl.SSLContext:
    """Verifies the brokers against KAFKA_SSL_CAFILE (or the system's CAs), with the client certificate if set."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=security.ssl_cafile)
        if security.ssl_certfile:
            context.load_cert_chain(security.ssl_certfile, security.ssl_keyfile, security.ssl_key_password)
    except (ssl.SSLError, OSError) as exc:  # not PEM, a key that does not match, a wrong key password
        raise ConfigError(f"the TLS files in KAFKA_SSL_CAFILE, KAFKA_SSL_CERTFILE or KAFKA_SSL_KEYFILE do not "
                          f"load: {exc}") from None
    return context


def aiokafka_options(security: KafkaSecurity) -> dict[str, Any]:
    """For a plain ``AIOKafkaProducer`` (the receipts receiver): the same security as the worker's."""
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.tls:
        options["ssl_context"] = tls_context(security)
    if security.sasl:
        options.update(sasl_mechanism=security.sasl_mechanism, sasl_plain_username=security.sasl_username,
                       sasl_plain_password=security.sasl_password)
    return options
