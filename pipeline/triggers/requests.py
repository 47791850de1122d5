"""Turning an exec intent and its trigger into a concrete request, with placeholders rendered.

Only at this point are ``{{secrets.NAME}}`` placeholders resolved (from the trigger's
organization's provider); ``describe()``, which the logs keep, leaves headers and SMTP
credentials out, and the deliverer replaces any secret value left in it (a URL, a body) by
``***``. A request is plain data (an HTTP request, or an email for SMTP) so the senders are thin
adapters and the rendering is testable without a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from eventray.pipeline.errors import PermanentError
from eventray.pipeline.models.trigger import (
    EmailConfig,
    HttpConfig,
    KafkaConfig,
    MqttConfig,
    NatsConfig,
    RabbitMqConfig,
    SlackConfig,
    TeamsConfig,
    Trigger,
    WebSocketConfig,
)
from eventray.pipeline.ports import SecretsProvider
from eventray.pipeline.templating import render
from eventray.pipeline.triggers.teams import adaptive_card, message_card, teams_format

__all__ = [
    "DeliveryJob",
    "EmailRequest",
    "HttpRequest",
    "KafkaRequest",
    "MqttRequest",
    "NatsRequest",
    "RabbitMqRequest",
    "Request",
    "UnsupportedTrigger",
    "WebSocketRequest",
    "build_request",
    "mqtt_endpoint",
]


class UnsupportedTrigger(PermanentError):
    """The trigger type has no sender in this build."""


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """One exec action to deliver (what the lane publishes to the trigger stream)."""

    event_tracker_id: str
    org_id: str
    path_key: str
    trigger_id: str
    message: str | None
    context: dict[str, Any]
    business_rule_id: str = ""
    action_id: str = ""
    mode: str = "sequential"
    on_error: str = "continue"

    def dedup_id(self) -> str:
        return f"{self.event_tracker_id}:{self.business_rule_id or 'route'}:{self.action_id or self.trigger_id}"

    def to_dict(self) -> dict[str, Any]:
        """The job as the JSON document the trigger queue carries."""
        return {
            "eventTrackerId": self.event_tracker_id,
            "orgId": self.org_id,
            "pathKey": self.path_key,
            "triggerId": self.trigger_id,
            "message": self.message,
            "context": self.context,
            "businessRuleId": self.business_rule_id,
            "actionId": self.action_id,
            "mode": self.mode,
            "onError": self.on_error,
        }

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict(), default=str)

    @classmethod
    def from_bytes(cls, raw: bytes) -> DeliveryJob:
        return cls.from_dict(orjson.loads(raw))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeliveryJob:
        """The inverse of :meth:`to_dict`."""
        return cls(
            d["eventTrackerId"],
            d["orgId"],
            d["pathKey"],
            d["triggerId"],
            d.get("message"),
            d.get("context") or {},
            d.get("businessRuleId", ""),
            d.get("actionId", ""),
            d.get("mode", "sequential"),
            d.get("onError", "continue"),
        )


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    timeout_s: float = 5.0

    def describe(self) -> str:
        """What ``logs_trigger`` keeps of the request (headers left out: they carry tokens)."""
        return f"{self.method} {self.url} {self.body[:2000].decode(errors='replace')}"


@dataclass(frozen=True, slots=True)
class EmailRequest:
    """One email to send over SMTP (port 465: implicit TLS; otherwise STARTTLS when the
    server offers it)."""

    host: str
    port: int
    from_addr: str
    to: tuple[str, ...]
    subject: str
    body: str = ""
    html_body: str | None = None
    cc: tuple[str, ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0

    def describe(self) -> str:
        """What ``logs_trigger`` keeps (never the credentials)."""
        cc = f" cc {','.join(self.cc)}" if self.cc else ""
        return (
            f"SMTP {self.host}:{self.port} from {self.from_addr} to {','.join(self.to)}{cc} "
            f"subject {self.subject!r} {self.body[:2000]}"
        )


@dataclass(frozen=True, slots=True)
class NatsRequest:
    """One message to publish on a NATS server (core NATS: delivered to the subscribers
    present, at most once; a server that does not answer the flush fails the attempt)."""

    server: str = field(repr=False)  # may carry credentials
    subject: str
    body: bytes
    timeout_s: float = 5.0

    def describe(self) -> str:
        """What ``logs_trigger`` keeps (the server without its credentials)."""
        return f"NATS {_without_credentials(self.server)} {self.subject} {self.body[:2000].decode(errors='replace')}"


@dataclass(frozen=True, slots=True)
class WebSocketRequest:
    """One text message to send on a WebSocket (on an open connection: the protocol has no
    acknowledgement, so a message is delivered at most once)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    message: str = ""
    timeout_s: float = 5.0

    def describe(self) -> str:
        """What ``logs_trigger`` keeps (headers left out: they carry tokens)."""
        return f"WS {self.url} {self.message[:2000]}"


@dataclass(frozen=True, slots=True)
class MqttRequest:
    """One message to publish on an MQTT broker (MQTT 3.1.1).

    QoS 0: handed to the connection, at most once. QoS 1 and 2: the attempt succeeds only once
    the broker acknowledged the message (PUBACK, or PUBCOMP for 2); a retry after an
    acknowledgement that was lost can deliver the message again (at least once).
    """

    host: str
    port: int
    topic: str
    qos: int
    body: bytes
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 5.0

    def describe(self) -> str:
        """What ``logs_trigger`` keeps (never the credentials)."""
        scheme = "mqtts" if self.tls else "mqtt"
        where = f"[{self.host}]" if ":" in self.host else self.host
        return (
            f"MQTT {scheme}://{where}:{self.port} {self.topic} qos {self.qos} "
            f"{self.body[:2000].decode(errors='replace')}"
        )


@dataclass(frozen=True, slots=True)
class RabbitMqRequest:
    """One persistent message to publish on a RabbitMQ broker (AMQP 0-9-1) with publisher
    confirms: the attempt succeeds once the broker confirmed it, and fails when no queue took
    it (``mandatory``). ``exchange`` empty is the default exchange, where the routing key is
    the queue's name. ``message_id`` is the same on every retry of one delivery, so a consumer
    can drop the copy a retry after a lost confirm makes."""

    host: str
    port: int
    vhost: str
    username: str
    password: str = field(repr=False)
    exchange: str = ""
    routing_key: str = ""
    body: bytes = b""
    message_id: str = ""
    timeout_s: float = 5.0

    def describe(self) -> str:
        """What ``logs_trigger`` keeps (never the credentials)."""
        where = f"[{self.host}]" if ":" in self.host else self.host
        exchange = repr(self.exchange) if self.exchange else "(default)"
        return (
            f"AMQP {where}:{self.port} vhost {self.vhost!r} exchange {exchange} "
            f"routing key {self.routing_key!r} {self.body[:2000].decode(errors='replace')}"
        )


_MQTT_SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True, "tls": True}
_MQTT_TLS_PORT = 8883


def mqtt_endpoint(broker: str, port: int) -> tuple[str, int, bool]:
    """``(host, port, tls)`` of a trigger's ``broker`` (a host, or an ``mqtt(s)://`` URL).

    Raises:
        PermanentError: an unknown scheme, no host, or credentials in the URL (they belong in
            ``username``/``password``, which are never recorded).
    """
    from urllib.parse import urlsplit

    if "://" not in broker:
        host = broker.strip().removeprefix("[").removesuffix("]")
        if not host:
            raise PermanentError("MQTT broker is empty")
        return host, port, port == _MQTT_TLS_PORT
    parts = urlsplit(broker.strip())
    scheme = parts.scheme.lower()
    if scheme not in _MQTT_SCHEMES:
        raise PermanentError(
            f"MQTT broker scheme {scheme!r} is not one of {', '.join(sorted(_MQTT_SCHEMES))}"
        )
    if "@" in parts.netloc:
        raise PermanentError("MQTT broker URL holds credentials: give username and password")
    try:
        url_port = parts.port
    except ValueError:
        raise PermanentError("MQTT broker URL has an invalid port") from None
    if not parts.hostname:
        raise PermanentError("MQTT broker URL has no host")
    return parts.hostname, url_port or port, _MQTT_SCHEMES[scheme]


@dataclass(frozen=True, slots=True)
class KafkaRequest:
    """One record to produce to a Kafka topic (acknowledged by all in-sync replicas; a retried
    attempt may write it twice: at least once)."""

    bootstrap_servers: str
    topic: str
    value: bytes
    key: bytes | None = None
    timeout_s: float = 10.0

    def describe(self) -> str:
        """What ``logs_trigger`` keeps."""
        key = "" if self.key is None else f" key={self.key[:200].decode(errors='replace')!r}"
        return (
            f"KAFKA {self.bootstrap_servers} {self.topic}{key} "
            f"{self.value[:2000].decode(errors='replace')}"
        )


def _without_credentials(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url if "://" in url else f"nats://{url}")
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


Request = (
    HttpRequest
    | EmailRequest
    | NatsRequest
    | WebSocketRequest
    | MqttRequest
    | RabbitMqRequest
    | KafkaRequest
)


def _context(job: DeliveryJob) -> dict[str, Any]:
    return {**job.context, "message": job.message or ""}


def _render_value(value: Any, context: dict[str, Any], secrets: SecretsProvider | None) -> Any:
    if isinstance(value, str):
        return render(value, context, secrets)
    if isinstance(value, dict):
        return {k: _render_value(v, context, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_value(v, context, secrets) for v in value]
    return value


def _addresses(
    value: list[str] | str | None, ctx: dict[str, Any], secrets: SecretsProvider | None
) -> tuple[str, ...]:
    """Rendered recipients; an entry may itself be a comma-separated list."""
    items = [value] if isinstance(value, str) else list(value or [])
    rendered = (render(item, ctx, secrets) for item in items)
    return tuple(a.strip() for r in rendered for a in r.split(",") if a.strip())


def build_request(trigger: Trigger, job: DeliveryJob, secrets: SecretsProvider | None) -> Request:
    """The request that delivers ``job`` through ``trigger``.

    Raises:
        UnsupportedTrigger: other trigger types (their senders are not built yet).
        TemplateRenderError: a placeholder cannot be rendered (e.g. unknown secret).
    """
    ctx = _context(job)
    config = trigger.settings()
    if isinstance(config, HttpConfig):
        headers = {k: render(v, ctx, secrets) for k, v in config.headers.items()}
        if config.body is None:
            body = orjson.dumps(
                {
                    "message": job.message,
                    "eventTrackerId": job.event_tracker_id,
                    "triggerId": trigger.id,
                }
            )
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(config.body, dict):
            body = orjson.dumps(_render_value(config.body, ctx, secrets))
            headers.setdefault("Content-Type", "application/json")
        else:
            body = render(config.body, ctx, secrets).encode()
        return HttpRequest(
            config.method,
            render(config.endpoint, ctx, secrets),
            headers,
            body,
            config.timeout_ms / 1000,
        )
    if isinstance(config, SlackConfig):
        text = job.message if job.message is not None else render(config.message, ctx, secrets)
        payload: dict[str, Any] = {"text": text}
        if config.channel:
            payload["channel"] = config.channel
        if config.username:
            payload["username"] = config.username
        return HttpRequest(
            "POST",
            render(config.webhook_url, ctx, secrets),
            {"Content-Type": "application/json"},
            orjson.dumps(payload),
        )
    if isinstance(config, TeamsConfig):
        text = job.message if job.message is not None else render(config.text, ctx, secrets)
        title = render(config.title, ctx, secrets)
        url = render(config.webhook_url, ctx, secrets)
        card = message_card if teams_format(url, config.format) == "messageCard" else adaptive_card
        return HttpRequest(
            "POST", url, {"Content-Type": "application/json"}, orjson.dumps(card(title, text))
        )
    if isinstance(config, EmailConfig):
        to = _addresses(config.to, ctx, secrets)
        if not to:
            raise UnsupportedTrigger(f"email trigger {trigger.id!r} has no recipient")
        plain = render(config.body, ctx, secrets) if config.body is not None else None
        return EmailRequest(
            host=render(config.smtp_host, ctx, secrets),
            port=config.smtp_port,
            from_addr=render(config.from_addr, ctx, secrets),
            to=to,
            cc=_addresses(config.cc, ctx, secrets),
            subject=render(config.subject, ctx, secrets),
            body=plain if plain is not None else (job.message or ""),
            html_body=render(config.html_body, ctx, secrets) if config.html_body else None,
            username=render(config.username, ctx, secrets) if config.username else None,
            password=render(config.password, ctx, secrets) if config.password else None,
        )
    if isinstance(config, NatsConfig):
        text = job.message if job.message is not None else render(config.message, ctx, secrets)
        return NatsRequest(
            render(config.server, ctx, secrets), render(config.subject, ctx, secrets), text.encode()
        )
    if isinstance(config, WebSocketConfig):
        text = job.message if job.message is not None else render(config.message, ctx, secrets)
        return WebSocketRequest(
            render(config.url, ctx, secrets),
            {k: render(v, ctx, secrets) for k, v in config.headers.items()},
            text,
        )
    if isinstance(config, MqttConfig):
        text = job.message if job.message is not None else render(config.message, ctx, secrets)
        host, port, tls = mqtt_endpoint(render(config.broker, ctx, secrets), config.port)
        return MqttRequest(
            host, port, render(config.topic, ctx, secrets), config.qos, text.encode(), tls,
            username=render(config.username, ctx, secrets) if config.username else None,
            password=render(config.password, ctx, secrets) if config.password else None,
        )  # fmt: skip
    if isinstance(config, RabbitMqConfig):
        text = job.message if job.message is not None else render(config.message, ctx, secrets)
        exchange = render(config.exchange, ctx, secrets) if config.exchange else ""
        key = config.routing_key if exchange else (config.queue or config.routing_key)
        return RabbitMqRequest(
            render(config.host, ctx, secrets), config.port, render(config.vhost, ctx, secrets),
            render(config.username, ctx, secrets), render(config.password, ctx, secrets),
            exchange, render(key, ctx, secrets) if key else "", text.encode(), job.dedup_id(),
        )  # fmt: skip
    if isinstance(config, KafkaConfig):
        text = job.message if job.message is not None else render(config.message, ctx, secrets)
        return KafkaRequest(
            render(config.bootstrap_servers, ctx, secrets),
            render(config.topic, ctx, secrets),
            text.encode(),
            render(config.key, ctx, secrets).encode() if config.key is not None else None,
        )
    raise UnsupportedTrigger(f"trigger type {trigger.trigger_type!r} has no sender yet")
