"""The overview's chart of the last 24 hours: an inline SVG whose bars have
the heights the stored counts give, per task and in total, with no inline
style or script, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime
import re
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import create_test_app
from flask.testing import FlaskClient

from flask_plainqueue import history
from flask_plainqueue import PlainQueue
from flask_plainqueue.dashboard_chart import CHART_STEP
from flask_plainqueue.dashboard_chart import PLOT_HEIGHT
from flask_plainqueue.history import MinuteRow


class Page(t.NamedTuple):
    queue: PlainQueue
    client: FlaskClient


@pytest.fixture
def page(database_uri: str, tmp_path: Path) -> Iterator[Page]:
    app, db, queue = create_test_app(
        database_uri, tmp_path / "instance", PLAINQUEUE_DASHBOARD=True
    )
    queue.dashboard_auth(lambda: True)
    with app.app_context():
        db.drop_all()
        db.create_all()
        try:
            yield Page(queue, app.test_client())
        finally:
            db.session.remove()
            db.drop_all()
            db.engine.dispose()


def _rects(svg: str) -> list[dict[str, str]]:
    return [
        dict(re.findall(r'(\w+)="([^"]*)"', attrs))
        for attrs in re.findall(r"<rect ([^>]*)>", svg)
    ]


def _svg(text: str) -> str:
    match = re.search(r"<svg .*?</svg>", text, re.S)
    assert match, text
    return match.group(0)


def _seed(queue: PlainQueue) -> datetime.datetime:
    """Two bars' worth of counts, well inside the last 24 hours: one bucket
    with 30 succeeded and 10 failed (mail 20 + 5, resize 10 + 5), and one,
    an hour later, with 10 succeeded of mail."""
    store = queue.store()
    now = store.clock()
    start = (now - datetime.timedelta(hours=3)).replace(second=0, microsecond=0)
    start -= datetime.timedelta(minutes=start.minute % CHART_STEP)
    history.add(
        store,
        [
            MinuteRow(start, "mail", 20, 5, 2, 1.0),
            MinuteRow(start + datetime.timedelta(minutes=1), "resize", 10, 5, 0, 1.0),
            MinuteRow(start + datetime.timedelta(hours=1), "mail", 10, 0, 0, 1.0),
        ],
    )
    return start


def test_overview_charts_the_last_24_hours(page: Page) -> None:
    start = _seed(page.queue)
    response = page.client.get("/queue/")
    assert response.status_code == 200
    svg = _svg(response.text)
    assert 'role="img"' in svg and "<title id=" in svg and "<desc id=" in svg
    # Nothing the page's CSP would refuse: no style attribute, no inline script.
    assert "style=" not in svg
    assert not re.search(r"<script(?![^>]*\bsrc=)", response.text)
    rects = _rects(svg)
    ok = [r for r in rects if r["class"] == "pq-bar-ok"]
    failed = [r for r in rects if r["class"] == "pq-bar-failed"]
    # The busiest bar (40 attempts) is the plot's full height: 30 of it
    # succeeded, 10 failed on top; the other bar is 10 of 40 high.
    assert [float(r["height"]) for r in ok] == [
        pytest.approx(PLOT_HEIGHT * 30 / 40),
        pytest.approx(PLOT_HEIGHT * 10 / 40),
    ]
    assert [float(r["height"]) for r in failed] == [pytest.approx(PLOT_HEIGHT / 4)]
    assert float(failed[0]["y"]) == pytest.approx(0.0, abs=0.01)
    assert float(ok[0]["y"]) + float(ok[0]["height"]) == pytest.approx(PLOT_HEIGHT)
    # Six bars an hour apart.
    width = float(ok[0]["width"])
    assert float(ok[1]["x"]) - float(ok[0]["x"]) == pytest.approx(6 * width, abs=0.1)
    end = start + datetime.timedelta(minutes=CHART_STEP)
    assert f"{start:%H:%M}–{end:%H:%M} UTC: 30 succeeded, 10 failed (2 dead)" in svg
    assert "40 succeeded and 10 failed (2 dead)" in svg


def test_overview_charts_one_task(page: Page) -> None:
    _seed(page.queue)
    svg = _svg(page.client.get("/queue/?chart=resize").text)
    assert "task resize" in svg
    ok = [r for r in _rects(svg) if r["class"] == "pq-bar-ok"]
    failed = [r for r in _rects(svg) if r["class"] == "pq-bar-failed"]
    # resize alone: one bar of 15, 10 of it succeeded.
    assert [float(r["height"]) for r in ok] == [pytest.approx(PLOT_HEIGHT * 10 / 15)]
    assert [float(r["height"]) for r in failed] == [pytest.approx(PLOT_HEIGHT * 5 / 15)]
    # A name without counts charts every task.
    assert "all tasks" in _svg(page.client.get("/queue/?chart=nope").text)


def test_overview_chart_without_counts(page: Page) -> None:
    svg = _svg(page.client.get("/queue/").text)
    assert _rects(svg) == []
    assert "0 succeeded and 0 failed" in svg


def test_overview_without_the_stats_table(page: Page) -> None:
    """An app upgraded without its migration still shows its overview."""
    store = page.queue.store()
    store.tables.stats.drop(store.engine)
    try:
        response = page.client.get("/queue/")
        assert response.status_code == 200
        assert "The stats table does not exist yet" in response.text
        assert "<svg" not in response.text
    finally:
        store.tables.stats.create(store.engine)
