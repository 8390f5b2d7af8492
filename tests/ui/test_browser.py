"""The training page in a real browser: headless Chromium (Debian's ``chromium`` package, driven by PyPI
``playwright``) logs in to a running Airflow 3.3 API server with the plugin (``training_server``: logins
required, the demo athlete loaded), opens Browse > Training and reads the page inside Airflow's UI.

Checked: the nav entry exists and opens ``/plugin/training``, whose iframe shows the page; the totals of
two weeks equal hand-written SQL on the tables; days without a nutrition log show no kcal; the charts and
the sync health render; no console error; no request to any host but the Airflow server; no horizontal
overflow at phone width; a failed request and a database before the first sync show their states.
Screenshots at 1280x900 and 375x812 (``training-desktop.png``, ``training-phone.png``) and of the whole
page (``training-page.png``) are written on every run to ``.local/screenshots/``, and to ``docs/`` (the
ones the README shows) with ``UPDATE_SCREENSHOTS=1``, so that a test run leaves the repository as it
was; nothing is compared pixel by pixel.

``playwright install`` cannot download browsers here: the tests launch ``/usr/bin/chromium``. Without it
they skip (``apt-get install chromium``); with ``CI`` set they fail instead (``.ci/run`` installs it).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import time
from collections.abc import Iterator
from contextlib import closing
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.helpers import query
from tests.ui.conftest import TrainingServer
from tests.ui.truth import WEEK_TRUTH_SQL

AIRFLOW_MAJOR = int(version("apache-airflow").split(".")[0])
pytestmark = [pytest.mark.skipif(AIRFLOW_MAJOR < 3, reason="the training page is Airflow 3's"), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# a plain run leaves the repository as it was; UPDATE_SCREENSHOTS=1 rewrites the README's screenshots
DOCS = REPO / "docs" if os.environ.get("UPDATE_SCREENSHOTS") == "1" else REPO / ".local" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
# as root in a sandbox; no background traffic (this machine's network is closed: it would only log errors)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
TIMEOUT_MS = 30_000



@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Headless Chromium (session-wide). Requested before ``training_server`` so that a machine without
    a browser skips before an Airflow server is started for nothing."""
    if not CHROMIUM.exists():
        message = "Chromium not found: apt-get install chromium (Debian) to run the browser tests"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI is set, so the browser tests must run (.ci/run installs it)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Recorder:
    """Everything a page asked for and complained about."""

    def __init__(self, page: Any) -> None:
        self.requests: list[str] = []
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("console", lambda message: message.type == "error" and self.console_errors.append(
            f"{message.text} ({message.location.get('url', '')})"))
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def foreign_requests(self, server_url: str) -> list[str]:
        own = urlsplit(server_url).netloc
        return [url for url in self.requests
                if urlsplit(url).scheme not in ("data", "blob", "about") and urlsplit(url).netloc != own]


def log_in(page: Any, server: TrainingServer) -> None:
    """Through Airflow's own login page (SimpleAuthManager), as a person would."""
    page.goto(f"{server.url}/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(server.passwords["admin"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/" not in url, timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Browse").wait_for(timeout=TIMEOUT_MS)


def training_frame(page: Any) -> Any:
    """The page's iframe inside Airflow's UI, once its three parts have loaded (or failed).

    Airflow 3.3's plugin page mirrors the iframe's location into its own route once the frame has loaded
    (``/plugin/training`` becomes ``/plugin/training/training/#month=...``), and the new route renders the
    iframe anew: a frame taken before that is detached. So the frame is taken after the mirror, and again
    if it was detached all the same."""
    page.wait_for_url(re.compile(r"/plugin/training/training/"), timeout=TIMEOUT_MS)
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        iframe = page.locator("iframe[src*='training']")
        iframe.wait_for(timeout=TIMEOUT_MS)
        frame = iframe.element_handle().content_frame()
        try:
            frame.wait_for_function("['calendar', 'trends', 'sync'].every((part) => "
                                    "[undefined, 'loading'].indexOf(document.body.dataset[part]) < 0)",
                                    timeout=2_000)
        except PlaywrightError:
            if time.monotonic() > deadline:
                raise
            continue
        if not frame.is_detached():
            return frame


def show_month(frame: Any, month: dt.date) -> None:
    """Walk the calendar to ``month`` with its buttons (year and month steps), as a person would."""
    def shown() -> dt.date:
        return dt.datetime.strptime(frame.locator("#month-label").inner_text(), "%B %Y").date()

    for _ in range(40):
        current = shown()
        months = (month.year - current.year) * 12 + month.month - current.month
        if months == 0:
            break
        step = "12" if months >= 12 else "-12" if months <= -12 else "1" if months > 0 else "-1"
        frame.locator(f".month-nav button[data-move='{step}']").click()
        frame.wait_for_function("document.body.dataset.calendar === 'ready'", timeout=TIMEOUT_MS)
    assert shown() == month.replace(day=1)


def half_up(x: float) -> int:
    """JavaScript's Math.round for the positive values shown here."""
    return math.floor(x + 0.5)


def minutes(h_mm: str) -> int:
    hours, mins = h_mm.split(":")
    return int(hours) * 60 + int(mins)


def number(text: str) -> float:
    return float(re.sub(r"[^0-9.\-]", "", text))


def check_week(frame: Any, truth: tuple[Any, ...], conn: Any) -> None:
    """The totals column of ``truth``'s week, as shown, against the SQL figures at the shown precision."""
    week, activities, km, moving_s, climb_m, weight_kg, kcal, logged_days = truth
    totals = frame.locator(f".totals[data-week='{week.isoformat()}']")
    assert totals.count() == 1, f"week {week} not in the calendar"
    field = {name: totals.locator(f"[data-field='{name}']").inner_text()
             for name in ("activities", "distance_km", "moving_time_s", "elevation_m", "avg_weight_kg", "avg_kcal")}
    assert int(field["activities"]) == activities, (week, field)
    assert abs(number(field["distance_km"]) - float(km)) <= 0.05 + 1e-9, (week, field, km)
    assert minutes(field["moving_time_s"]) == half_up(float(moving_s) / 60), (week, field, moving_s)
    assert field["elevation_m"] == f"{half_up(float(climb_m)):,} m", (week, field, climb_m)
    assert field["avg_weight_kg"] == f"{float(weight_kg):.1f} kg", (week, field, weight_kg)
    assert number(field["avg_kcal"]) == half_up(float(kcal)), (week, field, kcal)
    assert f"over {logged_days} logged day" in totals.locator("[data-field='avg_kcal']").get_attribute("title")

    # days: one chip per activity; kcal only on logged days (nothing, not 0, on the others)
    end = week + dt.timedelta(days=7)
    logged = dict(query(conn, "SELECT record_date, calories FROM fitbit_calories WHERE deleted_at IS NULL"
                              " AND record_date >= %s AND record_date < %s", (week, end)))
    row = frame.locator(f".cal-row[data-week='{week.isoformat()}']")
    assert row.locator(".act").count() == activities
    for offset in range(7):
        day = week + dt.timedelta(days=offset)
        shown = row.locator(f".day[data-date='{day.isoformat()}'] .kcal")
        if day in logged:
            assert number(shown.inner_text()) == half_up(float(logged[day])), (day, shown.inner_text())
        else:
            assert shown.count() == 0, f"{day} has no nutrition log but shows {shown.inner_text()!r}"


def test_the_page_inside_airflow_shows_the_sql_truth_and_stays_on_the_server(
        chromium: Any, training_server: TrainingServer) -> None:
    context = chromium.new_context(viewport=DESKTOP, color_scheme="light", locale="en-US",
                                   timezone_id="UTC")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    record = Recorder(page)
    try:
        log_in(page, training_server)
        # Airflow's UI asks for /ui/config before anyone logged in (401 Unauthorized): that one is its own
        assert all("status of 401" in error for error in record.console_errors), record.console_errors
        record.console_errors.clear()

        # Browse > Training opens the page inside Airflow's UI
        page.get_by_role("button", name="Browse").click()
        entry = page.get_by_role("menuitem", name="Training")
        entry.wait_for()
        entry.click()
        # Airflow 3.3's plugin page mirrors the iframe's location into its own once the frame has loaded
        # (/plugin/training/training/#month=...): either URL may be the one seen first
        page.wait_for_url(re.compile(r"/plugin/training(/training/)?(#month=\d{4}-\d{2})?$"))
        frame = training_frame(page)
        assert page.locator("iframe[src*='training']").count() == 1
        for part in ("calendar", "trends", "sync"):
            assert frame.locator("body").get_attribute(f"data-{part}") == "ready", part
        assert frame.locator("#empty").is_hidden()

        # the totals of two weeks equal the SQL truth
        with closing(training_server.connect()) as conn:
            weeks = query(conn, WEEK_TRUTH_SQL)
            assert len(weeks) >= 6, "the demo athlete should have several complete weeks with logs"
            for truth in (weeks[-1], weeks[-5]):
                show_month(frame, truth[0] + dt.timedelta(days=3))  # the Thursday's month holds the ISO week
                check_week(frame, truth, conn)
            sources = {row[0] for row in query(conn, "SELECT DISTINCT source FROM sync_run")}
            # an activity whose detail fitness_sync read: the newest with laps
            (activity_id, day, kcal, laps), = query(
                conn, "SELECT a.id, a.start_date_local::date, d.calories, d.lap_count FROM strava_activity a "
                      "JOIN strava_activity_detail d ON d.activity_id = a.id WHERE a.deleted_at IS NULL "
                      "AND d.lap_count > 1 ORDER BY a.start_date DESC LIMIT 1")

        # its chip opens its detail: the calories burned and one row per lap, as the tables hold them
        show_month(frame, day)
        frame.locator(f".act[data-activity='{activity_id}']").first.click()
        frame.wait_for_selector("#activity tr[data-lap]")
        assert frame.locator("#activity tr[data-lap]").count() == laps
        assert f"{half_up(kcal):,} kcal" in frame.locator("#activity .facts").inner_text()
        assert frame.locator("#activity .strava-credit").is_visible()

        # legend, attribution, charts and sync health
        assert frame.locator("#legend span").count() >= 1
        for section in ("#calendar", "#trends"):
            assert frame.locator(f"{section} .strava-credit").inner_text() == "Powered by Strava"
            assert frame.locator(f"{section} .strava-credit").is_visible()
        for chart in ("chart-distance", "chart-time", "chart-weight", "chart-kcal"):
            assert frame.evaluate(f"Boolean(Chart.getChart('{chart}'))"), chart
            assert frame.locator(f"#{chart}").bounding_box()["height"] > 100
            assert frame.locator(f"#{chart}").locator("xpath=..").locator(".no-data").count() == 0, chart
        assert frame.locator("#ytd .ytd-item").count() == 4
        assert {frame.locator("#sync-body tr[data-source]").nth(i).get_attribute("data-source")
                for i in range(frame.locator("#sync-body tr[data-source]").count())} == sources

        # the screenshot users see first: the month before today's week (a full month, this week highlighted)
        frame.locator(".month-nav button[data-move='0']").click()
        frame.wait_for_selector("body[data-calendar='ready']")
        today = dt.date.fromisoformat(frame.evaluate("new Date().toISOString().slice(0, 10)"))
        assert frame.locator(f".day.today[data-date='{today.isoformat()}']").count() == 1
        assert frame.locator(".cal-row.this-week").count() == 1
        show_month(frame, today - dt.timedelta(days=7))
        DOCS.mkdir(parents=True, exist_ok=True)
        frame.evaluate("document.activeElement && document.activeElement.blur()")
        page.wait_for_timeout(300)
        page.screenshot(path=str(DOCS / "training-desktop.png"))

        # the whole page (trends and sync health too), as the iframe shows it, for the README
        whole = context.new_page()
        whole_record = Recorder(whole)
        iframe_width = round(page.locator("iframe[src*='training']").bounding_box()["width"])
        whole.set_viewport_size({"width": iframe_width, "height": DESKTOP["height"]})
        whole.goto(f"{training_server.url}/training/#month={(today - dt.timedelta(days=7)):%Y-%m}")
        whole.wait_for_function("['calendar', 'trends', 'sync'].every((p) => document.body.dataset[p] === 'ready')")
        whole.screenshot(path=str(DOCS / "training-page.png"), full_page=True)
        whole.close()
        assert whole_record.console_errors == [] and whole_record.page_errors == []
        assert whole_record.foreign_requests(training_server.url) == []

        # phone width: the calendar collapses, nothing overflows the page
        page.set_viewport_size(PHONE)
        page.wait_for_timeout(500)
        for document in (page, frame):
            width = document.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            assert width[0] <= width[1], f"horizontal overflow at phone width: {width}"
        assert frame.locator(".cal-row.cal-head").is_hidden()
        page.screenshot(path=str(DOCS / "training-phone.png"))

        assert record.page_errors == []
        assert record.console_errors == []
        assert record.foreign_requests(training_server.url) == []
        assert any("/training/static/chart.umd.min.js" in url for url in record.requests)
    finally:
        context.close()


def test_a_failed_request_and_a_database_before_the_first_sync_show_their_states(
        chromium: Any, training_server: TrainingServer) -> None:
    context = chromium.new_context(viewport=DESKTOP, locale="en-US")
    context.add_cookies([{"name": "_token", "value": training_server.login(), "url": training_server.url}])
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    record = Recorder(page)
    try:
        # the trends fail: their section says so, the others still show
        page.route("**/training/api/trends*", lambda route: route.fulfill(
            status=500, content_type="application/json", body='{"detail": "Internal Server Error"}'))
        page.goto(f"{training_server.url}/training/")
        page.wait_for_selector("body[data-calendar='ready'][data-trends='error'][data-sync='ready']")
        error = page.locator("#trends-state.error")
        assert "Could not load the trends" in error.inner_text() and "HTTP 500" in error.inner_text()
        assert error.get_by_role("button", name="Try again").is_visible()
        page.unroute("**/training/api/trends*")
        error.get_by_role("button", name="Try again").click()
        page.wait_for_selector("body[data-trends='ready']")
        assert page.locator("#trends-state").inner_text() == ""

        # no views yet (a new user before the first run of fitness_sync): the empty state, no red error
        detail = "The fitness database has no training data yet: trigger fitness_sync."
        page.route("**/training/api/**", lambda route: route.fulfill(
            status=503, content_type="application/json", body=f'{{"detail": "{detail}", "code": "no_schema"}}'))
        page.reload()
        page.wait_for_selector("body[data-calendar='empty'][data-trends='empty'][data-sync='empty']")
        assert page.locator("#empty").is_visible()
        assert "No data yet: run fitness_sync" in page.locator("#empty").inner_text()
        assert page.locator(".state.error").count() == 0
        assert page.locator(".cal-row[data-week]").count() >= 4  # an empty month, not nothing

        # a month without data in a database with data: an empty calendar, no notice
        page.unroute("**/training/api/**")
        page.goto(f"{training_server.url}/training/#month=1999-01")
        page.wait_for_selector("body[data-calendar='ready']")
        assert page.locator("#month-label").inner_text() == "January 1999"
        assert page.locator("#empty").is_hidden() and page.locator(".act").count() == 0

        # 503 answers are what we asked for above; nothing else may complain
        assert [e for e in record.console_errors if "503" not in e and "500" not in e] == []
        assert record.page_errors == []
        assert record.foreign_requests(training_server.url) == []
    finally:
        context.close()


def test_two_airflow_users_each_see_only_their_own_athlete(chromium: Any, training_server: TrainingServer) -> None:
    """A second athlete, seen by ``viewer`` only (the demo athlete by ``admin`` only): each user's page shows
    their athlete's activities and no picker, and asking for the other athlete is a 404."""
    today = dt.date.today()
    with closing(training_server.connect()) as conn:
        (alice,) = conn.execute(
            "INSERT INTO athlete (name, airflow_users) VALUES ('alice', ARRAY['viewer']) RETURNING id").fetchone()
        conn.execute("UPDATE athlete SET airflow_users = ARRAY['admin'] WHERE id = 1")
        conn.execute("INSERT INTO strava_activity (id, athlete_id, name, sport_type, distance, moving_time, "
                     "start_date, start_date_local, raw) VALUES (9900000001, %s, 'Alice long run', 'Run', 21100, "
                     "6300, %s, %s, '{}')", (alice, dt.datetime.combine(today, dt.time(6), dt.UTC),
                                             dt.datetime.combine(today, dt.time(7))))
        conn.commit()
        demo_ids = {row[0] for row in conn.execute("SELECT id FROM training_activity WHERE athlete_id = 1").fetchall()}
    try:
        for user, own, other in (("viewer", {9900000001}, 1), ("admin", demo_ids, alice)):
            context = chromium.new_context(viewport=DESKTOP, locale="en-US", timezone_id="UTC")
            context.add_cookies([{"name": "_token", "value": training_server.login(user), "url": training_server.url}])
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            try:
                page.goto(f"{training_server.url}/training/#month={today:%Y-%m}")
                page.wait_for_selector("body[data-calendar='ready'][data-sync='ready']")
                shown = {int(page.locator(".act").nth(i).get_attribute("data-activity"))
                         for i in range(page.locator(".act").count())}
                assert shown and shown <= own, user  # the demo athlete's of the weeks shown; alice's one run
                assert page.locator("#athlete-pick").is_hidden()  # one athlete each: no picker
                response = page.request.get(f"{training_server.url}/training/api/calendar?athlete={other}")
                assert response.status == 404 and response.json()["code"] == "no_such_athlete", user
            finally:
                context.close()
    finally:
        with closing(training_server.connect()) as conn:
            conn.execute("DELETE FROM strava_activity WHERE athlete_id = %s", (alice,))
            conn.execute("DELETE FROM athlete WHERE id = %s", (alice,))
            conn.execute("UPDATE athlete SET airflow_users = NULL WHERE id = 1")
            conn.commit()
