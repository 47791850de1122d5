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
    page.get_by_role("button", name="Yes, delete ds-gateway-http").click()
    expect(page.locator("#entity-result .error")).to_contain_text("403: ")
    assert admin.get("/data-sources/ds-gateway-http").status_code == 200
