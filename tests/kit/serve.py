"""The loopback sinks in a process of their own: ``python -m eventray.testing.serve``.

Benchmarks run the webhook sink and the SMTP sink here, so what they cost is not charged to the
process under measurement (in one process with a baseline, their threads would also compete for
its interpreter lock). The first line on stdout is ``{"webhook": URL, "smtp_port": N}``; each
line read on stdin is answered with the counts so far; the process ends when stdin closes.
"""

from __future__ import annotations

import sys

import orjson

from eventray.testing.mail_sink import MailSink
from eventray.testing.sink import WebhookSink

__all__ = ["main"]


def main() -> None:
    with WebhookSink() as webhook, MailSink() as mail:
        print(orjson.dumps({"webhook": webhook.url, "smtp_port": mail.port}).decode(), flush=True)
        for _ in sys.stdin:
            counts = {"webhook": len(webhook.requests), "email": len(mail.mails)}
            print(orjson.dumps(counts).decode(), flush=True)


if __name__ == "__main__":
    main()
