"""Per-organization secrets (pipeline/secrets.py) and their owner-only file
(pipeline/adapters/secrets_file.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eventray.config.settings import load_settings
from eventray.pipeline.adapters.secrets_file import FileSecrets, write_secrets_file
from eventray.pipeline.errors import ConfigError
from eventray.pipeline.secrets import DictSecrets, parse_secrets, redact

LINEAGE = ("site", "customer", "vendor")


def test_own_secret_first_then_the_nearest_shared_ancestor() -> None:
    source = DictSecrets({
        "vendor": {"A": {"value": "vendor-a", "shared": True}, "B": "vendor-b-private"},
        "customer": {"A": {"value": "customer-a", "shared": True}},
        "site": {"C": "site-c"},
        "other": {"C": "other-c", "D": {"value": "other-d", "shared": True}},
    })  # fmt: skip
    site = source.for_org(LINEAGE)
    assert site.secret("C") == "site-c"
    assert site.secret("A") == "customer-a"  # the nearest shared one
    assert site.secret("B") is None  # an ancestor's private secret
    assert site.secret("D") is None  # another branch's, shared or not
    assert site.used == {"site-c", "customer-a"}
    assert source.for_org(("vendor",)).secret("B") == "vendor-b-private"


def test_redaction_covers_percent_encoded_values_and_the_longest_first() -> None:
    assert redact("GET /a%2Fb?k=a/b x", ["a/b"]) == "GET /***?k=*** x"
    assert redact("tok tokens", ["tok", "tokens"]) == "*** ***"
    assert redact("", ["x"]) == ""


@pytest.mark.parametrize(
    ("table", "path", "reason"),
    [
        ({"o": {"1BAD": "v"}}, "o.1BAD", "a secret's name is letters"),
        ({"o": {"X": ""}}, "o.X", "the value must be a non-empty string"),
        ({"o": {"X": 42}}, "o.X", "the value must be a non-empty string"),
        ({"o": {"X": {"value": "v", "shared": "yes"}}}, "o.X", "shared must be true or false"),
        ({"o": {"X": {"value": "v", "share": True}}}, "o.X", "unknown field(s) ['share']"),
        ({"o": ["X"]}, "o", "must be an organization id"),
    ],
)
def test_a_bad_table_is_refused_naming_the_entry_never_the_value(
    table: dict[str, object], path: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_secrets(table, "secrets.yaml")
    [issue] = info.value.issues
    assert issue.path == path and issue.reason.startswith(reason)


def test_the_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    write_secrets_file(path, {"o": {"TOKEN": "first"}})
    assert os.stat(path).st_mode & 0o777 == 0o600
    source = FileSecrets(path, check_every_s=0)
    assert source.for_org(("o",)).secret("TOKEN") == "first"
    write_secrets_file(path, {"o": {"TOKEN": "rotated-value"}})
    assert source.for_org(("o",)).secret("TOKEN") == "rotated-value"


def test_a_broken_edit_keeps_the_last_good_table(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "secrets.yaml"
    write_secrets_file(path, {"o": {"TOKEN": "good"}})
    source = FileSecrets(path, check_every_s=0)
    path.write_text("o: {TOKEN: [unclosed-value-s3cr3t\n")
    assert source.for_org(("o",)).secret("TOKEN") == "good"
    assert "secrets file not reloaded" in caplog.text and "s3cr3t" not in caplog.text
    with pytest.raises(ConfigError, match=r"cannot be read at line \d+: \w+Error$"):
        FileSecrets(path)  # at start, a broken file is refused


def test_a_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    write_secrets_file(path, {"o": {"TOKEN": "v"}})
    path.chmod(0o644)
    with pytest.raises(
        ConfigError, match=r"other users may access it \(mode 0644\); run: chmod 600"
    ):
        FileSecrets(path)


def test_no_file_means_no_secrets_and_the_default_path(tmp_path: Path) -> None:
    assert FileSecrets(tmp_path / "absent.yaml").for_org(("o",)).secret("X") is None
    settings = load_settings(data_dir=tmp_path)
    assert settings.secrets_path == tmp_path / "secrets.yaml"


def test_the_file_is_looked_at_once_a_second_at_most(tmp_path: Path) -> None:
    path = tmp_path / "secrets.yaml"
    write_secrets_file(path, {"o": {"TOKEN": "first"}})
    source = FileSecrets(path, check_every_s=3600)
    write_secrets_file(path, {"o": {"TOKEN": "rotated-value"}})
    assert source.for_org(("o",)).secret("TOKEN") == "first"  # not stat'ed per delivery
