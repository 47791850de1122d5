"""The encrypted secret store: sealing (pipeline/secret_crypto.py), the store port and its
adapters (memory, ``secrets.enc``, MongoDB through mongomock), what the lanes render
(StoredSecrets, then the file, then the environment), the management service's rules and
``eventray secrets`` on the data directory."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mongomock
import pytest

from eventray.cluster.admin_token import TOKEN_VARIABLE
from eventray.cluster.cli import main
from eventray.cluster.secrets_wiring import check_secrets, layered_secrets, load_cipher
from eventray.config.settings import SecretsSettings, load_settings
from eventray.pipeline.adapters.mongo_secrets import MongoSecretStore
from eventray.pipeline.adapters.secrets_enc import FileSecretStore
from eventray.pipeline.adapters.secrets_file import FileSecrets, write_secrets_file
from eventray.pipeline.errors import PermanentError, SettingsError
from eventray.pipeline.management import LOCAL, Forbidden, Invalid, NotFound, Principal, Scope
from eventray.pipeline.management.secrets import SecretService, SecretsNotConfigured
from eventray.pipeline.ports import Author
from eventray.pipeline.secret_crypto import (
    SecretCipher,
    SecretKeyMismatch,
    SecretTampered,
    generate_key,
    parse_key,
)
from eventray.pipeline.secret_store import (
    MemorySecretStore,
    SealedSecret,
    SecretStore,
    StoredSecrets,
)
from eventray.pipeline.secrets import DictSecrets, EnvSecrets, LayeredSecrets, env_variable

KEY = os.urandom(32)
OTHER_KEY = os.urandom(32)
NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
ALICE = Author("alice", "t-alice")
LINEAGE = ("site", "customer", "vendor")
ORGS = {"vendor": "1", "customer": "1/1", "site": "1/1/1", "other": "1/2"}


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def sealed(
    cipher: SecretCipher, org: str, name: str, value: str, shared: bool = False
) -> SealedSecret:
    return SealedSecret(org, name, shared, cipher.seal(org, name, shared, value), NOW, ALICE)


# --- sealing --------------------------------------------------------------------------------


def test_a_sealed_value_opens_for_its_organization_and_name_only() -> None:
    cipher = SecretCipher(KEY)
    box = cipher.seal("acme", "OPS_TOKEN", False, "s3cr3t-ü")
    assert "s3cr3t" not in box and box.startswith(f"v1:{cipher.key_id}:")
    assert cipher.open("acme", "OPS_TOKEN", False, box) == "s3cr3t-ü"
    assert cipher.seal("acme", "OPS_TOKEN", False, "s3cr3t-ü") != box  # a fresh nonce each time
    for org, name, shared in (("other", "OPS_TOKEN", False), ("acme", "OTHER", False),
                              ("acme", "OPS_TOKEN", True)):  # fmt: skip
        with pytest.raises(SecretTampered, match="copied from another organization"):
            cipher.open(org, name, shared, box)


def test_a_tampered_sealed_value_is_refused() -> None:
    cipher = SecretCipher(KEY)
    box = cipher.seal("acme", "X", False, "value")
    head, body = box.rsplit(":", 1)
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[-1] ^= 1
    flipped = f"{head}:{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"
    for bad in (flipped, box[:-6], f"{head}:", "plain text", box.replace("v1:", "v2:")):
        with pytest.raises(SecretTampered):
            cipher.open("acme", "X", False, bad)


def test_a_wrong_key_is_refused_with_a_clear_error_and_a_previous_key_still_opens() -> None:
    box = SecretCipher(KEY).seal("acme", "X", False, "value")
    wrong = SecretCipher(OTHER_KEY)
    with pytest.raises(SecretKeyMismatch) as info:
        wrong.open("acme", "X", False, box)
    message = str(info.value)
    assert SecretCipher(KEY).key_id in message and wrong.key_id in message
    assert "key is wrong" in message and "PREVIOUS_KEY" in message and "value" not in message
    rotating = SecretCipher(OTHER_KEY, [KEY])
    assert rotating.open("acme", "X", False, box) == "value"
    assert SecretCipher.sealed_key_id(rotating.seal("acme", "X", False, "v")) == wrong.key_id
    assert b64(KEY) not in repr(rotating) and KEY.hex() not in repr(rotating)


def test_a_key_that_is_not_32_bytes_is_refused_at_load_without_being_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert parse_key(b64(KEY)) == KEY
    assert parse_key(base64.urlsafe_b64encode(KEY).decode().rstrip("=")) == KEY
    assert len(parse_key(generate_key())) == 32
    short = b64(os.urandom(16))
    monkeypatch.setenv("EVENTRAY_SECRETS__KEY", short)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "EVENTRAY_SECRETS__KEY: the key must be 32 bytes (AES-256), not 16" in str(info.value)
    assert short not in str(info.value)
    monkeypatch.setenv("EVENTRAY_SECRETS__KEY", "not base64 at all!")
    with pytest.raises(SettingsError, match="is not base64"):
        load_settings()
    monkeypatch.setenv("EVENTRAY_SECRETS__KEY", b64(KEY))
    settings = load_settings()
    assert b64(KEY) not in repr(settings) and b64(KEY) not in str(settings.model_dump())
    monkeypatch.delenv("EVENTRAY_SECRETS__KEY")
    monkeypatch.setenv("EVENTRAY_SECRETS__PREVIOUS_KEY", b64(KEY))
    with pytest.raises(SettingsError, match="a previous key needs the current one"):
        load_settings()


def test_a_key_file_must_be_owner_only_and_hold_a_key(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(b64(KEY) + "\n")
    path.chmod(0o644)
    with pytest.raises(SettingsError, match="other users may access it"):
        load_cipher(SecretsSettings(key_file=path))
    path.chmod(0o600)
    cipher = load_cipher(SecretsSettings(key_file=path, previous_key=b64(OTHER_KEY)))  # type: ignore[arg-type]
    assert cipher is not None and cipher.key_ids == [SecretCipher(KEY).key_id,
                                                     SecretCipher(OTHER_KEY).key_id]  # fmt: skip
    path.write_text("c2hvcnQ=")
    with pytest.raises(SettingsError, match="must be 32 bytes"):
        load_cipher(SecretsSettings(key_file=path))
    assert load_cipher(SecretsSettings()) is None


# --- the store port and its adapters ---------------------------------------------------------


@pytest.fixture(params=["memory", "file", "mongomock"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SecretStore]:
    made: SecretStore
    if request.param == "memory":
        made = MemorySecretStore()
    elif request.param == "file":
        made = FileSecretStore(path=tmp_path / "secrets.enc")
    else:
        made = MongoSecretStore(client=mongomock.MongoClient())
    yield made
    made.close()


def test_store_contract(store: SecretStore) -> None:
    cipher = SecretCipher(KEY)
    assert store.revision() == 0 and store.all() == [] and store.changes() == []
    assert store.put(sealed(cipher, "b", "X", "one")) is True
    assert store.put(sealed(cipher, "a", "Y", "two", shared=True)) is True
    first = store.revision()
    assert first > 0
    assert store.put(sealed(cipher, "b", "X", "three")) is False
    assert store.revision() > first
    assert [(r.org_id, r.name, r.shared) for r in store.all()] == [("a", "Y", True),
                                                                   ("b", "X", False)]  # fmt: skip
    got = store.get("b", "X")
    assert got is not None and cipher.open("b", "X", False, got.sealed) == "three"
    assert got.updated == NOW and got.updated_by == ALICE
    assert store.get("b", "Y") is None
    gone = store.delete("b", "X", at=NOW, author=ALICE)
    assert gone is not None and gone.name == "X"
    before = store.revision()
    assert store.delete("b", "X", at=NOW, author=ALICE) is None
    assert store.revision() == before  # nothing deleted, nothing recorded
    rekeyed = replace(sealed(SecretCipher(OTHER_KEY), "a", "Y", "two", True))
    assert store.reseal([rekeyed, sealed(cipher, "gone", "Z", "z")]) == 1
    assert store.get("a", "Y") == rekeyed and store.get("gone", "Z") is None
    changes = [(c.org_id, c.name, c.op, c.created, c.author) for c in store.changes()]
    assert changes == [("b", "X", "set", True, ALICE), ("a", "Y", "set", True, ALICE),
                       ("b", "X", "set", False, ALICE), ("b", "X", "delete", False, ALICE),
                       ("a", "Y", "rekey", False, ALICE)]  # fmt: skip


def test_the_file_store_is_owner_only_and_holds_no_value(tmp_path: Path) -> None:
    path = tmp_path / "d" / "secrets.enc"
    store = FileSecretStore(path=path)
    store.put(sealed(SecretCipher(KEY), "acme", "OPS_TOKEN", "plain-value-123"))
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert "plain-value-123" not in text and "OPS_TOKEN" in text
    assert b64(KEY) not in text
    assert FileSecretStore(path=path).get("acme", "OPS_TOKEN") is not None  # another reader
    path.chmod(0o640)
    with pytest.raises(PermanentError, match="chmod 600"):
        FileSecretStore(path=path).all()
    path.chmod(0o600)
    path.write_text("{not json")
    path.chmod(0o600)
    with pytest.raises(PermanentError, match="is unreadable: JSONDecodeError"):
        FileSecretStore(path=path).all()


# --- what the lanes render --------------------------------------------------------------------


def test_a_changed_secret_applies_at_the_next_check_without_a_restart() -> None:
    cipher, store = SecretCipher(KEY), MemorySecretStore()
    store.put(sealed(cipher, "site", "TOKEN", "v1"))
    source = LayeredSecrets([StoredSecrets(store, cipher, check_every_s=0, background=False)],
                            check_every_s=0)  # fmt: skip
    assert source.for_org(LINEAGE).secret("TOKEN") == "v1"
    store.put(sealed(cipher, "site", "TOKEN", "v2"))
    provider = source.for_org(LINEAGE)
    assert provider.secret("TOKEN") == "v2" and provider.redact("Bearer v2") == "Bearer ***"
    store.delete("site", "TOKEN", at=NOW, author=ALICE)
    assert source.for_org(LINEAGE).secret("TOKEN") is None


def test_the_background_refresh_picks_a_change_up_too() -> None:
    cipher, store = SecretCipher(KEY), MemorySecretStore()
    stored = StoredSecrets(store, cipher, check_every_s=0)
    store.put(sealed(cipher, "site", "TOKEN", "v1"))
    deadline = time.monotonic() + 5
    while stored.table().get("site", {}).get("TOKEN") is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert stored.table()["site"]["TOKEN"].value == "v1"


def test_an_entry_that_does_not_open_keeps_its_last_value_and_is_logged_without_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cipher, store = SecretCipher(KEY), MemorySecretStore()
    store.put(sealed(cipher, "site", "A", "good-a"))
    store.put(sealed(cipher, "site", "B", "good-b"))
    stored = StoredSecrets(store, cipher, check_every_s=0, background=False)
    good = store.get("site", "A")
    assert good is not None
    store.put(replace(good, sealed=sealed(SecretCipher(OTHER_KEY), "site", "A", "evil").sealed))
    store.put(replace(good, org_id="site", name="C"))  # A's sealed value moved to C
    with caplog.at_level(logging.ERROR):
        table = stored.table()
    assert table["site"]["A"].value == "good-a"  # sealed under an unknown key: the last value
    assert "C" not in table["site"]  # never opened: nothing to keep
    assert table["site"]["B"].value == "good-b"
    assert "secret 'A' of organization 'site' was sealed with key" in caplog.text
    assert "secret 'C' of organization 'site' does not authenticate" in caplog.text
    assert "good-a" not in caplog.text and "evil" not in caplog.text
    with pytest.raises(SecretKeyMismatch):
        StoredSecrets(store, cipher, background=False, strict=True)


def test_the_store_then_the_file_then_the_environment_with_sharing_down_the_tree(
    tmp_path: Path,
) -> None:
    cipher, store = SecretCipher(KEY), MemorySecretStore()
    store.put(sealed(cipher, "site", "A", "store-site-a"))
    store.put(sealed(cipher, "customer", "S", "store-customer-s", shared=True))
    path = tmp_path / "secrets.yaml"
    write_secrets_file(path, {
        "site": {"A": "file-site-a", "B": "file-site-b"},
        "customer": {"S": "file-customer-s", "P": {"value": "file-customer-p", "shared": True}},
    })  # fmt: skip
    env = EnvSecrets({
        "EVENTRAY_SECRET__site__A": "env-site-a", "EVENTRAY_SECRET__site__B": "env-site-b",
        "EVENTRAY_SECRET__site__C": "env-site-c", "EVENTRAY_SECRET__customer__P": "env-cust-p",
        "EVENTRAY_SECRET__vendor__V": "env-vendor-v", "EVENTRAY_SECRET__other__O": "env-other-o",
    })  # fmt: skip
    source = LayeredSecrets(
        [StoredSecrets(store, cipher, background=False), FileSecrets(path), env]
    )
    site = source.for_org(LINEAGE)
    assert site.secret("A") == "store-site-a"  # the store first
    assert site.secret("B") == "file-site-b"  # then the file
    assert site.secret("C") == "env-site-c"  # then the environment
    assert site.secret("S") == "store-customer-s"  # an ancestor's shared one, from the store
    assert site.secret("P") == "file-customer-p"  # shared in the file, private in the env
    assert site.secret("V") is None  # the environment's are private to their organization
    assert site.secret("O") is None  # another branch's
    assert source.for_org(("vendor",)).secret("V") == "env-vendor-v"
    # an organization's own secret from any layer wins over an ancestor's shared one
    env_own = LayeredSecrets([StoredSecrets(store, cipher, background=False),
                              EnvSecrets({"EVENTRAY_SECRET__site__S": "env-site-s"})])  # fmt: skip
    assert env_own.for_org(LINEAGE).secret("S") == "env-site-s"


def test_environment_variable_names(caplog: pytest.LogCaptureFixture) -> None:
    assert env_variable("acme-foods", "OPS_TOKEN") == "EVENTRAY_SECRET__acme-foods__OPS_TOKEN"
    # names a variable cannot carry unambiguously are left to the store and the file
    assert env_variable("a", "b__C") is None and env_variable("a", "_X") is None
    with caplog.at_level(logging.WARNING):
        env = EnvSecrets({
            "EVENTRAY_SECRET__a__b__C": "for a__b", "EVENTRAY_SECRET__KEY": "typo",
            "EVENTRAY_SECRET__x__9Y": "bad name", "EVENTRAY_SECRET__y__Z": "",
            "EVENTRAY_SECRETS__KEY": "a setting, not a secret", "OTHER": "x",
        })  # fmt: skip
    assert list(env.table()) == ["a__b"] and list(env.table()["a__b"]) == ["C"]
    assert env.table()["a__b"]["C"].value == "for a__b"  # the last "__" ends the org id
    assert EnvSecrets({"EVENTRAY_SECRET__x___Y": "v"}).table()["x_"]["Y"].value == "v"
    assert DictSecrets().for_org(("a",)).secret("b__C") is None
    assert "EVENTRAY_SECRET__KEY is not" in caplog.text and "typo" not in caplog.text


def test_up_refuses_a_store_it_cannot_open(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = load_settings(data_dir=data, secrets={"key": b64(KEY)})
    check_secrets(settings)  # nothing stored yet
    FileSecretStore(path=settings.secret_store_path).put(sealed(SecretCipher(KEY), "a", "X", "v"))
    check_secrets(settings)
    assert layered_secrets(settings, None).for_org(("a",)).secret("X") == "v"
    with pytest.raises(SecretKeyMismatch, match="is not configured"):
        check_secrets(load_settings(data_dir=data, secrets={"key": b64(OTHER_KEY)}))
    with pytest.raises(PermanentError, match=r"holds 1 secret\(s\) but no key is given"):
        check_secrets(load_settings(data_dir=data))
    rotating = load_settings(data_dir=data, secrets={"key": b64(OTHER_KEY),
                                                     "previous_key": b64(KEY)})  # fmt: skip
    check_secrets(rotating)


# --- the management service -------------------------------------------------------------------


def scope_of(org: str | None, role: str = "editor") -> Scope:
    if org is None:
        return Scope(LOCAL, None, True, ORGS)
    principal = Principal(f"t-{org}-{role}", f"{role}@{org}", org, role)  # type: ignore[arg-type]
    return Scope(principal, ORGS[org], org == "vendor", ORGS)


def test_the_service_seals_writes_lists_never_a_value_and_keeps_to_the_scope(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, cipher = MemorySecretStore(), SecretCipher(KEY)
    service = SecretService(store, cipher)
    customer = scope_of("customer")
    with caplog.at_level(logging.INFO):
        written = service.put(customer, "site", "TOKEN", "value-one", shared=False)
        assert written.created and not service.put(customer, "site", "TOKEN", "value-two").created
        service.put(scope_of("other"), "other", "TOKEN", "value-other")
    listed = service.list_secrets(customer)
    assert listed == [{"orgId": "site", "name": "TOKEN", "shared": False,
                       "updated": listed[0]["updated"],
                       "updatedBy": {"name": "editor@customer", "id": "t-customer-editor"}}]  # fmt: skip
    assert service.list_secrets(customer, org_id="customer") == []
    assert len(service.list_secrets(customer, org_id="customer", include_children=True)) == 1
    assert len(service.list_secrets(scope_of(None))) == 2
    assert service.list_secrets(scope_of("site", "viewer"))[0]["name"] == "TOKEN"
    record = store.get("site", "TOKEN")
    assert record is not None and cipher.open("site", "TOKEN", False, record.sealed) == "value-two"
    everything = json.dumps([listed, service.changes(customer), service.get(customer, "site",
                                                                             "TOKEN")])  # fmt: skip
    assert "value-" not in everything and "v1:" not in everything
    assert "value-" not in caplog.text and "'TOKEN' of organization 'site' created" in caplog.text
    for outside in (lambda: service.put(customer, "other", "TOKEN", "x"),
                    lambda: service.put(customer, "vendor", "TOKEN", "x"),  # an ancestor
                    lambda: service.put(customer, "nowhere", "TOKEN", "x"),
                    lambda: service.delete(customer, "other", "TOKEN"),
                    lambda: service.get(customer, "other", "TOKEN"),
                    lambda: service.delete(customer, "site", "NONE")):  # fmt: skip
        with pytest.raises(NotFound):
            outside()
    assert [c["orgId"] for c in service.changes(customer)] == ["site", "site"]
    with pytest.raises(Forbidden):
        service.put(scope_of("site", "viewer"), "site", "TOKEN", "x")
    with pytest.raises(Forbidden):
        service.delete(scope_of("site", "viewer"), "site", "TOKEN")
    with pytest.raises(Forbidden):
        service.list_secrets(scope_of("site", "ingest"))
    for name, value, path in (("1BAD", "x", "name"), ("a-b", "x", "name"), ("OK", "", "value"),
                              ("OK", "x" * 70_000, "value")):  # fmt: skip
        with pytest.raises(Invalid) as info:
            service.put(customer, "site", name, value)
        assert info.value.path == path
    assert service.delete(customer, "site", "TOKEN")["name"] == "TOKEN"
    assert [c["op"] for c in service.changes(customer)] == ["set", "set", "delete"]
    with pytest.raises(SecretsNotConfigured, match="EVENTRAY_SECRETS__KEY"):
        SecretService(store, None).put(customer, "site", "TOKEN", "x")
    # a deleted organization's secrets: the local admin sees them, marked
    orphan = SecretService(store, cipher).list_secrets(Scope(LOCAL, None, True, {}))
    assert orphan and all(item["orphaned"] for item in orphan)


def test_rotate_key_reseals_with_the_current_key_or_writes_nothing() -> None:
    store = MemorySecretStore()
    SecretService(store, SecretCipher(KEY)).put(scope_of(None), "site", "A", "value-a")
    SecretService(store, SecretCipher(KEY)).put(scope_of(None), "site", "B", "value-b")
    with pytest.raises(SecretKeyMismatch):  # the previous key is not given: nothing written
        SecretService(store, SecretCipher(OTHER_KEY)).rotate_key(scope_of(None))
    assert {SecretCipher.sealed_key_id(r.sealed) for r in store.all()} == {SecretCipher(KEY).key_id}
    rotating = SecretService(store, SecretCipher(OTHER_KEY, [KEY]))
    with pytest.raises(Forbidden):
        rotating.rotate_key(scope_of("vendor", "admin"))
    assert rotating.rotate_key(scope_of(None))["resealed"] == 2
    after = SecretCipher(OTHER_KEY)
    assert [after.open(r.org_id, r.name, r.shared, r.sealed) for r in store.all()] == [
        "value-a", "value-b"]  # fmt: skip
    assert rotating.rotate_key(scope_of(None))["resealed"] == 0
    assert [c.op for c in store.changes()][-2:] == ["rekey", "rekey"]


# --- eventray secrets on the data directory ---------------------------------------------------


TENANT = Path(__file__).resolve().parents[2] / "config" / "samples" / "tenant"


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for variable in (TOKEN_VARIABLE, "EVENTRAY_API_TOKEN", "EVENTRAY_SECRETS__PREVIOUS_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("EVENTRAY_SECRETS__KEY", b64(KEY))
    (tmp_path / "data").mkdir(mode=0o700)
    return tmp_path / "data"


def run(
    *argv: str, stdin: str | None = None, monkeypatch: pytest.MonkeyPatch | None = None
) -> tuple[int, Any]:
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    out = io.StringIO()
    code = main(list(argv), out=out)
    text = out.getvalue()
    return code, json.loads(text) if text.startswith(("{", "[")) else text


def test_cli_sets_lists_deletes_and_rotates_on_the_data_directory(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ("--data-dir", str(data))
    assert run("apply", "-f", str(TENANT), *d)[0] == 0
    code, made = run("secrets", "set", "acme-foods", "OPS_TOKEN", *d, stdin="cli-value-1\n",
                     monkeypatch=monkeypatch)  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert made["created"] and made["orgId"] == "acme-foods" and "value" not in made
    value_file = data.parent / "value"
    value_file.write_text("cli-value-2")
    assert run("secrets", "set", "acme-foods", "OPS_TOKEN", "--shared", "--value-file",
               str(value_file), *d)[1]["created"] is False  # fmt: skip
    monkeypatch.setenv("MY_VALUE", "cli-value-3")
    assert run("secrets", "set", "factory-alpha", "X", "--from-env", "MY_VALUE", *d)[0] == 0
    listed = run("secrets", "list", *d)[1]["items"]
    assert [(i["orgId"], i["name"], i["shared"]) for i in listed] == [
        ("acme-foods", "OPS_TOKEN", True), ("factory-alpha", "X", False)]  # fmt: skip
    assert [c["op"] for c in run("secrets", "changes", "--org", "acme-foods", *d)[1]["items"]] \
        == ["set", "set"]  # fmt: skip
    stored = (data / "secrets.enc").read_text()
    assert "cli-value" not in stored
    settings = load_settings(data_dir=data)
    lineage = ("alpha-cold-room-2", "alpha-a-floor-1", "factory-alpha", "acme-foods")
    assert layered_secrets(settings, None).for_org(lineage).secret("OPS_TOKEN") == "cli-value-2"
    # a wrong admin token, an unknown organization: refused, nothing written
    assert run("secrets", "delete", "acme-foods", "OPS_TOKEN", "--token", "guessed", *d)[0] == 1
    assert "wrong admin token" in capsys.readouterr().err
    assert run("secrets", "set", "nowhere", "X", *d, stdin="v", monkeypatch=monkeypatch)[0] == 1
    assert "unknown organization 'nowhere'" in capsys.readouterr().err
    assert run("secrets", "set", "acme-foods", "Y", *d, stdin="\n", monkeypatch=monkeypatch)[0] == 1
    # a key rotation: the new key current, the old one previous, then rotate-key
    new = generate_key()
    monkeypatch.setenv("EVENTRAY_SECRETS__KEY", new)
    # sealing a new value needs only the new key; opening the older ones needs the previous
    assert run("secrets", "set", "acme-foods", "Z", *d, stdin="z", monkeypatch=monkeypatch)[0] == 0
    with pytest.raises(SecretKeyMismatch):
        check_secrets(load_settings(data_dir=data))
    monkeypatch.setenv("EVENTRAY_SECRETS__PREVIOUS_KEY", b64(KEY))
    code, report = run("secrets", "rotate-key", *d)
    assert code == 0 and report["resealed"] == 2 and report["keyId"] == SecretCipher(
        parse_key(new)).key_id  # fmt: skip
    monkeypatch.delenv("EVENTRAY_SECRETS__PREVIOUS_KEY")
    settings = load_settings(data_dir=data)
    check_secrets(settings)  # everything opens with the new key alone
    assert layered_secrets(settings, None).for_org(lineage).secret("OPS_TOKEN") == "cli-value-2"
    assert run("secrets", "delete", "acme-foods", "OPS_TOKEN", *d)[1]["name"] == "OPS_TOKEN"
    assert run("secrets", "delete", "acme-foods", "OPS_TOKEN", *d)[0] == 1
    key = run("secrets", "generate-key")[1].strip()
    assert len(parse_key(key)) == 32


def test_cli_without_a_key_says_how_to_give_one(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("EVENTRAY_SECRETS__KEY")
    d = ("--data-dir", str(data))
    assert run("apply", "-f", str(TENANT), *d)[0] == 0
    code, _ = run("secrets", "set", "acme-foods", "X", *d, stdin="v", monkeypatch=monkeypatch)
    assert code == 1 and "EVENTRAY_SECRETS__KEY" in capsys.readouterr().err
    assert run("secrets", "list", *d)[1] == {"items": []}


def test_an_api_token_without_a_running_stack_is_refused(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run("secrets", "list", "--token", "ert_x", "--data-dir", str(data))
    assert code == 3 and "no stack with a management API runs" in capsys.readouterr().err


class _Down(MemorySecretStore):
    """A store whose server is unreachable until told otherwise."""

    down = True

    def revision(self) -> int:
        if self.down:
            from eventray.pipeline.errors import RetryableError

            raise RetryableError("the secret store is unreachable")
        return super().revision()


def test_a_store_that_is_down_when_a_lane_starts_is_read_once_it_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cipher, store = SecretCipher(KEY), _Down()
    store.put(sealed(cipher, "site", "TOKEN", "v1"))
    with caplog.at_level(logging.ERROR):
        stored = StoredSecrets(store, cipher, check_every_s=0, background=False)
    assert stored.table() == {} and "unreachable" in caplog.text
    store.down = False
    assert stored.table()["site"]["TOKEN"].value == "v1"


def test_up_stops_before_starting_anything_when_the_key_does_not_open_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    FileSecretStore(path=data / "secrets.enc").put(sealed(SecretCipher(KEY), "acme", "X", "v"))
    for variable in ("INGRESS", "API", "METRICS", "MQTT"):
        monkeypatch.setenv(f"EVENTRAY_{variable}__PORT", "0")
    monkeypatch.setenv("EVENTRAY_SECRETS__KEY", b64(OTHER_KEY))
    assert main(["up", "--data-dir", str(data)]) == 1
    err = capsys.readouterr().err
    assert "secret 'X' of organization 'acme' was sealed with key" in err
    assert b64(OTHER_KEY) not in err
    assert sorted(p.name for p in data.iterdir()) == [".secrets.enc.lock", "secrets.enc"]
