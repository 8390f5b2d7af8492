"""Several athletes on one deployment (issue 11): the migration of a single-athlete database, athletes
authorized with ``python -m fitness_pipeline.authorize --athlete`` against the emulator (one application,
several athletes), real ``dag.test()`` runs mapped over them, a revoked athlete, and the purge."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import requests

from fitness_pipeline.db import transaction
from fitness_pipeline.ddl import ensure_schema
from tests.helpers import query
from tests.test_authorize import GOOGLE_SECRET, STRAVA_SECRET, Run
from tests.test_dag import run_dag, this_hour

PRE_ATHLETE_SCHEMA = Path(__file__).parent / "data" / "pre_athlete_schema.sql"
PERSONAL_TABLES = ("strava_activity", "fitbit_weight", "fitbit_height", "fitbit_calories", "quarantine", "sync_run",
                   "oauth_token")
#: and the tables that came after athletes (detailed activities)
PURGED_TABLES = (*PERSONAL_TABLES, "strava_activity_detail", "strava_gear", "strava_lap")
LOOKBACK_HOURS = 24 * 40


def digest(conn: Any, table: str, columns: str = "*") -> tuple[int, str]:
    """(row count, sha256 of the rows in key order) of ``table``'s ``columns``."""
    rows = query(conn, f"SELECT {columns} FROM {table} ORDER BY 1, 2")
    return len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()


# --- the migration ---------------------------------------------------------------------------------------


def old_rows(conn: Any) -> None:
    """A few rows of every personal table, as the release before athletes stored them."""
    with transaction(conn) as cur:
        cur.execute("""
            INSERT INTO strava_activity (id, owner, name, start_date, start_date_local, raw)
            VALUES (11, 7, 'Morning run', '2026-03-02 06:00+00', '2026-03-02 07:00', '{"id": 11}'),
                   (12, 7, 'Ride', '2026-03-03 16:00+00', '2026-03-03 17:00', '{"id": 12}');
            INSERT INTO fitbit_weight (id, weight, record_date, measured_at, data_point_name, raw)
            VALUES (501, 80.5, '2026-03-02', '2026-03-02 06:30+00', 'users/me/dataTypes/weight/dataPoints/501', '{}');
            INSERT INTO fitbit_height (id, height_mm, measured_at, data_point_name, raw)
            VALUES (601, 1800, '2025-01-01 00:00+00', 'users/me/dataTypes/height/dataPoints/601', '{}');
            INSERT INTO fitbit_calories (record_date, id, calories, raw)
            VALUES ('2026-03-02', 1772409600, 2400, '{}'), ('2026-03-03', 1772496000, 2100, '{}');
            INSERT INTO quarantine (source, record_key, reason, payload) VALUES ('strava_activity', '13', 'bad', '{}');
            INSERT INTO sync_run (batch_id, source, extracted, quarantined, inserted, updated, unchanged)
            VALUES ('manual__1/strava_activity', 'strava_activity', 3, 1, 2, 0, 0);
            INSERT INTO oauth_token (token_key, refresh_token, seed_fingerprint)
            VALUES ('strava:strava_default', 'fernet:x', 'f');
        """)


def test_a_single_athlete_database_migrates_in_place_to_the_default_athlete(db_conn: Any) -> None:
    with transaction(db_conn) as cur:
        cur.execute(PRE_ATHLETE_SCHEMA.read_text())
    old_rows(db_conn)
    before = {table: digest(db_conn, table) for table in PERSONAL_TABLES}

    changes = ensure_schema(db_conn)
    assert not changes.problems
    assert "fitbit_calories: unique (record_date) is now unique per athlete" in changes.altered_tables
    assert "fitbit_weight: unique (id) is now unique per athlete" in changes.altered_tables
    # nothing lost, nothing changed: every old row is the default athlete's
    for table in PERSONAL_TABLES:
        columns = ", ".join(name for (name,) in query(
            db_conn, "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND "
                     "column_name <> 'athlete_id' ORDER BY ordinal_position", (table,)))
        assert digest(db_conn, table, columns) == before[table], table
        assert query(db_conn, f"SELECT DISTINCT athlete_id FROM {table}") == [(1,)], table
    assert query(db_conn, "SELECT id, name, active FROM athlete") == [(1, "default", True)]
    # keys are per athlete now: another athlete may log calories on the same day
    with transaction(db_conn) as cur:
        cur.execute("INSERT INTO athlete (name) VALUES ('alice') RETURNING id")
        (alice,) = cur.fetchone()
        cur.execute("INSERT INTO fitbit_calories (athlete_id, record_date, id, calories, raw) "
                    "VALUES (%s, '2026-03-02', 1772409600, 1900, '{}')", (alice,))
    assert alice == 2
    assert not ensure_schema(db_conn)  # idempotent
    assert query(db_conn, "SELECT athlete_id, day, kcal FROM training_day WHERE day = '2026-03-02' ORDER BY 1") == [
        (1, dt.date(2026, 3, 2), 2400.0), (2, dt.date(2026, 3, 2), 1900.0)]


def test_the_seed_articles_tables_migrate_to_the_default_athlete(db_conn: Any) -> None:
    from tests.test_loader import SEED_DDL

    with transaction(db_conn) as cur:
        cur.execute(SEED_DDL)
    ensure_schema(db_conn)
    assert query(db_conn, "SELECT id, athlete_id FROM strava_activity") == [(1, 1)]
    assert not ensure_schema(db_conn)


# --- several athletes through dag.test() -------------------------------------------------------------------


def authorize(emulator: Any, service: str, name: str, account: dict[str, Any]) -> str:
    """``python -m fitness_pipeline.authorize <service> --athlete NAME`` with ``account`` logged in on the
    emulator's consent page, as the athlete would do it. Returns the command's stderr."""
    if service == "strava":
        urls = ["--client-id", "demo-client-id", "--authorize-url", f"{emulator.url}/oauth/authorize",
                "--token-url", f"{emulator.url}/oauth/token"]
        requests.post(f"{emulator.url}/_emulator/strava/consent", json={"athlete_id": account["athlete_id"]},
                      timeout=10).raise_for_status()
    else:
        urls = ["--client-id", "demo-google-client-id", "--authorize-url", f"{emulator.url}/o/oauth2/v2/auth",
                "--token-url", f"{emulator.url}/token"]
        requests.post(f"{emulator.url}/_emulator/google/consent", json={"user_id": account["user_id"]},
                      timeout=10).raise_for_status()
    env = dict(os.environ, STRAVA_CLIENT_SECRET=STRAVA_SECRET, GOOGLE_CLIENT_SECRET=GOOGLE_SECRET)
    run = Run([service, *urls, "--api-root", emulator.url, "--no-browser", "--timeout", "20", "--athlete", name], env)
    try:
        requests.get(run.consent_url(), timeout=10).raise_for_status()
        code, out, err = run.finish()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert code == 0, err
    assert out == ""  # nothing to configure: the tokens went to the token store
    return err


def add_athlete(emulator: Any, name: str, athlete_id: int, *, google: bool = True) -> None:
    """A new athlete of the application on the emulator, authorized for Strava (and Google) under ``name``."""
    strava = requests.post(f"{emulator.url}/_emulator/strava/athletes", json={"athlete_id": athlete_id}, timeout=10)
    strava.raise_for_status()
    err = authorize(emulator, "strava", name, strava.json())
    assert strava.json()["refresh_token"] not in err
    if google:
        user = requests.post(f"{emulator.url}/_emulator/google/users", json={}, timeout=10)
        user.raise_for_status()
        authorize(emulator, "fitbit", name, user.json())


def athlete_ids(conn: Any) -> dict[str, int]:
    return dict(query(conn, "SELECT name, id FROM athlete"))


def emulated_activities(emulator: Any, strava_athlete_id: int, end: dt.datetime) -> list[int]:
    start = end - dt.timedelta(hours=1 + LOOKBACK_HOURS)
    athlete = emulator.state.strava.athletes.get(strava_athlete_id)
    return sorted(a["id"] for a in athlete.activities.find_activities(
        lambda a: start < dt.datetime.fromisoformat(a["start_date"]) < end))


def loaded_activities(conn: Any, athlete_id: int) -> list[int]:
    return [row[0] for row in query(conn, "SELECT id FROM strava_activity WHERE athlete_id = %s AND deleted_at IS NULL "
                                          "ORDER BY id", (athlete_id,))]


def task_states(dag_run: Any, names: list[str]) -> dict[tuple[str, str], str]:
    """(task id, athlete) -> state, for the mapped tasks; ``names``: the athletes synced, by id (the map index
    order). A task that ran shows its athlete's name in the UI (its rendered map index)."""
    from airflow.utils.session import create_session

    states = {}
    with create_session() as session:
        for ti in dag_run.get_task_instances(session=session):
            if ti.map_index < 0:
                continue
            # a task that never ran (upstream failed) shows its index
            assert ti.rendered_map_index in (names[ti.map_index], str(ti.map_index), None), ti.task_id
            states[(ti.task_id, names[ti.map_index])] = str(ti.state).split(".")[-1].lower()
    return states


@pytest.mark.usefixtures("airflow_db")
def test_two_athletes_land_under_themselves_a_revoked_one_fails_alone_and_a_purge_removes_exactly_theirs(
        db_conn: Any, all_connections: Any) -> None:
    emulator = all_connections
    hour = this_hour()
    ensure_schema(db_conn)
    add_athlete(emulator, "alice", 2)
    ids = athlete_ids(db_conn)
    assert set(ids) == {"default", "alice"}
    assert query(db_conn, "SELECT strava_athlete_id, google_user_id IS NOT NULL FROM athlete WHERE name = 'alice'") \
        == [(2, True)]
    # the tokens are stored encrypted, under the athlete, and the list command shows when (never the token)
    assert query(db_conn, "SELECT token_key, left(refresh_token, 7) FROM oauth_token WHERE athlete_id = %s "
                          "ORDER BY 1", (ids["alice"],)) == [
        ("fitbit:fitbit_default:athlete-2", "fernet:"), ("strava:strava_default:athlete-2", "fernet:")]

    dag_run = run_dag(hour, lookback_hours=LOOKBACK_HOURS)
    assert "success" in str(dag_run.state).lower()
    states = task_states(dag_run, ["default", "alice"])
    assert len(states) == 2 * 10 and set(states.values()) == {"success"}
    from airflow.utils.session import create_session

    with create_session() as session:  # each mapped task shows its athlete's name in the UI
        assert {ti.rendered_map_index for ti in dag_run.get_task_instances(session=session) if ti.map_index >= 0} \
            == {"default", "alice"}
    default_athlete_id = emulator.state.strava.settings.athlete_id
    for name, strava_id in (("default", default_athlete_id), ("alice", 2)):
        expected = emulated_activities(emulator, strava_id, hour)
        assert expected, name
        assert loaded_activities(db_conn, ids[name]) == expected, name
    for table in ("fitbit_weight", "fitbit_calories"):
        counts = dict(query(db_conn, f"SELECT athlete_id, count(*) FROM {table} GROUP BY 1"))
        assert counts.get(ids["default"]) and counts.get(ids["alice"]), table
    assert dict(query(db_conn, "SELECT athlete_id, count(*) FROM sync_run GROUP BY 1")) == {
        ids["default"]: 3, ids["alice"]: 3}

    # alice revokes the app on Strava: only her Strava tasks fail, she is marked inactive with what to do
    requests.post(f"{emulator.url}/_emulator/strava/revoke", params={"athlete_id": 2}, timeout=10).raise_for_status()
    with transaction(db_conn) as cur:  # her access token must be refreshed to notice
        cur.execute("UPDATE oauth_token SET expires_at = now() WHERE token_key = 'strava:strava_default:athlete-2'")
    dag_run = run_dag(hour + dt.timedelta(hours=1), lookback_hours=LOOKBACK_HOURS)
    states = task_states(dag_run, ["default", "alice"])
    assert states[("strava_activity.extract", "alice")] == "failed"
    assert {state for (task, name), state in states.items()
            if not (name == "alice" and task.startswith("strava_activity."))} == {"success"}
    (active, reason), = query(db_conn, "SELECT active, inactive_reason FROM athlete WHERE name = 'alice'")
    assert not active and "authorize" in reason and "--athlete" in reason
    dag_run = run_dag(hour + dt.timedelta(hours=2), lookback_hours=LOOKBACK_HOURS)
    states = task_states(dag_run, ["default"])  # inactive: not synced any more
    assert len(states) == 10 and set(states.values()) == {"success"}

    # the purge removes exactly alice's rows, quarantine entries and tokens, and leaves the default athlete's
    assert query(db_conn, "SELECT count(*) > 0 FROM strava_lap WHERE athlete_id = %s", (ids["alice"],)) == [(True,)]
    default_before = {table: digest(db_conn, f"(SELECT * FROM {table} WHERE athlete_id = {ids['default']}) t")
                      for table in PURGED_TABLES if table != "sync_run"}
    from fitness_pipeline import athletes

    assert athletes.main(["purge", "alice", "--yes", "alice"]) == 0
    for table in PURGED_TABLES:
        assert query(db_conn, f"SELECT count(*) FROM {table} WHERE athlete_id = %s", (ids["alice"],)) == [(0,)], table
    assert "alice" not in athlete_ids(db_conn)
    assert {table: digest(db_conn, f"(SELECT * FROM {table} WHERE athlete_id = {ids['default']}) t")
            for table in default_before} == default_before


@pytest.mark.usefixtures("airflow_db")
def test_ten_athletes_share_one_application_and_each_gets_exactly_their_own(db_conn: Any,
                                                                           all_connections: Any) -> None:
    """Nine athletes more, Strava only (their Fitbit tasks are skipped): one run loads each one's activities
    under them, within the application's shared limits (no 429)."""
    from fitness_pipeline import athletes
    from fitness_pipeline.tokens import PostgresTokenStore, TokenSet, token_key

    emulator = all_connections
    hour = this_hour()
    ensure_schema(db_conn)
    store = PostgresTokenStore("fitness_db")
    strava_ids = {"default": emulator.state.strava.settings.athlete_id}
    for n in range(2, 11):
        created = requests.post(f"{emulator.url}/_emulator/strava/athletes", json={"athlete_id": n}, timeout=10)
        created.raise_for_status()
        with transaction(db_conn) as cur:
            person = athletes.upsert(cur, f"athlete{n}", strava_athlete_id=n)
        store.store_authorized(token_key("strava", "strava_default", person.id),
                               TokenSet(None, created.json()["refresh_token"], None))
        strava_ids[person.name] = n
    names = list(athlete_ids(db_conn))
    assert len(names) == 10

    dag_run = run_dag(hour, lookback_hours=LOOKBACK_HOURS)
    assert "success" in str(dag_run.state).lower()
    states = task_states(dag_run, sorted(names, key=athlete_ids(db_conn).get))
    assert {state for (task, _), state in states.items() if task.startswith("strava_activity.")} == {"success"}
    assert {name for (task, name), state in states.items()
            if task.startswith("fitbit_") and state == "skipped"} == set(names) - {"default"}
    ids = athlete_ids(db_conn)
    for name, strava_id in strava_ids.items():
        assert loaded_activities(db_conn, ids[name]) == emulated_activities(emulator, strava_id, hour), name
    assert emulator.stats()["rate_limited"] == 0


@pytest.mark.usefixtures("airflow_db")
def test_strava_retention_keeps_only_the_last_days_and_the_purge_param_needs_the_name_twice(
        db_conn: Any, all_connections: Any) -> None:
    emulator = all_connections
    hour = this_hour()
    assert "success" in str(run_dag(hour, lookback_hours=LOOKBACK_HOURS).state).lower()
    kept_days = 10
    older = query(db_conn, "SELECT count(*) FROM strava_activity WHERE start_date < %s",
                  (hour - dt.timedelta(days=kept_days),))[0][0]
    assert older, "the first run should load activities older than the retention"
    weights = digest(db_conn, "fitbit_weight")

    dag_run = run_dag(hour, lookback_hours=LOOKBACK_HOURS, strava_retention_days=kept_days)
    assert "success" in str(dag_run.state).lower()
    recent = sorted(a["id"] for a in emulator.state.strava.find_activities(
        lambda a: hour - dt.timedelta(days=kept_days) <= dt.datetime.fromisoformat(a["start_date"]) < hour))
    assert loaded_activities(db_conn, 1) == recent
    assert query(db_conn, "SELECT count(*) FROM strava_activity") == [(len(recent),)]  # older ones deleted for good
    assert digest(db_conn, "fitbit_weight") == weights  # Strava-sourced rows only

    # the purge param: a wrong confirmation fails the run before anything is synced or deleted
    with transaction(db_conn) as cur:
        cur.execute("INSERT INTO athlete (name) VALUES ('bob') RETURNING id")
        (bob,) = cur.fetchone()
        cur.execute("INSERT INTO fitbit_calories (athlete_id, record_date, id, calories, raw) "
                    "VALUES (%s, '2026-03-02', 1, 1900, '{}')", (bob,))
    dag_run = run_dag(hour, purge_athlete="bob", purge_confirm="bobby")
    assert "failed" in str(dag_run.state).lower()
    assert query(db_conn, "SELECT count(*) FROM fitbit_calories WHERE athlete_id = %s", (bob,)) == [(1,)]
    dag_run = run_dag(hour, purge_athlete="bob", purge_confirm="bob")
    assert "success" in str(dag_run.state).lower()
    assert query(db_conn, "SELECT count(*) FROM fitbit_calories WHERE athlete_id = %s", (bob,)) == [(0,)]
    assert "bob" not in athlete_ids(db_conn)


def test_the_purge_needs_the_name_typed_again(db_conn: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from fitness_pipeline import athletes

    ensure_schema(db_conn)
    with transaction(db_conn) as cur:
        cur.execute("INSERT INTO athlete (name) VALUES ('bob') RETURNING id")
        (bob,) = cur.fetchone()
        cur.execute("INSERT INTO fitbit_calories (athlete_id, record_date, id, calories, raw) "
                    "VALUES (%s, '2026-03-02', 1, 1900, '{}')", (bob,))
    assert athletes.main(["purge", "bob", "--yes", "bobby"]) == 1
    assert query(db_conn, "SELECT count(*) FROM fitbit_calories") == [(1,)]
    assert athletes.main(["purge", "nobody", "--yes", "nobody"]) == 2
    assert "No athlete is called 'nobody'" in capsys.readouterr().err
    assert athletes.main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "bob\tactive" in listed and "default\tactive" in listed


def test_the_athletes_param_picks_some_and_refuses_unknown_or_inactive_names(db_conn: Any) -> None:
    from fitness_pipeline.athletes import AthleteError, set_active, to_sync

    ensure_schema(db_conn)
    with transaction(db_conn) as cur:
        cur.execute("INSERT INTO athlete (name) VALUES ('alice'), ('bob')")
        assert [a.name for a in to_sync(cur)] == ["default", "alice", "bob"]
        assert [a.name for a in to_sync(cur, ["bob"])] == ["bob"]
        with pytest.raises(AthleteError, match="No athlete is called 'carol'"):
            to_sync(cur, ["carol"])
        set_active(cur, 3, False, "disabled")
        assert [a.name for a in to_sync(cur)] == ["default", "alice"]
        with pytest.raises(AthleteError, match="inactive"):
            to_sync(cur, ["bob"])


def test_who_sees_which_athlete() -> None:
    from fitness_pipeline.athletes import Athlete, visible_to

    alone = [Athlete(1, "default", True)]
    assert visible_to(alone, "anyone") == alone  # a single athlete: every user, as before athletes
    club = [Athlete(1, "default", True), Athlete(2, "alice", True, airflow_users=("alice", "coach")),
            Athlete(3, "bob", True, airflow_users=("bob", "coach"))]
    assert [a.name for a in visible_to(club, "coach")] == ["alice", "bob"]
    assert [a.name for a in visible_to(club, "alice")] == ["alice"]
    assert visible_to(club, "mallory") == []  # the unmapped default athlete is nobody's once there are several


def test_the_retention_default_comes_from_the_environment() -> None:
    from fitness_pipeline.handover import RunParams

    assert RunParams.retention_from_environment({}) is None
    assert RunParams.retention_from_environment({"FITNESS_STRAVA_RETENTION_DAYS": " 30 "}) == 30
    for bad in ("0", "-3", "thirty", "1.5"):
        with pytest.raises(ValueError, match="FITNESS_STRAVA_RETENTION_DAYS"):
            RunParams.retention_from_environment({"FITNESS_STRAVA_RETENTION_DAYS": bad})


# --- what the review found --------------------------------------------------------------------------------


def test_an_account_is_never_silently_swapped_or_shared_and_names_are_not_ids(db_conn: Any) -> None:
    from fitness_pipeline.athletes import AthleteError, find, upsert

    ensure_schema(db_conn)
    with transaction(db_conn) as cur:
        upsert(cur, "alice", strava_athlete_id=2)
        upsert(cur, "alice", strava_athlete_id=2, google_user_id="g-2")  # the same account again: fine
        with pytest.raises(AthleteError, match="authorized another Strava account before: pass --replace"):
            upsert(cur, "alice", strava_athlete_id=3)
        with pytest.raises(AthleteError, match="already connected as athlete 'alice'"):
            upsert(cur, "bob", strava_athlete_id=2)
        assert upsert(cur, "alice", strava_athlete_id=3, replace=True).strava_athlete_id == 3
        with pytest.raises(AthleteError, match="cannot be '3'"):
            upsert(cur, "3")
        bob = upsert(cur, "bob")
        assert find(cur, str(bob.id)).name == "bob" and find(cur, "alice").name == "alice"


def test_a_strava_activity_stays_with_the_athlete_who_brought_it_first(schema: Any) -> None:
    from fitness_pipeline.loader import upsert_rows
    from fitness_pipeline.schema import strava_activity
    from tests.test_loader import rows

    (first,) = rows(1)
    with transaction(schema) as cur:
        cur.execute("INSERT INTO athlete (name) VALUES ('me-again')")
        upsert_rows(cur, strava_activity, [first], athlete_id=1)
    with transaction(schema) as cur:  # the same person connected a second time lists the same activity
        upsert_rows(cur, strava_activity, [{**first, "name": "renamed"}], athlete_id=2)
    assert query(schema, "SELECT athlete_id, name FROM strava_activity") == [(1, first["name"])]


def test_the_purge_takes_the_athletes_hand_over_rows_and_only_theirs(schema: Any) -> None:
    from fitness_pipeline import athletes

    with transaction(schema) as cur:
        for n in range(2, 13):
            cur.execute("INSERT INTO athlete (name) VALUES (%s)", (f"a{n}",))
        for batch in ("r1/strava_activity", "r1/strava_activity/athlete-2", "r1/strava_activity/athlete-12"):
            cur.execute("INSERT INTO raw_record (batch_id, seq, payload) VALUES (%s, 0, '{}')", (batch,))
            cur.execute("INSERT INTO extract_cursor (batch_id, after_epoch, landed) VALUES (%s, 0, 1)", (batch,))
        cur.execute("INSERT INTO stage_fitbit_calories (batch_id, seq, record_date, id, calories, raw, athlete_id) "
                    "VALUES ('r1/fitbit_calories/athlete-2', 0, '2026-03-02', 1, 1, '{}', 2)")
        athletes.purge(cur, athletes.find(cur, "a2"))
    assert query(schema, "SELECT batch_id FROM raw_record ORDER BY 1") == [
        ("r1/strava_activity",), ("r1/strava_activity/athlete-12",)]
    assert query(schema, "SELECT count(*) FROM extract_cursor") == [(2,)]
    assert query(schema, "SELECT count(*) FROM stage_fitbit_calories") == [(0,)]
    with transaction(schema) as cur:
        athletes.purge(cur, athletes.find(cur, "default"))  # kept, inactive: the Connections still name them
    assert query(schema, "SELECT batch_id FROM raw_record") == [("r1/strava_activity/athlete-12",)]
    assert query(schema, "SELECT active FROM athlete WHERE id = 1") == [(False,)]


def test_a_write_for_a_purged_athlete_is_refused(schema: Any) -> None:
    from fitness_pipeline.athletes import AthleteError, hold, set_active

    with transaction(schema) as cur:
        hold(cur, 1)
        set_active(cur, 1, False, "revoked: authorize again")
        hold(cur, 1)  # what this run fetched before the revocation still loads
        set_active(cur, 1, False, "purged: put a new refresh token in the Connections")
    with pytest.raises(AthleteError, match="purged"), transaction(schema) as cur:
        hold(cur, 1)
    with pytest.raises(AthleteError, match="purged"), transaction(schema) as cur:
        hold(cur, 99)


def test_staging_tables_give_rows_staged_before_the_upgrade_the_default_athlete(schema: Any) -> None:
    defaults = query(schema, "SELECT table_name, column_default FROM information_schema.columns "
                             "WHERE column_name = 'athlete_id' AND table_name LIKE 'stage_%' ORDER BY 1")
    assert defaults and all(default == "1" for _, default in defaults), defaults


def test_on_airflow_2_only_an_active_default_athlete_is_synced(db_conn: Any) -> None:
    from fitness_pipeline.athletes import set_active
    from fitness_pipeline.compat import AirflowFailException, AirflowSkipException
    from fitness_pipeline.tasks.prepare import default_athlete_only

    ensure_schema(db_conn)
    default_athlete_only(())
    default_athlete_only(("default",))
    with pytest.raises(AirflowFailException, match="several athletes need Airflow 3"):
        default_athlete_only(("alice",))
    with transaction(db_conn) as cur:
        set_active(cur, 1, False, "purged")
    with pytest.raises(AirflowSkipException, match="purged"):
        default_athlete_only(())


def test_hand_over_rows_of_an_athlete_purged_meanwhile_go_at_the_next_run(schema: Any) -> None:
    from fitness_pipeline.schema import extract_cursor, raw_record, staging_for, strava_activity
    from fitness_pipeline.tasks.prepare import remove_stale_rows

    with transaction(schema) as cur:  # what an extract of athlete 7 landed after their purge, and the default's
        for batch in ("r1/strava_activity", "r1/strava_activity/athlete-7"):
            cur.execute("INSERT INTO raw_record (batch_id, seq, payload) VALUES (%s, 0, '{}')", (batch,))
        cur.execute("INSERT INTO stage_strava_activity (batch_id, seq, id, start_date, raw, athlete_id) "
                    "VALUES ('r1/strava_activity/athlete-7', 0, 5, now(), '{}', 7)")
    remove_stale_rows(schema, [raw_record, extract_cursor, staging_for(strava_activity)])
    assert query(schema, "SELECT batch_id FROM raw_record") == [("r1/strava_activity",)]
    assert query(schema, "SELECT count(*) FROM stage_strava_activity") == [(0,)]
