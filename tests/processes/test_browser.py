"""The dashboard end to end in headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium; nothing is downloaded): a browser in a
process of its own, hence this tier.

The app (``tests/apps/opsapp.py``) is served by a real HTTP server on
127.0.0.1 in a thread; tasks are run with ``queue.drain()`` in the test.
Screenshots of each page go to ``tmp_path``, and to the folder named by
``DASHBOARD_SCREENSHOTS`` when it is set (``docs/_static`` for the docs).
Skips where Chromium, chromedriver or Selenium is absent.
"""

from __future__ import annotations

import datetime
import os
import threading
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from helpers import APPS
from helpers import child_env
from helpers import flask_args
from helpers import Procs
from helpers import procs_fixture
from helpers import TIMEOUT
from helpers import wait_for
from werkzeug.serving import make_server

from flask_plainqueue import PlainQueue
from flask_plainqueue.roster import Roster
from flask_plainqueue.roster import WorkerRow

pytestmark = pytest.mark.browser

ROOT = APPS.parent.parent
CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


class Site(t.NamedTuple):
    url: str
    app: Flask
    queue: PlainQueue
    tmp_path: Path


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    monkeypatch.syspath_prepend(str(APPS))
    import opsapp

    app = opsapp.create_app(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'ops.db'}",
        TESTING=False,
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="dashboard-server")
    thread.start()
    try:
        with app.app_context():
            yield Site(
                f"http://127.0.0.1:{server.server_port}", app, opsapp.queue, tmp_path
            )
            opsapp.db.session.remove()
    finally:
        server.shutdown()
        thread.join(TIMEOUT)
        server.server_close()
        with app.app_context():
            opsapp.db.engine.dispose()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[t.Any]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(
            f"needs {CHROMIUM} and {CHROMEDRIVER}"
            " (apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument("--window-size=1280,900")
    # A driver path given: Selenium Manager does not look for (or fetch) one.
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: t.Any, site: Site, name: str) -> None:
    """Save the page (full height) as ``name``.png."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.execute_script("return window.innerWidth")
    driver.set_window_size(max(width, 360), min(max(height + 140, 500), 2400))
    targets = [site.tmp_path / "screenshots"]
    if os.environ.get("DASHBOARD_SCREENSHOTS"):
        targets.append(Path(os.environ["DASHBOARD_SCREENSHOTS"]))
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(target / f"{name}.png"))


def wait(driver: t.Any) -> t.Any:
    """A ``WebDriverWait`` that tries again when an element it found went away
    with a page load (a submitted form, the auto-refresh) before it was read:
    Selenium raises ``StaleElementReferenceException`` then."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver, TIMEOUT, ignored_exceptions=(StaleElementReferenceException,)
    )


def wait_text(driver: t.Any, css: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    wait(driver).until(lambda d: text in d.find_element(By.CSS_SELECTOR, css).text)


def alert(driver: t.Any) -> t.Any:
    """The confirmation dialog, once it is open."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, TIMEOUT).until(expected_conditions.alert_is_present())


def log_in(driver: t.Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{site.url}/queue/")
    body = driver.find_element(By.TAG_NAME, "body").text
    assert "no authorisation check is" not in body  # opsapp registers one
    assert "not allowed" in body
    driver.get(f"{site.url}/login")
    driver.find_element(By.ID, "password").send_keys("letmein")
    driver.find_element(By.ID, "login").click()
    wait_text(driver, "h1", "Overview")


def test_log_in_see_failed_task_retry_it_and_see_it_gone(
    browser: t.Any, site: Site
) -> None:
    from selenium.webdriver.common.by import By

    queue = site.queue
    ok_file = site.tmp_path / "fixed"
    failed = queue.perform(
        "ops.fail", {"error": "SMTP refused", "ok_file": str(ok_file)}
    )
    queue.perform_many("emails.send_welcome", [{"contact_id": n} for n in range(3)])
    queue.drain()
    # A realistic mix for the screenshots: waiting, scheduled, dead.
    queue.perform_many("invoices.render", [{"invoice_id": 41}, {"invoice_id": 42}])
    queue.drain()  # three attempts each, then dead
    queue.perform_many("emails.send_welcome", [{"contact_id": n} for n in range(4, 9)])
    queue.perform("invoices.render", {"invoice_id": 7}, delay=600)

    log_in(browser, site)
    text = browser.find_element(By.TAG_NAME, "main").text
    assert "ops.fail" in text and "invoices.render" in text
    screenshot(browser, site, "dashboard-overview")

    browser.find_element(By.CSS_SELECTOR, ".pq-card.pq-state-dead").click()
    wait_text(browser, "h1", "Dead tasks")
    row = browser.find_element(By.XPATH, f"//tr[td/a[text()='{failed}']]")
    assert "ValueError: SMTP refused" in row.text
    screenshot(browser, site, "dashboard-failed")

    invoice = browser.find_element(By.XPATH, "//tr[td[text()='invoices.render']]//a")
    invoice_id = invoice.text
    invoice.click()
    wait_text(browser, "h1", f"Task {invoice_id}")
    assert '"invoice_id": 4' in browser.find_element(By.ID, "pq-data").text
    screenshot(browser, site, "dashboard-detail")

    browser.get(f"{site.url}/queue/tasks?state=dead")
    browser.find_element(By.LINK_TEXT, str(failed)).click()
    wait_text(browser, "h1", f"Task {failed}")
    assert '"error": "SMTP refused"' in browser.find_element(By.ID, "pq-data").text
    assert "Traceback (most recent call last)" in (
        browser.find_element(By.ID, "pq-error").text
    )

    ok_file.write_text("the bug is fixed")
    browser.find_element(By.ID, "pq-retry").click()
    wait_text(browser, ".pq-flash", f"Task {failed} (ops.fail) will run again now.")
    assert "pending" in browser.find_element(By.CSS_SELECTOR, "h1 .pq-badge").text
    assert queue.drain() >= 1

    browser.get(f"{site.url}/queue/tasks?state=dead")
    ids = [
        int(a.text) for a in browser.find_elements(By.CSS_SELECTOR, "td:first-child a")
    ]
    assert failed not in ids and len(ids) == 2
    browser.get(f"{site.url}/queue/tasks/{failed}")
    assert browser.title.startswith("404 Not found")  # the dashboard's own page

    # The dead list on a phone-sized screen: one card per task, no sideways
    # scrolling.
    browser.set_window_size(390, 844)
    browser.get(f"{site.url}/queue/tasks?state=dead")
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390, "the page must not scroll sideways on a phone"
    screenshot(browser, site, "dashboard-phone")
    browser.set_window_size(1280, 900)

    # Retry all dead tasks of one name, with the confirmation dialog.
    browser.get(f"{site.url}/queue/tasks?state=dead&name=invoices.render")
    browser.find_element(By.ID, "pq-retry-all").click()
    dialog = alert(browser)
    assert dialog.text == "Retry 2 dead task(s) of invoices.render?"
    dialog.accept()
    wait_text(browser, ".pq-flash", "2 dead task(s) of invoices.render will run again")


def test_payloads_in_data_and_errors_render_as_text(browser: t.Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    script = "<script>window.__xss = 'data'</script>"
    img = "<img src=x onerror=\"window.__xss = 'img'\">"
    error = "<img src=x onerror=window.__xss=1><script>window.__xss=2</script>"
    task_id = site.queue.perform(
        "ops.fail", {"note": script, "img": img, "error": error}
    )
    site.queue.drain()

    log_in(browser, site)
    for path in (f"/queue/tasks/{task_id}", "/queue/tasks?state=dead", "/queue/"):
        browser.get(site.url + path)
        assert browser.execute_script("return typeof window.__xss") == "undefined", path
        assert browser.find_elements(By.CSS_SELECTOR, "main img, main script") == []

    browser.get(f"{site.url}/queue/tasks/{task_id}")
    data = browser.find_element(By.ID, "pq-data").text
    assert script in data
    assert "<img src=x onerror=\\\"window.__xss = 'img'\\\">" in data
    assert f"ValueError: {error}" in browser.find_element(By.ID, "pq-error").text
    browser.get(f"{site.url}/queue/tasks?state=dead")
    assert (
        f"ValueError: {error}"
        in browser.find_element(By.CSS_SELECTOR, ".pq-error").text
    )
    assert browser.execute_script("return typeof window.__xss") == "undefined"

    # Deleting asks first; dismissing keeps the task.
    browser.get(f"{site.url}/queue/tasks/{task_id}")
    browser.find_element(By.ID, "pq-delete").click()
    alert(browser).dismiss()
    assert browser.find_element(By.ID, "pq-data").is_displayed()
    browser.find_element(By.ID, "pq-delete").click()
    alert(browser).accept()
    wait_text(browser, ".pq-flash", f"Task {task_id} (ops.fail) was deleted.")
    assert site.queue.cancel(task_id) is False


def test_without_login_every_page_is_refused(browser: t.Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    task_id = site.queue.perform("ops.ok", 1, delay=60)
    for path in ("/queue/", "/queue/tasks", f"/queue/tasks/{task_id}"):
        browser.get(site.url + path)
        assert "not allowed" in browser.find_element(By.TAG_NAME, "body").text


# -- framing, the Periodic page and auto-refresh -----------------------------------

#: A page that frames the address given as ``?src=``.
FRAMING_PAGE = (
    "<!doctype html><html><head><title>framing page</title></head><body>"
    '<iframe id="framed" src="{src}" width="900" height="600"></iframe>'
    "</body></html>"
)


@pytest.fixture
def framer() -> Iterator[int]:
    """A server on 127.0.0.1 (another port: the same site as the dashboard,
    another origin) answering every path with :data:`FRAMING_PAGE`; as
    ``localhost`` it is another site. Yields its port."""
    from html import escape
    from urllib.parse import parse_qs

    def app(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        src = parse_qs(environ.get("QUERY_STRING", "")).get("src", [""])[0]
        body = FRAMING_PAGE.format(src=escape(src, quote=True)).encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body]

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="framing-server")
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(TIMEOUT)
        server.server_close()


def framed(driver: t.Any, page: str, src: str) -> dict[str, t.Any]:
    """Open ``page`` framing ``src``; return what the frame shows."""
    from urllib.parse import quote

    from selenium.webdriver.common.by import By

    driver.get(f"{page}/?src={quote(src, safe='')}")
    frame = driver.find_element(By.ID, "framed")
    driver.switch_to.frame(frame)
    try:
        return {
            "url": driver.execute_script("return document.location.href"),
            "login": len(driver.find_elements(By.ID, "login")),
            "retry": len(driver.find_elements(By.ID, "pq-retry")),
            "delete": len(driver.find_elements(By.ID, "pq-delete")),
        }
    finally:
        driver.switch_to.default_content()


def test_pages_that_frame_the_dashboard_are_refused(
    browser: t.Any, site: Site, framer: int
) -> None:
    from selenium.webdriver.common.by import By

    task_id = site.queue.perform("ops.fail", {"error": "framed"})
    site.queue.drain()
    log_in(browser, site)
    target = f"{site.url}/queue/tasks/{task_id}"
    browser.get(target)
    assert browser.find_elements(By.ID, "pq-retry")  # logged in, buttons shown

    same_site = f"http://127.0.0.1:{framer}"
    cross_site = f"http://localhost:{framer}"
    for page in (same_site, cross_site):
        # The check can see a frame that loads: the app's own login page (no
        # dashboard headers) does.
        control = framed(browser, page, f"{site.url}/login")
        assert control["login"] == 1, (page, control)
        assert control["url"] == f"{site.url}/login", (page, control)
        # The dashboard's task page is refused: the frame holds the browser's
        # error page, without the Retry and Delete buttons.
        refused = framed(browser, page, target)
        assert refused["retry"] == refused["delete"] == 0, (page, refused)
        assert not refused["url"].startswith(site.url), (page, refused)
    screenshot(browser, site, "dashboard-framed-refused")


def test_periodic_page_and_link_back_to_the_app(browser: t.Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    log_in(browser, site)
    browser.find_element(By.ID, "pq-nav-periodic").click()
    wait_text(browser, "h1", "Periodic tasks")
    row = browser.find_element(By.XPATH, "//tr[td/a[text()='reports.hourly']]")
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1:4] == ["default", "every 1h", "never"], cells
    assert cells[4].startswith("in "), cells

    site.queue.worker(site.app).scheduler.tick(site.queue.store().clock())
    browser.refresh()
    row = browser.find_element(By.XPATH, "//tr[td/a[text()='reports.hourly']]")
    last_tick = row.find_elements(By.TAG_NAME, "td")[3].text
    assert last_tick.endswith(" ago"), last_tick
    # The stylesheet applies under the Content-Security-Policy: the header is
    # dark, not the browser's default transparent.
    header = browser.find_element(By.CSS_SELECTOR, ".pq-header")
    assert header.value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"
    screenshot(browser, site, "dashboard-periodic")

    back = browser.find_element(By.ID, "pq-back")
    assert back.get_attribute("href") == f"{site.url}/"


def test_auto_refresh_reloads_the_page_while_ticked(browser: t.Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    log_in(browser, site)
    box = browser.find_element(By.ID, "pq-autorefresh")
    assert box.is_displayed() and not box.is_selected()
    box.click()
    assert (
        browser.execute_script(
            "return window.localStorage.getItem('plainqueue-autorefresh')"
        )
        == "on"
    )
    browser.execute_script("window.__before_reload = true")
    site.queue.perform_many("ops.ok", [1, 2, 3], delay=600)

    def reloaded_with_new_counts(driver: t.Any) -> bool:
        card = driver.find_element(By.CSS_SELECTOR, ".pq-card.pq-state-scheduled")
        return bool(
            driver.execute_script("return window.__before_reload === undefined")
            and card.find_element(By.CSS_SELECTOR, ".pq-card-n").text == "3"
        )

    wait(browser).until(reloaded_with_new_counts)
    # Still on after the reload, and on other pages too.
    assert browser.find_element(By.ID, "pq-autorefresh").is_selected()
    browser.get(f"{site.url}/queue/periodic")
    box = browser.find_element(By.ID, "pq-autorefresh")
    assert box.is_selected()
    box.click()
    assert (
        browser.execute_script(
            "return window.localStorage.getItem('plainqueue-autorefresh')"
        )
        == "off"
    )
    browser.refresh()
    assert not browser.find_element(By.ID, "pq-autorefresh").is_selected()


# -- operations: workers, pause and resume, why ------------------------------------


def test_workers_page_pause_resume_and_why(browser: t.Any, site: Site) -> None:
    import opsapp
    from selenium.webdriver.common.by import By

    queue = site.queue
    opsapp.released.clear()
    # A real worker in a thread of this process, registered as every worker is.
    worker = queue.worker(site.app)
    thread = threading.Thread(target=worker.run, name="ops-worker", daemon=True)
    thread.start()
    try:
        (real,) = wait_for(queue.workers, message="the worker's registration")
        # A worker that stopped beating five minutes ago, for the lost state.
        store = queue.store()
        beat = store.clock() - datetime.timedelta(minutes=5)
        Roster(store).register(
            WorkerRow(
                id="jobs-2:3120:5be0c1a2d4f6",
                host="jobs-2",
                pid=3120,
                kind="process",
                queues=("default",),
                tasks=("ops.ok",),
                concurrency=5,
                version=real.version,
                state="running",
                started=beat - datetime.timedelta(hours=2),
                heartbeat=beat,
            )
        )
        held = queue.perform("ops.wait", {"export": "contacts.csv"})
        wait_for(
            lambda: any(held in w.running for w in queue.workers()),
            message="the worker running the task",
        )

        log_in(browser, site)
        browser.find_element(By.ID, "pq-nav-workers").click()
        wait_text(browser, "h1", "Workers")
        row = browser.find_element(By.XPATH, f"//tr[td/code[text()='{worker.id}']]")
        badge = row.find_element(By.CSS_SELECTOR, ".pq-badge")
        assert badge.text == "running"
        # The state is coloured: green running, red lost.
        green = badge.value_of_css_property("background-color")
        lost = browser.find_element(
            By.XPATH,
            "//tr[td/code[text()='jobs-2:3120:5be0c1a2d4f6']]//*[@class]"
            "[contains(@class, 'pq-badge')]",
        )
        assert lost.text == "lost"
        assert lost.value_of_css_property("background-color") != green
        assert "ago" in row.text
        row.find_element(By.LINK_TEXT, str(held))  # links to the running task
        screenshot(browser, site, "dashboard-workers")

        # Pause the task name on the overview; a new task of it waits.
        browser.find_element(By.ID, "pq-nav-overview").click()
        wait_text(browser, "h1", "Overview")
        pause = browser.find_element(
            By.XPATH, "//tr[td/a[text()='ops.wait']]//button[text()='Pause']"
        )
        pause.click()
        wait_text(browser, ".pq-flash", "Task 'ops.wait' is paused")
        assert queue.paused().tasks == {"ops.wait"}
        row = browser.find_element(By.XPATH, "//tr[td/a[text()='ops.wait']]")
        assert "paused" in row.find_element(By.CSS_SELECTOR, ".pq-paused").text
        assert "ops.wait" in browser.find_element(By.ID, "pq-paused").text
        screenshot(browser, site, "dashboard-paused")

        waiting = queue.perform("ops.wait", {"export": "invoices.csv"})
        browser.get(f"{site.url}/queue/tasks/{waiting}")
        why = browser.find_element(By.ID, "pq-why")
        assert browser.find_element(By.ID, "pq-why-code").text == "task-paused"
        assert "Task 'ops.wait' is paused" in why.text
        screenshot(browser, site, "dashboard-why")

        # Resume from the overview: the worker takes the waiting task.
        browser.find_element(By.ID, "pq-nav-overview").click()
        wait_text(browser, "h1", "Overview")
        browser.find_element(
            By.XPATH, "//tr[td/a[text()='ops.wait']]//button[text()='Resume']"
        ).click()
        wait_text(browser, ".pq-flash", "Task 'ops.wait' is resumed.")
        assert not queue.paused()
        assert browser.find_elements(By.CSS_SELECTOR, ".pq-counts .pq-paused") == []
        opsapp.released.set()
        wait_for(lambda: queue.count() == 0, message="both tasks run")
        browser.get(f"{site.url}/queue/tasks/{waiting}")
        assert browser.title.startswith("404 Not found")
    finally:
        opsapp.released.set()
        worker.stop(0)
        thread.join(TIMEOUT)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    yield from procs_fixture(tmp_path)


def test_report_page_follows_a_task_of_flask_queue_work(
    browser: t.Any, tmp_path: Path, procs: Procs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """example_app's report page: its EventSource on ``queue.stream`` moves the
    progress bar while a ``flask queue work`` process runs the report, then
    shows the result."""
    from selenium.webdriver.common.by import By

    monkeypatch.syspath_prepend(str(ROOT))
    import example_app
    from example_app.extensions import db
    from example_app.models import Contact

    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text(
        "REPORT_DAY_SECONDS = 0.1\nPLAINQUEUE_POLL_INTERVAL = 0.2\n"
    )
    app = example_app.create_app(instance_path=str(instance))
    with app.app_context():
        db.session.add(Contact(email="ann@example.com"))
        db.session.commit()
    worker = procs.start(
        flask_args(
            f"example_app:create_app(instance_path={str(instance)!r})", "queue", "work"
        ),
        env=child_env(),
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="example-server")
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        browser.get(f"{url}/login")
        browser.find_element(By.NAME, "password").send_keys("admin")
        browser.find_element(By.TAG_NAME, "form").submit()
        browser.get(f"{url}/reports/")
        browser.find_element(By.TAG_NAME, "form").submit()
        wait_text(browser, "h1", "Monthly report")
        bar = browser.find_element(By.ID, "report-progress")
        values: set[str] = set()

        def finished() -> bool:
            values.add(bar.get_attribute("value"))
            result = browser.find_element(By.ID, "report-result").text
            return "1 sign-ups in" in result

        wait_for(finished, interval=0.02, message=worker.output)
        days = int(bar.get_attribute("max"))
        assert bar.get_attribute("value") == str(days)
        assert browser.find_element(By.ID, "report-state").text == "succeeded"
        # Seen moving: values between empty and full, each an update.
        assert len({v for v in values if v not in ("0", str(days))}) >= 2, values
        screenshot_to(browser, tmp_path, "report")
    finally:
        server.shutdown()
        thread.join(TIMEOUT)
        server.server_close()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def screenshot_to(driver: t.Any, folder: Path, name: str) -> None:
    target = folder / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(target / f"{name}.png"))


def test_overview_charts_a_day_of_history(browser: t.Any, site: Site) -> None:
    import math

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from flask_plainqueue import history
    from flask_plainqueue.history import MinuteRow

    store = site.queue.store()
    now = store.clock().replace(second=0, microsecond=0)
    rows = []
    # A day of two tasks: sign-up emails following the day, and invoices
    # rendered in the morning, with an outage that failed some for an hour.
    for back in range(24 * 60):
        minute = now - datetime.timedelta(minutes=back)
        hour = minute.hour + minute.minute / 60
        emails = round(12 + 10 * math.sin((hour - 8) / 24 * 2 * math.pi))
        rows.append(
            MinuteRow(minute, "emails.send_welcome", emails, 0, 0, emails * 0.2)
        )
        if 6 <= hour < 12:
            failing = 9 <= hour < 10
            rows.append(
                MinuteRow(
                    minute,
                    "invoices.render",
                    2 if failing else 6,
                    4 if failing else back % 7 == 0,
                    int(failing and back % 3 == 0),
                    6 * 1.5,
                )
            )
    history.add(store, rows)

    log_in(browser, site)
    chart = browser.find_element(By.CSS_SELECTOR, ".pq-chart svg")
    assert chart.size["height"] > 100 and chart.size["width"] > 600
    assert len(browser.find_elements(By.CSS_SELECTOR, ".pq-bar-ok")) >= 144
    assert browser.find_elements(By.CSS_SELECTOR, ".pq-bar-failed")
    # The page's CSP refused nothing (no inline style or script).
    refused = [
        entry["message"]
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]
    assert refused == []
    browser.execute_script("document.getElementById('pq-history').scrollIntoView()")
    screenshot(browser, site, "dashboard-history")

    Select(browser.find_element(By.ID, "pq-chart-task")).select_by_value(
        "invoices.render"
    )
    browser.find_element(By.CSS_SELECTOR, ".pq-chart-pick button").click()
    wait_text(browser, ".pq-chart figcaption", "failed")
    title = browser.find_element(By.CSS_SELECTOR, ".pq-chart svg title").get_attribute(
        "textContent"
    )
    assert "task invoices.render" in title
    # Only the morning has invoices: 6 hours of 24, 36 ten-minute bars.
    assert len(browser.find_elements(By.CSS_SELECTOR, ".pq-bar")) in (36, 37)
