"""Email triggers over real SMTP to a loopback aiosmtpd server (smtplib sender, no mocks)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from eventray.pipeline.adapters.egress import EgressPolicy
from eventray.pipeline.adapters.smtp_sender import SmtpSender
from eventray.pipeline.models import Trigger
from eventray.pipeline.secrets import DictSecrets
from eventray.pipeline.triggers.delivery import Deliverer, DeliveryGroup, DeliveryOutcome
from eventray.pipeline.triggers.policy import RetryPolicy
from eventray.pipeline.triggers.requests import DeliveryJob, EmailRequest
from eventray.testing.mail_sink import MailSink

pytestmark = pytest.mark.services

LOOPBACK = EgressPolicy.allowing(["127.0.0.1/32"])  # the sink listens there; refused by default


@pytest.fixture
def mail() -> Iterator[MailSink]:
    with MailSink() as running:
        yield running


def trigger(port: int, **email: Any) -> Trigger:
    config = {
        "smtpHost": "127.0.0.1",
        "smtpPort": port,
        "fromAddr": "eventray@{{params.domain}}",
        "to": ["ops@example.com", "{{params.oncall}}"],
        "subject": "{{metadata.assetId}} at {{event.data.t}} C",
        "body": "Temperature {{event.data.t}} C on {{metadata.assetId}}.",
        **email,
    }
    return Trigger.model_validate(
        {
            "id": "mail",
            "orgId": "o",
            "name": "m",
            "triggerType": "email",
            "config": {"email": config},
        }
    )


CONTEXT = {
    "event": {"data": {"t": -12}},
    "metadata": {"assetId": "freezer-01"},
    "state": {},
    "params": {"domain": "example.com", "oncall": "oncall@example.com"},
}


def deliver(trig: Trigger, *, times: int = 1, sender: SmtpSender | None = None,
            context: dict[str, Any] | None = None, **kw: Any) -> DeliveryOutcome:  # fmt: skip
    """Deliver ``times`` emails through one sender (closed afterwards); the last outcome."""

    async def run() -> DeliveryOutcome:
        smtp = sender or SmtpSender(policy=LOOPBACK)
        deliverer = Deliverer({trig.id: trig}, smtp, secrets=DictSecrets(),
                              retry=RetryPolicy(max_attempts=3, base_delay_s=0.01), **kw)  # fmt: skip
        try:
            outcome = DeliveryOutcome()
            for n in range(times):
                job = DeliveryJob(f"trk-{n}", "o", "0001", trig.id, None, context or CONTEXT,
                                  "br", "a-mail")  # fmt: skip
                outcome = await deliverer.deliver(DeliveryGroup((job,)))
            return outcome
        finally:
            await smtp.close()

    return asyncio.run(run())


def test_rendered_email_reaches_the_server(mail: MailSink) -> None:
    trig = trigger(mail.port, cc="audit@example.com", htmlBody="<b>{{event.data.t}} C</b>")
    outcome = deliver(trig)
    assert not outcome.failed and [a.success for a in outcome.attempts] == [True]
    [received] = mail.mails
    assert received.mail_from == "eventray@example.com"
    assert received.rcpt_tos == ("ops@example.com", "oncall@example.com", "audit@example.com")
    assert received.subject == "freezer-01 at -12 C"
    assert received.text() == "Temperature -12 C on freezer-01."
    assert received.html() == "<b>-12 C</b>"
    assert outcome.attempts[0].request.startswith(f"SMTP 127.0.0.1:{mail.port} from eventray@")


def test_refused_recipient_is_permanent_and_deferral_is_retried(mail: MailSink) -> None:
    refused = deliver(trigger(mail.port, to="refuse@example.com"))
    assert [a.error for a in refused.attempts] == ["SMTP 550"]  # not retried
    assert "every recipient refused" in refused.attempts[0].response
    assert "after 1 attempt(s)" in refused.failed[0][1] and not mail.mails
    mail.defer_first = 1
    later = deliver(trigger(mail.port, to="later@example.com"))
    assert [(a.success, a.error) for a in later.attempts] == [(False, "SMTP 451"), (True, "")]
    assert [m.rcpt_tos for m in mail.mails] == [("later@example.com",)]


def test_unreachable_server_is_retried_then_reported(mail: MailSink) -> None:
    port = mail.port
    mail.stop()
    outcome = deliver(trigger(port))
    assert len(outcome.attempts) == 3 and not any(a.success for a in outcome.attempts)
    assert "ConnectionRefusedError" in outcome.failed[0][1]


def test_credentials_never_reach_the_log() -> None:
    request = EmailRequest("h", 25, "a@b.c", ("x@y.z",), "s", "b", username="u", password="pw")
    assert "pw" not in request.describe() and "pw" not in repr(request)


def test_one_connection_carries_many_emails(mail: MailSink) -> None:
    sender = SmtpSender(policy=LOOPBACK, threads=1)
    outcome = deliver(trigger(mail.port), times=5, sender=sender)
    assert not outcome.failed
    assert len(mail.mails) == 5
    assert sender.connects == 1  # kept and reused, not one connection per email


def test_a_kept_connection_the_server_closed_is_opened_again(mail: MailSink) -> None:
    sender = SmtpSender(policy=LOOPBACK, threads=1)
    first = deliver(trigger(mail.port), sender=SmtpSender(policy=LOOPBACK, threads=1))
    assert not first.failed
    port = mail.port
    mail.stop()  # every open session ends with the server
    mail.start(port=port)
    outcome = deliver(trigger(port), times=2, sender=sender)
    assert not outcome.failed and len(mail.mails) == 3


def test_rendered_header_values_cannot_add_headers_and_may_be_any_text(mail: MailSink) -> None:
    context = {**CONTEXT, "metadata": {"assetId": "Kühlraum 2\r\nBcc: evil@example.com"}}
    outcome = deliver(trigger(mail.port), context=context)
    assert not outcome.failed
    [received] = mail.mails
    assert received.subject == "Kühlraum 2  Bcc: evil@example.com at -12 C"
    assert received.message["Bcc"] is None
    assert "evil@example.com" not in received.rcpt_tos
    assert received.text() == "Temperature -12 C on Kühlraum 2\r\nBcc: evil@example.com."
