"""The SMTP transport of email trigger deliveries, over the standard library's ``smtplib``.

One connection per email, in a worker thread: email triggers are rare next to events and
``smtplib`` is the reference client, so pooling connections is not worth a new dependency.
SMTP's reply codes decide retrying: 4xx (and connection failures) are transient, 5xx
permanent (a refused recipient will not be accepted on the next try).
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage

from eventray.pipeline.errors import RetryableError
from eventray.pipeline.triggers.delivery import SendResult
from eventray.pipeline.triggers.requests import EmailRequest

__all__ = ["SmtpSender", "email_message"]


def email_message(request: EmailRequest) -> EmailMessage:
    """The MIME message: plain text, plus an HTML alternative when the trigger has one."""
    message = EmailMessage()
    message["From"] = request.from_addr
    message["To"] = ", ".join(request.to)
    if request.cc:
        message["Cc"] = ", ".join(request.cc)
    message["Subject"] = request.subject
    message.set_content(request.body or "")
    if request.html_body:
        message.add_alternative(request.html_body, subtype="html")
    return message


class SmtpSender:
    """Sends :class:`EmailRequest`s; ``tls_context`` verifies servers (the default)."""

    def __init__(self, *, tls_context: ssl.SSLContext | None = None) -> None:
        self.tls_context = tls_context or ssl.create_default_context()

    async def __call__(self, request: EmailRequest) -> SendResult:
        return await asyncio.to_thread(self._send, request)

    def _send(self, request: EmailRequest) -> SendResult:
        where = f"SMTP {request.host}:{request.port}"
        try:
            client: smtplib.SMTP
            if request.port == 465:
                client = smtplib.SMTP_SSL(
                    request.host, request.port, timeout=request.timeout_s, context=self.tls_context
                )
            else:
                client = smtplib.SMTP(request.host, request.port, timeout=request.timeout_s)
            with client:
                client.ehlo()
                if request.port != 465 and client.has_extn("starttls"):
                    client.starttls(context=self.tls_context)
                    client.ehlo()
                if request.username:
                    client.login(request.username, request.password or "")
                refused = client.send_message(
                    email_message(request), request.from_addr, [*request.to, *request.cc]
                )
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            detail = "; ".join(f"{rcpt}: {code}" for rcpt, (code, _) in exc.recipients.items())
            return _answer(codes[-1], f"{where}: every recipient refused ({detail})")
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused, auth, ...
            message = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            return _answer(exc.smtp_code, f"{where}: {exc.smtp_code} {message}")
        except (smtplib.SMTPException, OSError) as exc:
            raise RetryableError(f"{where}: {type(exc).__name__}: {exc}") from exc
        if refused:
            partly = "; ".join(f"{rcpt}: {code}" for rcpt, (code, _) in refused.items())
            return SendResult(250, f"accepted, but some recipients refused ({partly})")
        return SendResult(250, "accepted")


def _answer(code: int, text: str) -> SendResult:
    return SendResult(code, text, retryable=400 <= code < 500, error=f"SMTP {code}")
