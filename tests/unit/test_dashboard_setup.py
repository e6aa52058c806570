"""The dashboard's settings and templates, without a database: bad settings
are refused when the app is set up, and no template marks data safe."""

from __future__ import annotations

import re
import typing as t
from pathlib import Path

import pytest
from conftest import create_test_app

from flask_plainqueue import ConfigurationError
from flask_plainqueue import dashboard
from flask_plainqueue import PlainQueue

TEMPLATES = Path(dashboard.__file__).parent / "templates" / "plainqueue"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("PLAINQUEUE_DASHBOARD_URL", "queue", "starting with '/'"),
        ("PLAINQUEUE_DASHBOARD_URL", "/", "not the site root"),
        ("PLAINQUEUE_DASHBOARD_AUTH", "admin", "must be a function"),
        ("PLAINQUEUE_DASHBOARD", "yes", "True or False"),
        ("PLAINQUEUE_DASHBOARD_BACK_URL", "javascript:alert(1)", "http"),
        ("PLAINQUEUE_DASHBOARD_BACK_URL", "//evil.example", "a path such as '/'"),
        ("PLAINQUEUE_DASHBOARD_BACK_URL", 3, "or None for no link"),
    ],
)
def test_bad_config_is_refused(
    unopened_uri: str, tmp_path: Path, key: str, value: t.Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        create_test_app(unopened_uri, tmp_path, **{key: value})


def test_mounted_where_configured(unopened_uri: str, tmp_path: Path) -> None:
    app, _, queue = create_test_app(
        unopened_uri,
        tmp_path,
        PLAINQUEUE_DASHBOARD=True,
        PLAINQUEUE_DASHBOARD_URL="/admin/tasks/",
    )
    assert "plainqueue" in app.blueprints
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert "/admin/tasks/" in rules and "/admin/tasks/tasks/<task_id>" in rules
    with app.app_context():
        assert queue.settings().dashboard_url == "/admin/tasks"
        assert queue.dashboard_check() is None  # every page is 403 until set


def test_auth_decorator_takes_a_function_only() -> None:
    queue = PlainQueue()
    with pytest.raises(TypeError, match="decorates a function"):
        queue.dashboard_auth("admin")  # type: ignore[arg-type]

    def check() -> bool:
        return True

    assert queue.dashboard_auth(check) is check


def test_templates_never_mark_data_safe() -> None:
    templates = list(TEMPLATES.glob("*.html"))
    assert templates
    for template in templates:
        assert "|safe" not in template.read_text().replace(" ", ""), template


def test_templates_have_no_inline_script_or_style() -> None:
    # The dashboard's Content-Security-Policy (default-src 'self') would block
    # them: scripts and styles come from its static files only.
    inline = re.compile(
        r"<script(?![^>]*\ssrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=|javascript:", re.I
    )
    for template in TEMPLATES.glob("*.html"):
        found = inline.findall(template.read_text())
        assert not found, (template.name, found)
    assert inline.search('<p onclick="x()">') and inline.search("<script>")
