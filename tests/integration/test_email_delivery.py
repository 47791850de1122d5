"""Email triggers over real SMTP to a loopback aiosmtpd server (smtplib sender, no mocks)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from eventray.pipeline.adapters.smtp_sender import SmtpSender
from eventray.pipeline.models import Trigger
from eventray.pipeline.secrets import EnvSecrets
from eventray.pipeline.triggers.delivery import Deliverer, DeliveryGroup, DeliveryOutcome
from eventray.pipeline.triggers.policy import RetryPolicy
from eventray.pipeline.triggers.requests import DeliveryJob, EmailRequest
from eventray.testing.mail_sink import MailSink

pytestmark = pytest.mark.services


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


def deliver(trig: Trigger, **kw: Any) -> DeliveryOutcome:
    context = {
        "event": {"data": {"t": -12}},
        "metadata": {"assetId": "freezer-01"},
        "state": {},
        "params": {"domain": "example.com", "oncall": "oncall@example.com"},
    }
    job = DeliveryJob("trk-9", "o", "0001", trig.id, None, context, "br", "a-mail")
    deliverer = Deliverer({trig.id: trig}, SmtpSender(), secrets=EnvSecrets({}),
                          retry=RetryPolicy(max_attempts=3, base_delay_s=0.01), **kw)  # fmt: skip
    return asyncio.run(deliverer.deliver(DeliveryGroup((job,))))


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
