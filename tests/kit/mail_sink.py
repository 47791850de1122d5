"""A loopback SMTP sink (aiosmtpd, a real SMTP server): records what email triggers send, for
the demo and the tests.

Recipients ``refuse@...`` are refused permanently (550) and ``later@...`` transiently (451)
for the first ``defer_first`` attempts, to exercise the sender's error handling.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

__all__ = ["MailSink", "ReceivedMail"]


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return part.get_content().strip() if part is not None else ""

    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        return part.get_content().strip() if part is not None else ""


@dataclass
class MailSink:
    """An SMTP server on 127.0.0.1 (free port) that accepts and keeps every message."""

    defer_first: int = 0
    mails: list[ReceivedMail] = field(default_factory=list)
    port: int = 0
    _controller: Controller | None = None
    _deferred: int = 0

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address.startswith("refuse@"):
            return "550 5.1.1 no such mailbox"
        if address.startswith("later@") and self._deferred < self.defer_first:
            self._deferred += 1
            return "451 4.7.1 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.mails.append(ReceivedMail(envelope.mail_from, tuple(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def start(self, *, port: int = 0) -> MailSink:
        """Listen on ``port`` (0: a free one; a server restarted on its old port keeps it)."""
        if port:
            self.port = port
        else:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
