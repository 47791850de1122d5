"""The web console in a real browser (Debian's headless Chromium driven by playwright) against
the running stack: sign-in, a business rule built from scratch in the builder (keyboard
included), saved and run in test mode with its trace, a round trip that changes nothing, a
template script edited until a stage fails with its line, a template copied (highlighted
scripts, an EVA field added with its value per sample) and one created and deleted, an event
found by its tracker id, a DLQ entry redriven, and a viewer refused a change by the API.

``EVENTRAY_CONSOLE_SCREENSHOTS=docs/console`` also writes each screen's screenshot there (the
README shows them). Without Chromium the module skips with the command that installs it
(``make browser`` does, as root; ``make test`` runs it).
"""

from __future__ import annotations

import csv
import io
import json
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


def test_a_wrong_token_is_refused_at_sign_in(stack: Stack, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    try:
        page = context.new_page()
        page.goto(f"{stack.api_url}/console/")
        page.get_by_label("API token").fill("ert_not-a-real-token")
        page.get_by_role("button", name="Sign in").click()
        sync_api.expect(page.locator("#status")).to_contain_text("401")
        assert page.locator("#nav").is_hidden()
        shot(page, "sign-in")
    finally:
        context.close()


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
    # The page shows what the API counted (per minute, in the store): the three readings
    # of the last minutes, as bars and as throughput; and the partitions' lag, live.
    counted = admin.get("/overview", params={"minutes": 10}).json()["orgs"]
    acme = next(o for o in counted if o["orgId"] == "acme-foods")
    assert sum(acme["events"]) >= 3 and len([n for n in acme["events"] if n]) >= 2, acme
    assert isinstance(acme["lag"], int), acme
    card = page.locator("section[aria-label='organization acme-foods']")
    sync_api.expect(card.locator(".throughput")).to_have_text(
        f"{sum(acme['events']) / 10:.1f} events/min")  # fmt: skip
    sync_api.expect(card.locator(".lag")).to_contain_text("waiting in partition")
    sync_api.expect(card.locator(".dlq")).to_have_text(str(acme["dlqPending"]))
    bars = card.locator("svg[aria-label='events per minute, acme-foods'] rect")
    assert bars.count() == len([n for n in acme["events"] if n])
    sync_api.expect(card.locator("svg[aria-label='lag, acme-foods'] polyline")).to_have_count(1)
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
    page.get_by_role("link", name="History of the rule").click()  # the rule's revisions
    page.get_by_text(f"{revisions} revision(s), newest first.").wait_for()


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
    offered = [a.inner_text() for a in page.locator("#nav a").all() if a.is_visible()]
    assert "Tokens" not in offered and "Replays" not in offered and "Rules" in offered
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


# Every control's accessible name, as a screen reader would announce it: an aria-label, the
# elements aria-labelledby names, a <label>, a button's or link's text, or a title.
UNNAMED = """() => [...document.querySelectorAll(
    "input, select, textarea, button, a[href], [role=treeitem], [role=tab], [tabindex]")]
  .filter((el) => el.type !== "hidden" && !el.closest("[hidden]"))
  .filter((el) => {
    const by = (el.getAttribute("aria-labelledby") || "").split(" ").filter(Boolean)
      .map((id) => (document.getElementById(id) || {}).textContent || "").join(" ");
    const labels = el.labels ? [...el.labels].map((l) => l.textContent).join(" ") : "";
    const text = ["BUTTON", "A"].includes(el.tagName) ? el.textContent : "";
    return !(el.getAttribute("aria-label") || by || labels || text || el.title || "").trim()
      && !["MAIN", "SECTION"].includes(el.tagName);
  })
  .map((el) => el.outerHTML.slice(0, 160))"""


def test_every_control_on_every_screen_has_a_name(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str]
) -> None:
    """Each screen of the navigation, and the editors behind it (every tab of a business
    rule, a template, an event's story): no control without an accessible name."""
    page = console(tokens["admin"])
    screens = [a.get_attribute("href") for a in page.locator("#nav a").all()]
    assert len(screens) >= 5, screens
    tracker = post(stack, reading("FRZ-0001", 20, -18.0)).json()["eventTrackerId"]
    details = ["#/rule/factory-alpha-high-temp", "#/rule/new", "#/rule-only/new",
               "#/template/freezer-json",
               f"#/story/{tracker}"]  # fmt: skip
    checked = 0
    for where in [*screens, *details]:
        page.goto(f"{stack.api_url}/console/{where}")
        page.locator("#view h2").first.wait_for()
        if where in ("#/rules", "#/templates"):  # the lists, for the README
            page.locator("#view table").first.wait_for()
            shot(page, where.strip("#/"))
        tabs = page.get_by_role("tab").all() or [None]
        for tab in tabs:
            if tab is not None:
                tab.click()
            if where == "#/rule/new" and tab is not None and tab.inner_text() == "Rules":
                page.get_by_role("button", name="Add group to when").click()
                page.get_by_role("button", name="Add condition to when.items[0]").click()
            assert page.evaluate(UNNAMED) == [], (where, tab and tab.inner_text())
            checked += page.locator("input, select, textarea, button").count()
    assert checked > 100


def test_the_builder_and_the_tabs_work_by_keyboard(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str]
) -> None:
    """Arrow keys move between the editor's tabs and the builder's items, Home/End jump,
    Alt+Arrow reorders (focus follows the moved item), Enter presses the focused button;
    and a mouse drag reorders and moves an item into another group (never a group into itself)."""
    page = console(tokens["admin"])
    page.goto(f"{stack.api_url}/console/#/rule/new")
    focused = "document.activeElement"
    page.get_by_role("tab", name="General").focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    assert page.evaluate(f"{focused}.textContent") == "Rules"
    assert page.get_by_role("tab", name="Rules").get_attribute("aria-selected") == "true"
    page.keyboard.press("ArrowLeft")
    assert page.evaluate(f"{focused}.textContent") == "Actions"
    page.keyboard.press("ArrowRight")
    # Enter on the focused buttons: a group, two conditions in it, one condition at the top.
    page.get_by_role("button", name="Add group to when").focus()
    page.keyboard.press("Enter")
    assert page.evaluate(f"{focused}.dataset.path") == "when.items[0]"  # focus on the new one
    for _ in range(2):
        page.get_by_role("button", name="Add condition to when.items[0]").focus()
        page.keyboard.press("Enter")
    page.get_by_role("button", name="Add condition to when", exact=True).focus()
    page.keyboard.press("Enter")
    for i, name in enumerate(("data.a", "data.b")):
        page.get_by_label(f"when.items[0].items[{i}] field value").fill(name)
    page.get_by_label("when.items[1] field value").fill("data.c")
    order = ["when", "when.items[0]", "when.items[0].items[0]", "when.items[0].items[1]",
             "when.items[1]"]  # fmt: skip
    page.locator("[data-path='when']").focus()
    for expected in order[1:]:
        page.keyboard.press("ArrowDown")
        assert page.evaluate(f"{focused}.dataset.path") == expected
    page.keyboard.press("Home")
    assert page.evaluate(f"{focused}.dataset.path") == "when"
    page.keyboard.press("End")
    assert page.evaluate(f"{focused}.dataset.path") == "when.items[1]"
    page.keyboard.press("ArrowUp")
    assert page.evaluate(f"{focused}.dataset.path") == "when.items[0].items[1]"
    page.keyboard.press("Alt+ArrowUp")  # data.b before data.a, and the focus goes with it
    assert page.evaluate(f"{focused}.dataset.path") == "when.items[0].items[0]"
    assert page.get_by_label("when.items[0].items[0] field value").input_value() == "data.b"
    # Tab leaves the item for its own controls (the first: its value source)
    page.keyboard.press("Tab")
    assert page.evaluate(f"{focused}.getAttribute('aria-label')") == (
        "when.items[0].items[0] field source"
    )
    # a mouse drag within the group puts data.a back first
    page.locator("[data-path='when.items[0].items[1]']").drag_to(
        page.locator("[data-path='when.items[0].items[0]']"))  # fmt: skip
    assert page.get_by_label("when.items[0].items[0] field value").input_value() == "data.a"
    # a group dropped into itself stays where it is; an item dropped into another group moves
    page.locator("[data-path='when.items[0]'] > .group-head > .tag").drag_to(
        page.locator("[data-path='when.items[0].items[1]'] .tag"))  # fmt: skip
    assert page.get_by_label("when.items[1] field value").input_value() == "data.c"
    page.locator("[data-path='when.items[1]'] .tag").drag_to(
        page.locator("[data-path='when.items[0].items[1]'] .tag"))  # fmt: skip
    assert page.evaluate(f"{focused}.dataset.path") == "when.items[0].items[1]"
    # by keyboard too: out of its group (after it), then into the group above (at its end)
    page.keyboard.press("Alt+ArrowLeft")
    assert page.evaluate(f"{focused}.dataset.path") == "when.items[1]"
    page.keyboard.press("Alt+ArrowRight")
    assert page.evaluate(f"{focused}.dataset.path") == "when.items[0].items[2]"
    page.keyboard.press("Alt+ArrowUp")
    assert page.evaluate(f"{focused}.dataset.path") == "when.items[0].items[1]"
    page.get_by_text("As JSON (what Save applies)").click()
    sync_api.expect(page.locator("#rule-json")).not_to_be_empty()  # filled on the toggle event
    rule = json.loads(page.locator("#rule-json").inner_text())[0]
    assert len(rule["when"]["items"]) == 1
    fields = [c["data"]["field"]["value"] for c in rule["when"]["items"][0]["data"]["items"]]
    assert fields == ["data.a", "data.c", "data.b"]


def test_an_exec_message_gets_placeholders_and_an_unknown_trigger_is_flagged(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str]
) -> None:
    page = console(tokens["admin"])
    page.goto(f"{stack.api_url}/console/#/rule/new")
    page.get_by_role("tab", name="Variables").click()
    page.get_by_role("button", name="Add variable").click()
    page.get_by_label("Variable name 1").fill("hits")
    page.get_by_role("tab", name="Actions").click()
    page.get_by_label("New action type").select_option("exec")
    page.get_by_role("button", name="Add action").click()
    trigger = page.get_by_label("Trigger", exact=True)
    assert trigger.input_value()  # the first trigger in scope
    trigger.fill("no-such-trigger")
    page.get_by_text("no trigger no-such-trigger in your scope").wait_for()
    message = page.get_by_label("Message of action 1")
    message.fill("hits: ")
    page.get_by_label("Placeholder for message 1").select_option("{{state.hits}}")
    page.get_by_role("button", name="Insert into message 1").click()
    assert message.input_value() == "hits: {{state.hits}}"
    page.get_by_text("As JSON (what Save applies)").click()
    sync_api.expect(page.locator("#rule-json")).not_to_be_empty()  # filled on the toggle event
    action = json.loads(page.locator("#rule-json").inner_text())[0]["actions"][0]
    assert action == {"id": "a1", "type": "exec", "triggerId": "no-such-trigger",
                      "message": "hits: {{state.hits}}"}  # fmt: skip


# ---------------------------------------------------------------- Events, Logs, DLQ, Replays
def _local(page: Any, minutes_ago: float) -> str:
    """A datetime-local value in the browser's zone, `minutes_ago` before now."""
    return str(page.evaluate("m => { const d = new Date(Date.now() - m * 60000);"
                             " d.setMinutes(d.getMinutes() - d.getTimezoneOffset());"
                             " return d.toISOString().slice(0, 16); }", minutes_ago))  # fmt: skip


def test_events_are_paged_and_exported_as_the_api_gives_them(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    posted = [post(stack, reading("FRZ-0003", 20 + n, -21.0 - n)) for n in range(3)]
    assert all(p.status_code == 201 for p in posted), [p.text for p in posted]
    trackers = {p.json()["eventTrackerId"] for p in posted}
    freezer = {"assetId": "freezer-03"}
    wait_for(lambda: trackers <= {r["event_tracker_id"] for r in admin.get(
        "/events", params={**freezer, "limit": 10000}).json()["rows"]})  # fmt: skip
    first_four = admin.get("/events", params={**freezer, "limit": 4}).json()["rows"]
    page = console(tokens["admin"])
    page.get_by_role("link", name="Events").click()
    page.get_by_label("Asset", exact=True).fill("freezer-03")
    page.get_by_label("Rows per page").fill("2")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("#event-results tbody tr")
    sync_api.expect(rows).to_have_count(2)
    page.locator("#event-results").get_by_role("button", name="More").click()
    sync_api.expect(rows).to_have_count(len(first_four))
    shown = page.locator("#event-results tbody tr td:nth-child(5)").all_inner_texts()
    assert shown == [r["event_tracker_id"] for r in first_four]
    every = {**freezer, "all": "true"}
    with page.expect_download() as jsonl:
        page.get_by_role("button", name="Export JSONL").click()
    assert jsonl.value.suggested_filename == "events.jsonl"
    expected = admin.get("/events", params={**every, "format": "jsonl"}).text
    assert Path(jsonl.value.path()).read_text() == expected
    with page.expect_download() as csv_file:
        page.get_by_role("button", name="Export CSV").click()
    table = list(csv.DictReader(io.StringIO(Path(csv_file.value.path()).read_text())))
    stored = admin.get("/events", params={**every, "format": "json"}).json()["rows"]
    assert [r["event_tracker_id"] for r in table] == [r["event_tracker_id"] for r in stored]
    assert trackers <= {r["event_tracker_id"] for r in table}


def test_the_logs_show_the_rule_rows_linked_to_the_story(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    answer = post(stack, reading("FRZ-0001", 30, -10.0))  # warm: the high-temp rule matches
    assert answer.status_code == 201, answer.text
    tracker = answer.json()["eventTrackerId"]
    wait_for(lambda: admin.get("/logs/rules", params={"eventTrackerId": tracker}).json()["rows"])
    page = console(tokens["admin"])
    page.get_by_role("link", name="Logs").click()
    page.get_by_label("Log", exact=True).select_option("rules")
    page.get_by_label("Organization", exact=True).fill("factory-alpha")
    page.get_by_label("Rows per page").fill("10")
    page.get_by_role("button", name="Search").click()
    link = page.locator("#log-results").get_by_role("link", name=tracker).first
    link.wait_for()
    expected = admin.get("/logs/rules", params={"orgId": "factory-alpha", "includeChildren": "true",
                                                "newestFirst": "true", "limit": 10}).json()  # fmt: skip
    shown = page.locator("#log-results tbody tr td:last-child").all_inner_texts()
    assert shown == [r["event_tracker_id"] for r in expected["rows"]]
    assert "factory-alpha-high-temp" in page.locator("#log-results").inner_text()
    shot(page, "logs")
    link.click()
    page.locator("#story-tracker").wait_for()
    assert tracker in page.locator("#story-tracker").inner_text()
    # the script runs of an event that failed validation, by its failed stage
    failed = post(stack, reading("FRZ-0001", 31, 99.0)).json()["eventTrackerId"]
    wait_for(lambda: admin.get("/logs/scripts", params={"eventTrackerId": failed}).json()["rows"])
    page.get_by_role("link", name="Logs").click()
    page.get_by_label("Log", exact=True).select_option("scripts")
    assert page.get_by_label("Business rule").is_disabled()
    page.get_by_label("Stage").fill("validate")
    page.get_by_label("Event tracker id").fill(failed)
    page.get_by_role("button", name="Search").click()
    row = page.locator("#log-results tbody tr")
    sync_api.expect(row).to_have_count(1)
    assert "validate" in row.inner_text() and failed in row.inner_text()


def test_dead_letters_are_paged_and_redriven_by_filter_after_a_confirmation(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    failed = [post(stack, reading("FRZ-0003", 40 + n, 99.0)) for n in range(2)]  # over the max
    assert all(p.status_code == 201 for p in failed), [p.text for p in failed]
    dead = {p.json()["eventTrackerId"] for p in failed}
    mine = {"assetId": "freezer-03", "redriven": "no", "source": "dlq"}
    pending = lambda: {e["eventTrackerId"] for e in admin.get("/dlq", params=mine).json()["items"]}  # noqa: E731
    wait_for(lambda: dead <= pending())
    page = console(tokens["admin"])
    page.get_by_role("link", name="DLQ").click()
    page.get_by_label("Asset", exact=True).fill("freezer-03")
    page.get_by_label("Source", exact=True).select_option("dlq")
    page.get_by_label("Entries per page (per source)").fill("1")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("#dlq-results tbody tr")
    sync_api.expect(rows).to_have_count(1)
    page.locator("#dlq-results").get_by_role("button", name="More").click()
    sync_api.expect(rows).to_have_count(2)
    page.get_by_role("button", name="Redrive all matching…").click()
    confirm = page.locator("#redrive-confirm")
    matching = len(pending())
    confirm.get_by_text(f": {matching} would be redriven, 0 skipped").wait_for()
    assert len(pending()) == matching  # nothing is redriven before the confirmation
    confirm.get_by_role("button", name="Confirm redrive").click()
    page.locator("#redrive-result").get_by_text("redriven, ").wait_for()
    shot(page, "dlq-by-filter")
    redriven = admin.get("/dlq", params={**mine, "redriven": "yes"}).json()["items"]
    assert dead <= {e["eventTrackerId"] for e in redriven}
    assert (
        f": {matching} redriven, 0 skipped, 0 failed"
        in page.locator("#redrive-result").inner_text()
    )


def test_a_replay_of_a_few_minutes_is_confirmed_and_reported(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    answer = post(stack, reading("FRZ-0002", 50, -22.0))
    assert answer.status_code == 201, answer.text
    tracker = answer.json()["eventTrackerId"]
    wait_for(lambda: admin.get(f"/events/{tracker}/story").status_code == 200)
    page = console(tokens["admin"])
    page.get_by_role("link", name="Replays").click()
    page.get_by_label("Organization", exact=True).fill("alpha-cold-room-1")
    since = _local(page, 3)
    page.get_by_label("Since").fill(since)
    page.get_by_label("Rule state").select_option("keep")
    page.get_by_role("button", name="Preview replay…").click()
    result = page.locator("#replay-result")
    result.get_by_text("(dry run)").wait_for()
    page.locator("#replay-confirm").get_by_role("button", name="Confirm replay").click()
    summary = result.locator(".summary")
    sync_api.expect(summary).not_to_contain_text("dry run")
    text = summary.inner_text()
    shot(page, "replay")
    assert "of alpha-cold-room-1" in text and "triggers not re-sent" in text, text
    assert text.endswith(", processed"), text  # the lanes processed the copies in time
    events = int(text.split(": ")[1].split(" ")[0])
    plan = admin.post(
        "/replays",
        params={"dryRun": "true"},
        json={
            "orgId": "alpha-cold-room-1",
            "since": page.evaluate("v => new Date(v).toISOString()", since),
        },
    )
    assert plan.status_code == 200, plan.text
    assert events == plan.json()["events"] >= 1, (text, plan.json())  # the copies are not events


def test_a_template_copy_is_highlighted_gains_an_eva_field_and_shows_its_values(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    page = console(tokens["admin"])
    page.get_by_role("link", name="Templates").click()
    page.get_by_role("link", name="Copy freezer-json").click()
    page.get_by_role("heading", name="Copy of template freezer-json").wait_for()
    # Highlighting: spans under the (transparent, still labelled) textarea, at its place.
    decode = page.locator(".code-stack:has(#script-decode) .code-hl")
    assert decode.locator(".tok-comment").first.inner_text().startswith("// Gateways send")
    assert "const" in decode.locator(".tok-keyword").all_inner_texts()
    assert '"number"' in decode.locator(".tok-string").all_inner_texts()
    transform = page.get_by_label("Transform script (scriptConversion)")
    transform.fill("// copied for the battery\n" + transform.input_value())
    layer = page.locator(".code-stack:has(#script-transform) .code-hl")
    assert layer.locator(".tok-comment").first.inner_text() == "// copied for the battery"
    assert layer.inner_text().rstrip() == transform.input_value().rstrip()
    assert transform.evaluate("e => getComputedStyle(e).color") == "rgba(0, 0, 0, 0)"
    box, under = transform.bounding_box(), layer.bounding_box()
    assert (box["x"], box["y"]) == (under["x"], under["y"])
    page.get_by_label("Id", exact=True).fill("ui-freezer-copy")
    page.get_by_label("Name", exact=True).fill("UI freezer copy")
    # A new EVA field, and the value each field would store for a sample.
    page.get_by_role("button", name="Add EVA field").click()
    assert page.get_by_label("EVA field 6 id").input_value() == "6"
    page.get_by_label("EVA field 6 name").fill("Battery")
    page.get_by_label("EVA field 6 value path").fill("data.battery")
    page.get_by_role("button", name="Add EVA field").press("Enter")  # one too many: removed
    sync_api.expect(page.get_by_label("EVA field 7 name")).to_be_focused()
    page.get_by_role("button", name="Remove EVA field 7").press("Enter")
    sync_api.expect(page.get_by_role("button", name="Add EVA field")).to_be_focused()
    assert page.get_by_label("EVA field 7 name").count() == 0
    page.get_by_label("Sample payloads").fill(
        '{"deviceId": "FRZ-0001", "ts": "2026-03-01T08:00:00Z", "readings": {"t": -20}, "door": "closed", "batt": 80}')  # fmt: skip
    page.get_by_role("button", name="Run on samples").click()
    assert "null" not in page.locator("#eva-fields").inner_text()
    samples = page.locator("#eva-fields .eva-sample")
    sync_api.expect(samples.nth(5)).to_have_text("payload 1: 80")
    sync_api.expect(samples.nth(0)).to_have_text("payload 1: -20")
    sync_api.expect(samples.nth(4)).to_have_text("payload 1: 2026-03-01T08:00:00.000Z")
    page.locator("#save-template").click()
    page.locator("#template-save").get_by_text("Created ui-freezer-copy").wait_for()
    shot(page, "template-eva")
    saved = admin.get("/asset-templates/ui-freezer-copy").json()
    assert {
        "fieldId": 6,
        "field": "Battery",
        "value": "data.battery",
        "type": "number",
    }.items() <= (saved["dynamicFields"][5].items())
    assert saved["name"] == "UI freezer copy" and saved["orgId"] == "acme-foods"
    assert saved["scriptConversion"].startswith("// copied for the battery\n")
    # A fieldId used twice: the dry run and the save both name it; nothing is stored.
    page.get_by_label("EVA field 6 id").fill("1")
    page.get_by_role("button", name="Validate").click()
    sync_api.expect(page.locator("#template-save .error")).to_contain_text(
        "fieldId 1 is used twice"
    )
    page.locator("#save-template").click()
    refusal = page.locator("#template-save .error")
    sync_api.expect(refusal).to_contain_text("422: ")
    sync_api.expect(refusal).to_contain_text("fieldId 1 is used twice")
    assert admin.get("/asset-templates/ui-freezer-copy").json()["dynamicFields"][5]["fieldId"] == 6


def test_a_new_template_is_created_run_and_deleted_and_a_used_one_is_not(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    page = console(tokens["admin"])
    page.get_by_role("link", name="Templates").click()
    page.get_by_role("link", name="New template").click()
    page.get_by_role("heading", name="New template").wait_for()
    assert page.get_by_label("Organization", exact=True).input_value() == "acme-foods"
    page.get_by_label("Id", exact=True).fill("ui-blank")
    page.get_by_label("Name", exact=True).fill("UI blank")
    page.get_by_role("button", name="Validate").click()
    page.get_by_text("Valid: saving would be accepted.").wait_for()
    page.get_by_label("Sample payloads").fill('{"id": "d1", "ts": "2026-03-01T08:00:00Z", "t": 4}')
    page.get_by_role("button", name="Run on samples").click()
    page.locator("#template-result").get_by_text("Standard Event").wait_for()
    assert "eventType" in page.locator("#template-result").inner_text()
    page.locator("#save-template").click()
    page.locator("#template-save").get_by_text("Created ui-blank").wait_for()
    shot(page, "template-new")
    created = admin.get("/asset-templates/ui-blank")
    assert created.status_code == 200, created.text
    assert (
        created.json()["name"] == "UI blank" and "eventType" in created.json()["scriptConversion"]
    )
    sync_api.expect(page.locator("#confirm-delete-template")).to_be_hidden()  # asked first
    page.locator("#delete-template").click()
    page.locator("#confirm-delete-template").click()
    page.get_by_role("heading", name="Templates", exact=True).wait_for()
    assert admin.get("/asset-templates/ui-blank").status_code == 404
    # A template the assets use: the 409 names them, and nothing is deleted.
    page.get_by_role("link", name="freezer-json", exact=True).click()
    page.locator("#delete-template").click()
    page.locator("#confirm-delete-template").click()
    sync_api.expect(page.locator("#template-save .error")).to_contain_text("409: ")
    sync_api.expect(page.locator("#template-save .referrers")).to_contain_text("Asset freezer-01")
    assert admin.get("/asset-templates/freezer-json").status_code == 200


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
    assert page.get_by_role("link", name="Tokens").count() == 0  # not offered to a viewer
    page.goto(f"{stack.api_url}/console/#/tokens")  # but typed in: the API decides
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


# ---------------------------------------------------------------- Configuration (config.js)
def _count_is(page: Any, text: str) -> None:
    sync_api.expect(page.locator("#config-count")).to_have_text(text)


def test_config_lists_a_kind_page_by_page_and_creates_an_asset(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    expect = sync_api.expect
    everything = [a["id"] for a in admin.get("/assets", params={"limit": 1000}).json()["items"]]
    assert len(everything) > 4
    page = console(tokens["admin"])
    page.get_by_role("link", name="Configuration").click()
    page.get_by_label("Kind").select_option("route-groups")
    page.wait_for_url("**/#/config/route-groups")
    page.get_by_label("Kind").select_option("assets")
    page.get_by_label("Per page").fill("2")
    page.get_by_role("button", name="Search").click()
    _count_is(page, "2 assets shown; more follow")
    page.get_by_role("button", name="More").click()
    _count_is(page, "4 assets shown; more follow")
    # the first row of the new page has the focus, for keyboard users
    assert page.evaluate("document.activeElement.dataset.id") == everything[2]
    while page.locator("#config-more").count():
        before = page.locator("#config-count").inner_text()
        page.locator("#config-more").click()
        expect(page.locator("#config-count")).not_to_have_text(before)
    ids = page.locator("#config-list tbody a[data-id]").evaluate_all(
        "links => links.map((a) => a.dataset.id)")  # fmt: skip
    assert ids == everything  # every page, in the API's order, none twice
    # the Overview, still loading when the link was clicked, drew nothing under this screen
    assert page.locator("#view section.card").count() == 0
    shot(page, "config")
    page.get_by_label("Name contains").fill("freezer 0")
    page.get_by_label("Organization (and below)").fill("alpha-cold-room-1")
    page.get_by_label("Per page").fill("50")
    page.get_by_role("button", name="Search").click()
    _count_is(page, "2 assets shown")
    # A new asset from the minimal document: Validate names what is missing, then Create.
    page.get_by_role("link", name="New asset").click()
    page.get_by_role("button", name="Validate").click()
    expect(page.locator("#entity-result .error")).to_contain_text("problem(s)")
    expect(page.locator("#entity-result .error")).to_contain_text("routeGroupIds: List should")
    area = page.get_by_label("Asset document (JSON)")
    doc = json.loads(area.input_value())
    assert doc["kind"] == "Asset" and doc["orgId"] == "acme-foods"
    doc.update(id="ui-asset-1", name="UI asset", orgId="factory-alpha", assetUUID="UI-0001",
               templateId="freezer-json", routeGroupIds=["rg-store-only"])  # fmt: skip
    area.fill(json.dumps(doc, indent=2))
    page.get_by_role("button", name="Validate").click()
    expect(page.locator("#entity-result")).to_have_text(
        "Valid: no problems found (nothing was written).")  # fmt: skip
    assert admin.get("/assets/ui-asset-1").status_code == 404
    page.get_by_role("button", name="Create").click()
    page.wait_for_url("**/#/entity/assets/ui-asset-1")
    expect(page.locator("#entity-revision")).to_have_text("Revision 1 loaded.")
    stored = admin.get("/assets/ui-asset-1").json()
    assert (stored["name"], stored["assetUUID"], stored["routeGroupIds"]) == (
        "UI asset", "UI-0001", ["rg-store-only"])  # fmt: skip


def test_config_editor_shows_field_issues_and_refuses_a_stale_save(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    expect = sync_api.expect
    trigger = {"kind": "Trigger", "id": "ui-hook", "orgId": "acme-foods", "name": "UI hook",
               "enabled": True, "triggerType": "http", "config": {"http": {
                   "endpoint": "http://127.0.0.1:8089/hooks/ui", "method": "POST",
                   "timeoutMs": 2000}}}  # fmt: skip
    assert admin.post("/triggers", json=trigger).status_code == 201
    page = console(tokens["admin"])
    page.goto(f"{stack.api_url}/console/#/entity/triggers/ui-hook")
    expect(page.locator("#entity-revision")).to_have_text("Revision 1 loaded.")
    area = page.get_by_label("Trigger document (JSON)")
    doc = json.loads(area.input_value())
    doc["config"]["http"]["method"] = "FETCH"
    area.fill(json.dumps(doc, indent=2))
    page.get_by_role("button", name="Validate").click()
    expect(page.locator("#entity-result .error")).to_contain_text("config.http.method: ")
    page.get_by_role("button", name="Save", exact=True).click()
    refusal = page.locator("#entity-result .error")
    expect(refusal).to_contain_text("422: ")
    expect(refusal).to_contain_text("config.http.method: ")
    assert admin.get("/triggers/ui-hook").json()["config"]["http"]["method"] == "POST"
    # Someone else renames it meanwhile: the page's save names revision 1 and is refused.
    renamed = {**trigger, "name": "Renamed elsewhere"}
    assert admin.put("/triggers/ui-hook", json=renamed, headers={"If-Match": '"1"'}).is_success
    doc["config"]["http"]["method"] = "PUT"
    area.fill(json.dumps(doc, indent=2))
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#entity-result .conflict")).to_contain_text(
        "412: someone else changed this trigger since you loaded revision 1 (it is now at "
        "revision 2). Nothing was saved.")  # fmt: skip
    assert admin.get("/triggers/ui-hook").json()["config"]["http"]["method"] == "POST"
    page.get_by_role("button", name="Reload the stored version").click()
    expect(page.locator("#entity-revision")).to_have_text("Revision 2 loaded.")
    doc = json.loads(area.input_value())
    assert doc["name"] == "Renamed elsewhere"
    doc["config"]["http"]["method"] = "PUT"
    area.fill(json.dumps(doc, indent=2))
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#entity-result")).to_contain_text("Saved: revision 3")
    stored = admin.get("/triggers/ui-hook").json()
    assert (stored["name"], stored["config"]["http"]["method"]) == ("Renamed elsewhere", "PUT")


def test_history_shows_each_change_with_its_diff_and_a_rollback_restores(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    expect = sync_api.expect
    group = {"kind": "RouteGroup", "id": "ui-rg-history", "orgId": "acme-foods", "name": "Before",
             "version": 1, "enabled": True, "routers": [{"kind": "save_event"}]}  # fmt: skip
    assert admin.post("/route-groups", json=group).status_code == 201
    original = admin.get("/route-groups/ui-rg-history").json()
    changed = {**group, "name": "After", "routers": [{"kind": "save_event"}, {"kind": "rules"}]}
    answer = admin.put("/route-groups/ui-rg-history", json=changed, headers={"If-Match": '"1"'})
    assert answer.is_success, answer.text
    page = console(tokens["admin"])
    page.goto(f"{stack.api_url}/console/#/entity/route-groups/ui-rg-history")
    page.locator("#entity-history").click()
    latest = page.locator("section[aria-label='revision 2']")
    expect(latest.get_by_role("heading")).to_have_text("Revision 2 · update (current)")
    rows = latest.locator("tbody tr")
    expect(rows).to_have_count(2)
    assert rows.nth(0).locator("td").all_inner_texts() == ["name", "replace", '"Before"', '"After"']
    assert rows.nth(1).locator("td").first.inner_text() == "routers"
    assert '"rules"' in rows.nth(1).locator("td").nth(3).inner_text()
    expect(latest.get_by_role("button", name="Roll back to revision 2")).to_have_count(0)
    page.get_by_role("button", name="Roll back to revision 1").click()
    expect(page.locator("#history-result")).to_contain_text("Rolled back to revision 1")
    newest = page.locator("section[aria-label='revision 3']")
    expect(newest).to_contain_text("rollback to revision 1")
    assert newest.locator("tbody tr").nth(0).locator("td").all_inner_texts() == [
        "name", "replace", '"After"', '"Before"']  # fmt: skip
    shot(page, "history")
    assert admin.get("/route-groups/ui-rg-history").json() == original
    # The rule and template kinds have their history too, by URL.
    page.goto(f"{stack.api_url}/console/#/history/business-rules/factory-alpha-high-temp")
    expect(page.locator("section[aria-label='revision 1'] h3")).to_contain_text(
        "Revision 1 · create"
    )


def test_a_delete_is_confirmed_in_the_page_and_one_still_used_shows_its_referrers(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    expect = sync_api.expect
    page = console(tokens["admin"])
    page.goto(f"{stack.api_url}/console/#/entity/route-groups/rg-store-only")
    page.get_by_role("button", name="Delete…").click()
    page.get_by_role("button", name="Cancel").click()  # nothing asked, nothing sent
    expect(page.locator("#delete-confirm")).to_be_empty()
    page.get_by_role("button", name="Delete…").click()
    page.get_by_role("button", name="Yes, delete rg-store-only").click()
    refused = page.locator("#delete-refused")
    expect(refused).to_contain_text("409: ")
    expect(refused.get_by_role("link", name="Asset lora-door-01")).to_be_visible()
    expect(refused).to_contain_text("routeGroupIds")
    assert admin.get("/route-groups/rg-store-only").status_code == 200
    unused = {"kind": "RouteGroup", "id": "ui-rg-unused", "orgId": "acme-foods", "name": "Unused",
              "version": 1, "enabled": True, "routers": [{"kind": "save_event"}]}  # fmt: skip
    assert admin.post("/route-groups", json=unused).status_code == 201
    page.goto(f"{stack.api_url}/console/#/entity/route-groups/ui-rg-unused")
    page.get_by_role("button", name="Delete…").click()
    page.get_by_role("button", name="Yes, delete ui-rg-unused").click()
    expect(page.locator("#entity-deleted")).to_contain_text("Deleted route group ui-rg-unused")
    assert admin.get("/route-groups/ui-rg-unused").status_code == 404
    # A viewer sees the editor with its change buttons marked; the API refuses the delete.
    page = console(tokens["viewer"])
    page.goto(f"{stack.api_url}/console/#/entity/data-sources/ds-gateway-http")
    assert page.locator("#entity-save").get_attribute("aria-disabled") == "true"
    assert '"<redacted>"' in page.get_by_label("DataSource document (JSON)").input_value()
    page.get_by_role("button", name="Delete…").press("Enter")  # marked, yet it can be pressed
    confirm = page.get_by_role("button", name="Yes, delete ds-gateway-http")
    assert confirm.get_attribute("aria-disabled") == "true"  # the confirmation's too
    confirm.press("Enter")
    expect(page.locator("#entity-result .error")).to_contain_text("403: ")
    assert admin.get("/data-sources/ds-gateway-http").status_code == 200


def test_a_rule_alone_is_built_saved_without_a_business_rule_and_tested(
    stack: Stack, console: Callable[[str], Any], tokens: dict[str, str], admin: httpx.Client
) -> None:
    page = console(tokens["admin"])
    page.get_by_role("link", name="Rules").click()
    page.get_by_role("link", name="New rule", exact=True).click()
    page.get_by_role("heading", name="New rule").wait_for()
    page.get_by_label("Rule id").fill("ui-alone")
    page.get_by_label("Organization", exact=True).fill("factory-alpha")
    page.get_by_label("Rule name").fill("UI rule alone")
    page.get_by_role("tab", name="Rules").click()
    page.get_by_role("button", name="Add condition to when").click()
    page.get_by_label("when.items[0] field value").fill("data.temperature")
    page.get_by_label("Operator of when.items[0]").select_option("lessThan")
    page.get_by_label("when.items[0] value value").fill("-10")
    page.locator("#save-rule").click()
    page.wait_for_url("**/#/rule-only/ui-alone")
    stored = admin.get("/rules/ui-alone").json()
    assert stored["orgId"] == "factory-alpha" and stored["when"]["items"][0]["data"][
        "operator"
    ] == ("lessThan")
    assert admin.get("/business-rules/test-mode").status_code == 404  # the stand-in is not saved
    page.get_by_role("tab", name="Debug").click()
    page.get_by_label("Test events").fill(
        '{"event": {"eventType": "reading", "data": {"temperature": -12}}}\n'
        '{"event": {"eventType": "reading", "data": {"temperature": 3}}}'
    )
    page.get_by_role("button", name="Run test mode").click()
    result = page.locator("#debug-result")
    result.get_by_text("test-1: matched").wait_for()
    result.get_by_text("test-2: not matched").wait_for()
    page.get_by_role("link", name="← Rules").click()
    page.locator("#rule-lists").get_by_role("link", name="ui-alone").click()
    page.get_by_role("heading", name="Rule ui-alone").wait_for()
