"""The web console in a real browser (Debian's headless Chromium driven by playwright) against
the running stack: sign-in, a business rule built from scratch in the builder (keyboard
included), saved and run in test mode with its trace, a round trip that changes nothing, a
template script edited until a stage fails with its line, an event found by its tracker id,
a DLQ entry redriven, and a viewer refused a change by the API.

``EVENTRAY_CONSOLE_SCREENSHOTS=docs/console`` also writes each screen's screenshot there (the
README shows them). Without Chromium the module skips with the command that installs it
(``make browser`` does, as root; ``make test`` runs it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventray.cluster.stack import Stack
from eventray.pipeline.management import LOCAL, EntityService, TokenService
from tests.e2e.conftest import wait_for
from tests.e2e.test_cold_chain import post, reading

pytestmark = pytest.mark.ray

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():  # pragma: no cover - the machine's state
    pytest.skip(f"no {CHROMIUM}: run `apt-get install -y chromium` (or `make browser` as root)",
                allow_module_level=True)  # fmt: skip
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (.[dev])")

SHOTS = os.environ.get("EVENTRAY_CONSOLE_SCREENSHOTS")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def _token(stack: Stack, org: str, role: str) -> str:
    wiring = stack.wiring
    config, store = wiring.config_store(), wiring.token_store()
    try:
        scope = EntityService(config).scope(LOCAL)
        return TokenService(store).create(scope, org_id=org, role=role, name=f"ui-{role}").token
    finally:
        config.close()
        store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def tokens(stack: Stack) -> dict[str, str]:
    return {"admin": _token(stack, "acme-foods", "admin"),
            "viewer": _token(stack, "factory-alpha", "viewer")}  # fmt: skip


@pytest.fixture
def console(browser: Any, stack: Stack) -> Iterator[Callable[[str], Any]]:
    """Opens a page signed in with a token; script errors and console errors (a CSP refusal
    among them) fail the test, except the browser's line for each refused request: the
    pages show those answers (a 403, a 422) themselves."""
    contexts: list[Any] = []
    problems: list[str] = []

    def open_as(token: str) -> Any:
        context = browser.new_context(viewport={"width": 1100, "height": 760})
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"{stack.api_url}/console/")
        page.get_by_label("API token").fill(token)
        page.get_by_label("API token").press("Enter")
        page.locator("#whoami").wait_for()
        return page

    yield open_as
    for context in contexts:
        context.close()
    assert [p for p in problems if not p.startswith("Failed to load resource")] == []


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        # The whole page: a trace or a story below the fold belongs in the picture.
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def admin(stack: Stack, tokens: dict[str, str]) -> Iterator[httpx.Client]:
    """The management API as the admin, to check what the console did."""
    with httpx.Client(base_url=f"{stack.api_url}/api/v1/manage", timeout=30,
                      headers={"Authorization": f"Bearer {tokens['admin']}"}) as client:  # fmt: skip
        yield client


def test_sign_in_shows_who_and_the_overview(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    for minute in range(3):  # readings of the last minutes, for the throughput chart
        at = (now - timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")
        answer = post(stack, {**reading("FRZ-0001", 0, -20.0), "ts": at})
        assert answer.status_code == 201, answer.text
    last = answer.json()["eventTrackerId"]
    wait_for(lambda: admin.get(f"/events/{last}/story").status_code == 200)
    with httpx.Client() as client:
        answer = client.get(f"{stack.api_url}/console/app.js")
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    page = console(tokens["admin"])
    assert "org acme-foods" in page.locator("#whoami").inner_text()
    assert "admin" in page.locator("#whoami").inner_text()
    page.get_by_role("heading", name="ACME Foods").wait_for()
    page.locator("section[aria-label='organization factory-alpha'] dl").wait_for()
    assert (
        "events/min" in page.locator("section[aria-label='organization acme-foods']").inner_text()
    )
    shot(page, "overview")


def test_a_rule_built_from_scratch_is_saved_tested_and_round_trips(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    page = console(tokens["admin"])
    page.goto(f"{stack.api_url}/console/#/rule/new")
    page.get_by_label("Id", exact=True).fill("ui-cold")
    page.get_by_label("Name", exact=True).fill("UI cold alert")
    page.get_by_label("Organization", exact=True).fill("factory-alpha")
    page.get_by_label("Rule id (the rule edited in the other tabs)").fill("ui-cold-rule")
    page.get_by_label("Rule name").fill("UI cold rule")
    page.get_by_label("Applies to child organizations too").check()
    page.get_by_role("tab", name="Variables").click()
    page.get_by_role("button", name="Add variable").click()
    page.get_by_label("Variable name 1").fill("hits")
    page.get_by_role("tab", name="Actions").click()
    page.get_by_role("button", name="Add action").click()  # state: increment the first variable
    assert page.get_by_label("State variable").input_value() == "hits"
    # The builder, by keyboard: two conditions, the second moved up with Alt+ArrowUp.
    page.get_by_role("tab", name="Rules").click()
    page.get_by_role("button", name="Add condition to when").press("Enter")
    page.get_by_label("when.items[0] field value").fill("data.temperature")
    page.get_by_label("Operator of when.items[0]").select_option("greaterThan")
    page.get_by_label("when.items[0] value value").fill("-15")
    page.get_by_role("button", name="Add condition to when").press("Enter")
    page.get_by_label("when.items[1] field value").fill("data.status")
    page.get_by_label("Operator of when.items[1]").select_option("exists")
    page.locator("[data-path='when.items[1]']").focus()
    page.keyboard.press("Alt+ArrowUp")
    assert page.evaluate("document.activeElement.dataset.path") == "when.items[0]"
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.path") == "when.items[1]"
    page.get_by_role("button", name="Move condition when.items[1] up").click()  # and back
    page.get_by_label("a1", exact=True).first.check()  # attach the action to the root group
    shot(page, "rule-builder")
    page.locator("#save-rule").click()
    page.wait_for_url("**/#/rule/ui-cold")  # saved: the editor reopens on the stored rule
    rule = admin.get("/rules/ui-cold-rule").json()
    assert rule["when"] == {"logic": "AND", "actions": ["a1"], "items": [
        {"type": "condition", "data": {"field": {"type": "event", "value": "data.temperature"},
                                       "operator": "greaterThan",
                                       "value": {"type": "literal", "value": -15}}},
        {"type": "condition", "data": {"field": {"type": "event", "value": "data.status"},
                                       "operator": "exists"}}]}  # fmt: skip
    assert rule["actions"] == [{"id": "a1", "type": "state", "op": "increment", "variable": "hits"}]
    assert admin.get("/business-rules/ui-cold").json()["ruleId"] == "ui-cold-rule"
    # Test mode on the saved rule: the trace with actual values and the state change.
    page.get_by_role("tab", name="Debug").click()
    # A raw payload through the chosen template first, for the chosen asset.
    page.get_by_label("Template for raw payloads").select_option("freezer-json")
    page.get_by_label("Asset", exact=True).fill("freezer-01")
    page.get_by_label("Test events").fill(
        '{"deviceId": "FRZ-0001", "ts": "2026-03-01T08:00:00Z", "readings": {"t": -3},'
        ' "door": "closed"}')  # fmt: skip
    page.get_by_role("button", name="Run test mode").click()
    result = page.locator("#debug-result")
    result.get_by_text("test-1: matched").wait_for()
    assert "-3 greaterThan -15" in result.inner_text()
    assert '"hits"' in result.inner_text() and '"to": 1' in result.inner_text()
    shot(page, "rule-debug")
    # The round trip: loaded and saved unchanged, nothing is written.
    revisions = len(admin.get("/rules/ui-cold-rule/history").json()["items"])
    page.reload()
    page.get_by_role("tab", name="Rules").click()
    page.locator("#save-rule").click()
    page.get_by_text("Nothing changed: nothing saved.").wait_for()
    assert len(admin.get("/rules/ui-cold-rule/history").json()["items"]) == revisions
    assert admin.get("/rules/ui-cold-rule").json() == rule


def test_a_template_edit_shows_the_failing_stage_and_line(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str]
) -> None:
    page = console(tokens["admin"])
    page.goto(f"{stack.api_url}/console/#/template/freezer-json")
    transform = page.get_by_label("Transform script (scriptConversion)")
    transform.fill("const t = payload.temperature;\nif (t > 0) throw new Error('warm: ' + t);\n"
                   + transform.input_value())  # fmt: skip
    page.get_by_label("Sample payloads").fill(
        '{"deviceId": "FRZ-0001", "ts": "2026-03-01T08:00:00Z", "readings": {"t": -20}, "door": "closed"}\n'
        '{"deviceId": "FRZ-0001", "ts": "2026-03-01T08:01:00Z", "readings": {"t": 5}, "door": "closed"}')  # fmt: skip
    page.get_by_role("button", name="Run on samples").click()
    error = page.locator(".stage-error")
    error.wait_for()
    assert error.inner_text().startswith("transform failed at line 2: ")
    assert "warm: 5" in error.inner_text()
    assert page.locator("#template-result").get_by_text("Standard Event").count() == 1
    assert page.locator(".gutter .marked").inner_text().strip() == "2"
    shot(page, "template")


def test_an_event_is_found_by_its_tracker_id_and_a_dead_letter_redriven(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    stored = post(stack, reading("FRZ-0002", 10, -19.0))
    failed = post(stack, reading("FRZ-0002", 11, 99.0))  # over the validator's max: DLQ
    assert stored.status_code == failed.status_code == 201, (stored.text, failed.text)
    tracker, dead = stored.json()["eventTrackerId"], failed.json()["eventTrackerId"]
    wait_for(lambda: admin.get(f"/events/{tracker}/story").status_code == 200)
    wait_for(lambda: any(e["eventTrackerId"] == dead for e in admin.get("/dlq").json()["items"]))
    page = console(tokens["admin"])
    page.get_by_role("link", name="Events").click()
    page.get_by_label("Asset", exact=True).fill("freezer-02")  # the explorer, an EVA filter
    page.get_by_label("EVA filters (one per line)").fill("Temperature < -18.5")
    page.get_by_role("button", name="Search").click()
    page.locator("#event-results").get_by_role("link", name=tracker).wait_for()
    shot(page, "events")
    page.get_by_label("Event tracker id").fill(tracker)
    page.get_by_label("Event tracker id").press("Enter")
    page.locator("#story-tracker").wait_for()
    assert tracker in page.locator("#view").inner_text()
    assert "freezer-02" in page.locator("#view").inner_text()
    shot(page, "event-story")
    page.get_by_role("link", name="DLQ").click()
    page.get_by_role("button", name=f"Redrive {dead}").click()
    page.locator("#redrive-result").get_by_text(f"redrive of {dead}").wait_for()
    shot(page, "dlq")
    redriven = admin.get("/dlq", params={"redriven": "yes"}).json()["items"]
    assert dead in {e["eventTrackerId"] for e in redriven}


def test_a_viewer_sees_but_a_change_is_refused_by_the_api(
    console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    page = console(tokens["viewer"])
    assert "viewer" in page.locator("#whoami").inner_text()
    page.get_by_role("link", name="Rules").click()
    page.get_by_role("link", name="factory-alpha-high-temp").click()
    save = page.locator("#save-rule")
    assert save.get_attribute("aria-disabled") == "true"
    # high-temp-alert is acme-foods' shared rule: not the viewer's to read, so only the
    # business rule's own fields are shown
    assert "Rule name" not in page.locator("#rule-panel").inner_text()
    assert "null" not in page.locator("#rule-panel").inner_text()
    page.get_by_label("Name", exact=True).fill("renamed by a viewer")
    save.focus()  # marked disabled, yet a user may still press it: the API refuses
    save.press("Enter")
    refusal = page.locator("#save-result .error")
    refusal.wait_for()
    assert refusal.inner_text().startswith("403: ")
    refusal.scroll_into_view_if_needed()
    shot(page, "viewer-refused")
    assert admin.get("/business-rules/factory-alpha-high-temp").json()["name"] != (
        "renamed by a viewer"
    )


def test_a_token_made_in_the_console_is_shown_once_works_and_is_revoked_there(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    created = admin.post("/data-sources", json={
        "id": "ds-ui-token", "orgId": "factory-alpha", "name": "Console-made ingest tokens",
        "auth": {"type": "apiToken"}, "assetBind": {"uuidFields": ["deviceId"]}})  # fmt: skip
    assert created.status_code == 201, created.text
    assert stack.wait_revision(created.json()["storeRevision"])
    page = console(tokens["admin"])
    page.get_by_role("link", name="Tokens").click()
    me = admin.get("/whoami").json()["tokenId"]
    assert "(you)" in page.locator(f"tr.own[data-token-id='{me}']").inner_text()
    page.get_by_label("Organization", exact=True).select_option("factory-alpha")
    page.get_by_label("Role").select_option("ingest")
    page.get_by_label("Token name").fill("ui-gateway")
    page.get_by_label("Expires in days").fill("30")
    page.get_by_role("button", name="Create token").click()
    shown = page.get_by_label("New token value")
    shown.wait_for()
    value = shown.input_value()
    assert value.startswith("ert_") and shown.get_attribute("readonly") is not None
    assert "it will not be shown again" in page.locator("#token-issued").inner_text()
    page.get_by_role("button", name="Copy").click()  # copied, or selected for Ctrl+C
    page.locator("#token-issued").get_by_text("clipboard").wait_for()
    listed = [t for t in admin.get("/tokens").json()["items"] if t["name"] == "ui-gateway"]
    assert len(listed) == 1 and "token" not in listed[0]
    made = listed[0]
    assert (made["orgId"], made["role"], made["active"]) == ("factory-alpha", "ingest", True)
    assert made["expires"] is not None

    def send(minute: int) -> Any:
        return post(stack, reading("FRZ-0003", minute, -18.0), ds="ds-ui-token",
                    headers={"Authorization": f"Bearer {value}"})  # fmt: skip

    assert send(50).status_code == 201  # the token works
    # Revoking asks first, in the page; the screenshot shows a token revoked right after.
    page.get_by_role("button", name=f"Revoke ui-gateway ({made['id']})").click()
    question = "Revoke ui-gateway? It fails from its next request, for good."
    confirm = page.get_by_role("group", name=question)
    confirm.wait_for()
    assert admin.get(f"/tokens/{made['id']}").json()["revoked"] is None
    shot(page, "tokens")
    confirm.get_by_role("button", name="Confirm revoke").click()
    row = page.locator(f"tr[data-token-id='{made['id']}']")
    row.get_by_text("revoked", exact=True).wait_for()
    assert admin.get(f"/tokens/{made['id']}").json()["revoked"] is not None
    wait_for(lambda: send(51).status_code == 401, timeout_s=10)
    refused = httpx.get(f"{stack.api_url}/api/v1/manage/whoami",
                        headers={"Authorization": f"Bearer {value}"})  # fmt: skip
    assert refused.status_code == 401 and "revoked" in refused.text
    # Done drops the page's only copy of the value.
    page.get_by_role("button", name="Done, hide it").click()
    assert value not in _everything_in(page)


def _everything_in(page: Any) -> str:
    """The page's markup and every field's current value (a value is not in the markup)."""
    values = page.evaluate("[...document.querySelectorAll('input, textarea')].map(e => e.value)")
    return page.content() + "\n".join(values)


def test_a_viewer_is_refused_a_token_by_the_api(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    page = console(tokens["viewer"])
    page.get_by_role("link", name="Tokens").click()
    page.locator("#token-list .error").get_by_text("403: ").wait_for()  # not an admin: no list
    page.get_by_label("Token name").fill("made-by-a-viewer")
    create = page.get_by_role("button", name="Create token")
    assert create.get_attribute("aria-disabled") == "true"
    create.focus()  # marked disabled, yet a user may still press it: the API refuses
    create.press("Enter")
    assert page.locator("#token-result .error").inner_text().startswith("403: ")
    assert page.locator("#new-token-value").count() == 0
    names = {t["name"] for t in admin.get("/tokens").json()["items"]}
    assert "made-by-a-viewer" not in names


def test_a_secret_set_in_the_console_is_listed_but_its_value_is_nowhere_in_the_page(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    value = "ui-secret-value-9f3c1e"
    page = console(tokens["admin"])
    page.get_by_role("link", name="Secrets").click()
    page.locator("#secret-list > *").first.wait_for()
    page.get_by_label("Organization", exact=True).select_option("factory-alpha")
    page.get_by_label("Secret name").fill("UI_WEBHOOK")
    page.get_by_label("Secret value").fill(value)
    page.get_by_role("button", name="Save secret").click()
    said = page.locator("#secret-result")
    said.get_by_text("secret UI_WEBHOOK of factory-alpha created").wait_for()
    listed = admin.get("/secrets", params={"orgId": "factory-alpha"}).json()["items"]
    assert [s["name"] for s in listed] == ["UI_WEBHOOK"]
    page.locator("[data-secret='factory-alpha/UI_WEBHOOK']").wait_for()
    assert page.get_by_label("Secret value").input_value() == ""
    assert value not in _everything_in(page)
    assert "UI_WEBHOOK" in page.locator("#secret-changes").inner_text()
    shot(page, "secrets")
    # Replaced through the row's button, then deleted after the in-page confirmation.
    page.get_by_role("button", name="Replace UI_WEBHOOK of factory-alpha").click()
    assert page.get_by_label("Secret value").evaluate("e => e === document.activeElement")
    page.keyboard.type("a-new-value-2b7d")
    page.keyboard.press("Enter")
    said.get_by_text("secret UI_WEBHOOK of factory-alpha replaced").wait_for()
    assert "a-new-value-2b7d" not in _everything_in(page)
    page.get_by_role("button", name="Delete UI_WEBHOOK of factory-alpha").click()
    assert admin.get("/secrets/factory-alpha/UI_WEBHOOK").status_code == 200
    page.get_by_role("button", name="Confirm delete").click()
    page.locator("[data-secret='factory-alpha/UI_WEBHOOK']").wait_for(state="detached")
    assert admin.get("/secrets/factory-alpha/UI_WEBHOOK").status_code == 404
    changes = admin.get("/secrets/changes", params={"orgId": "factory-alpha"}).json()["items"]
    assert [c["op"] for c in changes] == ["set", "set", "delete"]
