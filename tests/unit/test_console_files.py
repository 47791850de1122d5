"""The console ships as package data, build-free: the files the pages load are there, and the
HTML holds no inline script and names no other origin (the CSP forbids both; no CDN)."""

from __future__ import annotations

import re

from eventray.actors.api_console import CSP, console_dir


def test_the_console_files_ship_in_the_package() -> None:
    names = {p.name for p in console_dir().iterdir()}
    assert {"index.html", "app.js", "api.js", "dom.js", "rules.js", "builder.js",
            "templates.js", "style.css"} <= names  # fmt: skip
    html = (console_dir() / "index.html").read_text()
    assert re.findall(r"<script[^>]*>", html) == ['<script type="module" src="app.js">']
    assert "//" not in html  # no other origin
    assert re.search(r"\son\w+=", html) is None  # no inline handler


def test_every_module_the_pages_import_is_shipped() -> None:
    for path in console_dir().glob("*.js"):
        for name in re.findall(r'from "\./([\w.]+)"', path.read_text()):
            assert (console_dir() / name).is_file(), (path.name, name)
        assert ".innerHTML" not in path.read_text(), path.name  # text nodes only


def test_the_policy_allows_nothing_but_this_origin() -> None:
    assert "default-src 'self'" in CSP and "script-src 'self';" in CSP
    assert "unsafe" not in CSP and "http" not in CSP
