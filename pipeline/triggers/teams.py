"""The bodies a Microsoft Teams incoming webhook takes, and which one a URL wants.

Teams has two kinds of incoming webhook, and each refuses the other's body:

- **Workflows** (Power Automate's "post to a channel when a webhook request is received"; URLs on
  ``*.logic.azure.com`` or ``*.powerplatform.com``, with ``/workflows/`` in the path) take a
  message whose attachment is an Adaptive Card.
- **Office 365 connectors** (``*.webhook.office.com/webhookb2/...``, formerly
  ``outlook.office.com/webhook/...``) take a legacy ``MessageCard``. Microsoft is retiring them,
  so a URL of neither kind gets the Adaptive Card.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = ["ADAPTIVE_CARD_SCHEMA", "TeamsFormat", "adaptive_card", "message_card", "teams_format"]

TeamsFormat = Literal["adaptiveCard", "messageCard"]

ADAPTIVE_CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"

_CONNECTOR_HOSTS = ("outlook.office.com", "outlook.office365.com")


def teams_format(url: str, configured: str = "auto") -> TeamsFormat:
    """The body ``url`` takes: ``configured`` unless it is ``auto``, else chosen by the URL."""
    if configured == "messageCard":
        return "messageCard"
    if configured == "adaptiveCard":
        return "adaptiveCard"
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    workflows = host.endswith((".logic.azure.com", ".powerplatform.com"))
    if workflows or "/workflows/" in parts.path:
        return "adaptiveCard"
    connector = host.endswith(".webhook.office.com") or host in _CONNECTOR_HOSTS
    if connector or parts.path.startswith("/webhookb2/"):
        return "messageCard"
    return "adaptiveCard"


def adaptive_card(title: str, text: str) -> dict[str, Any]:
    """A Teams message holding one Adaptive Card (1.4): the title in bold, then the text."""
    body: list[dict[str, Any]] = []
    if title:
        body.append(
            {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": True}
        )
    body.append({"type": "TextBlock", "text": text, "wrap": True})
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": ADAPTIVE_CARD_SCHEMA,
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": body,
                },
            }
        ],
    }


def message_card(title: str, text: str) -> dict[str, Any]:
    """A legacy connector card; ``summary`` (required, shown in notifications) is the title,
    or the start of the text when there is none."""
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": title or text[:80],
        "title": title,
        "text": text,
    }
