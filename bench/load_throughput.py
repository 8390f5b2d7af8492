"""Load throughput of ``strava_activity``: our set-based upsert against raw COPY and its peers.

What it measures (one embedded PostgreSQL, one database, the same synthetic rows for every method):

* ``transform``: ``strava_activity_row`` over N synthetic Strava SummaryActivity dicts (Python only).
* ``ours: insert``: ``loader.upsert_rows`` into an empty table, committed (rows whose key the table
  lacks are COPYed straight in; the others go through a temp staging table and one
  ``INSERT ... SELECT ... ON CONFLICT DO UPDATE ... WHERE changed``).
* ``ours: unchanged``: the same call with the same rows on the full table (should write no tuple).
* ``ours: update 10%``: one field (``name``) changed in 10% of the activities, loaded onto the full table
  that the insert left (vacuumed first).
* ``DAG path``: what a history import pays, into an empty table: ``strava_activity_row`` over the records,
  ``stage_rows`` into the persistent staging table (commit), then ``staged_count`` (when the loader has it),
  ``merge_staged`` and ``delete_staged`` (commit). Shown with and without the transform's share.
* ``raw COPY``: ``db.copy_rows`` of the same rows straight into the empty target (this machine's limit).
* ``PostgresHook.insert_rows``: ``insert_rows(table, rows, target_fields, replace=True, replace_index=["id"],
  commit_every=5000)`` (``INSERT ... ON CONFLICT (id) DO UPDATE``, psycopg 3 pipelined executemany, its own
  connection, a commit per 5,000 rows) into the empty table, then again with the same rows (unchanged).
* ``dlt merge``: dlt (``[postgres]``, psycopg2) ``pipeline.run(rows, write_disposition="merge",
  primary_key="id")`` into its own dataset (schema), a fresh pipeline each round, then again with the same
  rows (unchanged). Its rows carry ``upload_id`` as text (dlt's JSON writer rejects ints beyond 64 bits) and
  ``raw`` as text (its own ``raw`` holds such ints too), so its target does not parse JSON: that favours it.
  Skipped, with a note, when dlt is not installed (``requirements-dev.txt`` has it).
* ``seed ORM merge``: SQLAlchemy ``session.merge()`` per row inside ``begin_nested()`` (a SAVEPOINT),
  one commit, on a SUBSET (``--orm-rows``, default 5,000) because it runs at ~1k rows/s.

Every timed figure is wall-clock time of the load call *including its COMMIT*, with the rows already
transformed (list of dicts) in memory (except the DAG path's first figure); raw COPY and ``insert_rows``
turn each dict into a tuple inside their timing, as ``stage_rows`` does. Before each timed run the table is
brought to its starting state, then ``VACUUM ANALYZE`` (for the runs on a full table) and ``CHECKPOINT`` run
untimed, so one run's dirty pages are not written during the next one.

How to read the output: the script runs ``--repeat`` rounds (default 2), each running every method once
in the order above, so a busy spell on a shared machine hits all methods alike: compare the ratios, not
the seconds. The table shows the BEST run (lowest seconds) and the MEDIAN run's seconds; rows/s and
``x COPY`` are computed from the best runs. ``WAL MB`` is the write-ahead log the best run generated;
``written`` is, for an unchanged re-load, the tuples PostgreSQL counted as written (``n_tup_ins + n_tup_upd``
deltas from ``pg_stat_user_tables``) summed over the rounds. The per-round ratio lines show how steady the
machine was. The closing lines compare against the targets: ``our insert / raw COPY`` >= 0.85, ``our insert
/ PostgresHook.insert_rows insert`` >= 1.1, and 0 tuples written by our unchanged re-loads.
Nothing is asserted: the exit code is non-zero only if the script crashes.

Run: ``cd /work/main && PYTHONPATH=plugins:devtools .venv/bin/python bench/load_throughput.py
[--rows N] [--repeat N] [--orm-rows N] [--no-peers] [--plugins DIR]`` (or ``make bench``). ``--plugins DIR``
imports ``fitness_pipeline`` from another tree (a copy with an older ``loader.py``) to compare versions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / d) for d in ("plugins", "devtools")]

from fitness_devtools.embedded_stack import EmbeddedPostgres, airflow_env, start_postgres  # noqa: E402

DATABASE = "bench_load"

# --- synthetic Strava SummaryActivity records ---------------------------------------------------

_NAMES = [
    "Morning Run", "Lunch Ride", "Evening Ride", "Afternoon Walk", "Night Swim", "Recovery jog",
    "Tour de l'Île d'Orléans", "Zürich ↔ Basel", "Säntis Höhenmeter", "Café ride ☕", "朝ラン", "皇居ラン 5周",
    "Пробежка по набережной", "Вечерний заезд", "جري الصباح", "ריצת בוקר", "Διαδρομή στην Αθήνα",
    "🚴 Commute", "🏃‍♀️ Parkrun PB!", "Čtvrteční výjezd", "Łódź – Kraków", "São Paulo longão", "Ølstokke rundt",
    'Intervals 6×800m "hard"', "tab\tand back\\slash", "Hill repeats\nx10",
]
_SPORTS = [  # (type, sport_type, metres per second range, has distance)
    ("Run", "Run", (2.4, 4.6), True), ("Run", "TrailRun", (1.8, 3.6), True),
    ("Ride", "Ride", (5.5, 10.5), True), ("Ride", "MountainBikeRide", (3.5, 7.0), True),
    ("Ride", "GravelRide", (5.0, 8.5), True), ("VirtualRide", "VirtualRide", (7.0, 11.0), True),
    ("Walk", "Walk", (1.1, 1.7), True), ("Hike", "Hike", (0.8, 1.4), True),
    ("Swim", "Swim", (0.6, 1.2), True), ("WeightTraining", "WeightTraining", (0.0, 0.0), False),
    ("Workout", "Pickleball", (0.0, 0.0), False),  # a newer sport_type the old `type` cannot express
]
_ZONES = [
    ("(GMT+00:00) Europe/London", 0), ("(GMT+01:00) Europe/Zurich", 3600), ("(GMT+02:00) Europe/Athens", 7200),
    ("(GMT+09:00) Asia/Tokyo", 32400), ("(GMT-08:00) America/Los_Angeles", -28800),
    ("(GMT-05:00) America/New_York", -18000), ("(GMT-03:00) America/Sao_Paulo", -10800),
    ("(GMT+05:30) Asia/Kolkata", 19800),
]
_DEVICES = ["Garmin Edge 1030", "Garmin Forerunner 965", "Wahoo ELEMNT BOLT", "Apple Watch Series 9",
            "Zwift", "COROS PACE 3", "Strava App", None]
_POLYLINE = "".join(chr(c) for c in range(63, 127))  # Google encoded-polyline alphabet (includes \ and `)
_EPOCH = dt.datetime(2015, 1, 1, tzinfo=dt.UTC)
_SPAN_SECONDS = int((dt.datetime(2026, 6, 1, tzinfo=dt.UTC) - _EPOCH).total_seconds())


def _iso_z(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


_POLYLINE_POOL = "".join(random.Random(7).choices(_POLYLINE, k=1 << 16))


def _polyline(rng: random.Random) -> str:
    """A random-looking encoded polyline of 80..700 characters (a slice of a fixed random pool: fast)."""
    start = rng.randrange(len(_POLYLINE_POOL) - 700)
    return _POLYLINE_POOL[start:start + rng.randrange(80, 700)]


def synthetic_activity(rng: random.Random, index: int) -> dict[str, Any]:
    """One SummaryActivity shaped like Strava's documented example, with the fields varied."""
    activity_type, sport_type, speeds, has_distance = rng.choice(_SPORTS)
    zone, offset = rng.choice(_ZONES)
    athlete_id = 100_000 + rng.randrange(50)
    moving = rng.randrange(600, 4 * 3600)
    elapsed = moving + rng.randrange(0, 900)
    speed = rng.uniform(*speeds)
    distance = round(speed * moving, 1) if has_distance else 0.0
    start = _EPOCH + dt.timedelta(seconds=rng.randrange(_SPAN_SECONDS))
    heart = rng.random() < 0.7
    watts = sport_type.endswith("Ride") and rng.random() < 0.6
    manual = rng.random() < 0.03
    lat, lng = rng.uniform(-45, 60), rng.uniform(-120, 140)
    upload_id = None if manual else rng.randrange(10**18, 10**21)  # real ones overflow BIGINT
    activity_id = 1_000_000_000 + index * 37 + rng.randrange(37)  # unique, increasing, irregular
    name = rng.choice(_NAMES)
    if rng.random() < 0.3:
        name = f"{name} #{rng.randrange(1, 500)}"
    record: dict[str, Any] = {
        "resource_state": 2,
        "athlete": {"id": athlete_id, "resource_state": 1},
        "name": name,
        "distance": distance,
        "moving_time": moving,
        "elapsed_time": elapsed,
        "total_elevation_gain": round(rng.uniform(0, 2500), 1) if has_distance else 0,
        "type": activity_type,
        "sport_type": sport_type,
        "workout_type": rng.choice([None, None, 0, 1, 2, 3, 10, 11, 12]),
        "id": activity_id,
        "external_id": None if manual else f"garmin_push_{rng.randrange(10**15, 10**16)}",
        "upload_id": upload_id,
        "upload_id_str": None if upload_id is None else str(upload_id),
        "start_date": _iso_z(start),
        "start_date_local": _iso_z(start + dt.timedelta(seconds=offset)),  # wall clock with Strava's "Z"
        "timezone": zone,
        "utc_offset": float(offset),
        "location_city": None,
        "location_state": None,
        "location_country": rng.choice(["United Kingdom", "Switzerland", "Japan", "United States", "Brazil"]),
        "achievement_count": rng.randrange(0, 12),
        "kudos_count": rng.randrange(0, 80),
        "comment_count": rng.randrange(0, 6),
        "athlete_count": rng.randrange(1, 8),
        "photo_count": 0,
        "map": {
            "id": f"a{activity_id}",
            "summary_polyline": _polyline(rng) if has_distance else "",
            "resource_state": 2,
        },
        "trainer": sport_type == "VirtualRide",
        "commute": rng.random() < 0.1,
        "manual": manual,
        "private": rng.random() < 0.15,
        "visibility": rng.choice(["everyone", "everyone", "followers_only", "only_me"]),
        "flagged": False,
        "gear_id": rng.choice([None, f"b{rng.randrange(10**7, 10**8)}", f"g{rng.randrange(10**7, 10**8)}"]),
        "start_latlng": [round(lat, 6), round(lng, 6)] if has_distance else [],
        "end_latlng": [round(lat + rng.uniform(-0.05, 0.05), 6), round(lng + rng.uniform(-0.05, 0.05), 6)]
        if has_distance else [],
        "average_speed": round(speed, 3),
        "max_speed": round(speed * rng.uniform(1.2, 2.2), 3),
        "average_cadence": round(rng.uniform(60, 180), 1) if rng.random() < 0.6 else None,
        "average_watts": round(rng.uniform(90, 320), 1) if watts else None,
        "weighted_average_watts": rng.randrange(100, 340) if watts else None,
        "kilojoules": round(rng.uniform(100, 3500), 1) if watts else None,
        "device_watts": watts,
        "has_heartrate": heart,
        "average_heartrate": round(rng.uniform(100, 170), 1) if heart else None,
        "max_heartrate": float(rng.randrange(150, 200)) if heart else None,
        "heartrate_opt_out": False,
        "display_hide_heartrate_option": heart,
        "elev_high": round(rng.uniform(0, 3000), 1) if has_distance else None,
        "elev_low": round(rng.uniform(0, 500), 1) if has_distance else None,
        "pr_count": rng.randrange(0, 4),
        "total_photo_count": rng.randrange(0, 3),
        "has_kudoed": False,
        "suffer_score": rng.randrange(1, 300) if heart else None,
        "device_name": rng.choice(_DEVICES),
    }
    if rng.random() < 0.05:
        record["description"] = "".join(rng.choices(string.ascii_letters + " éü✓", k=rng.randrange(10, 200)))
    return record


def synthetic_activities(count: int, seed: int = 20260101) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [synthetic_activity(rng, i) for i in range(count)]


# --- timing ---------------------------------------------------------------------------------------


@dataclass
class Measurement:
    method: str
    rows: int
    seconds: list[float] = field(default_factory=list)
    wal_bytes: list[int] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.rows / self.best

    @property
    def best_wal_mb(self) -> float:
        return self.wal_bytes[self.seconds.index(self.best)] / 1e6 if self.wal_bytes else float("nan")


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


class Bench:
    """The benchmark database: the loader's connection (PostgresHook) and an autocommit one for maintenance."""

    def __init__(self, postgres: EmbeddedPostgres, conn: Any) -> None:
        import psycopg

        self.postgres = postgres
        self.conn = conn
        self.maintenance = psycopg.connect(postgres.dsn(DATABASE), autocommit=True)

    def close(self) -> None:
        self.maintenance.close()
        self.conn.close()

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """Run ``statement`` in its own transaction on the loader's connection."""
        with closing(self.conn.cursor()) as cur:
            cur.execute(statement)
            rows = cur.fetchall() if cur.description else []
        self.conn.commit()
        return rows

    def empty(self) -> None:
        self.sql("TRUNCATE strava_activity")
        self.settle(vacuum=False)

    def settle(self, *, vacuum: bool = True) -> None:
        """Untimed: fresh statistics and no dirty pages left over from the previous step."""
        if vacuum:
            self.maintenance.execute("VACUUM (ANALYZE) strava_activity")
        self.maintenance.execute("CHECKPOINT")

    def wal_lsn(self) -> str:
        return str(self.maintenance.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])

    def wal_since(self, lsn: str) -> int:
        return int(self.maintenance.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s::pg_lsn)", (lsn,)).fetchone()[0])

    def tuple_stats(self, schema: str = "public") -> tuple[int, int, int]:
        """(n_tup_ins, n_tup_upd, n_tup_hot_upd) of strava_activity, as tests/test_loader.py reads them."""
        self.sql("SELECT pg_stat_force_next_flush()")  # this backend's pending counters go out at commit
        with closing(self.conn.cursor()) as cur:
            cur.execute("SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                        "WHERE relname = 'strava_activity' AND schemaname = %s", (schema,))
            stats = cur.fetchone()
        self.conn.commit()
        return (0, 0, 0) if stats is None else (int(stats[0]), int(stats[1]), int(stats[2]))

    def written_by(self, run: Callable[[], Any], schema: str = "public") -> int:
        """Run ``run()`` and return the tuples it wrote to strava_activity (inserted + updated)."""
        before = self.tuple_stats(schema)
        run()
        self.maintenance.execute("SELECT pg_sleep(0.5)")  # untimed: other backends flush their counters
        after = self.tuple_stats(schema)
        return (after[0] - before[0]) + (after[1] - before[1])

    def count(self) -> int:
        return int(self.sql("SELECT count(*) FROM strava_activity")[0][0])

    def measure(self, measurement: Measurement, prepare: Callable[[], None], run: Callable[[], Any]) -> Any:
        """``prepare()`` untimed, then one timed ``run()``; returns what ``run`` returned."""
        prepare()
        lsn = self.wal_lsn()
        seconds, result = timed(run)
        measurement.wal_bytes.append(self.wal_since(lsn))
        measurement.seconds.append(seconds)
        return result


# --- the methods ----------------------------------------------------------------------------------


def our_upsert(bench: Bench, rows: Sequence[dict[str, Any]]) -> Any:
    from fitness_pipeline.db import transaction
    from fitness_pipeline.loader import upsert_rows
    from fitness_pipeline.schema import strava_activity

    with transaction(bench.conn) as cur:
        return upsert_rows(cur, strava_activity, rows)


def raw_copy(bench: Bench, rows: Sequence[dict[str, Any]]) -> int:
    from fitness_pipeline.db import copy_rows, transaction
    from fitness_pipeline.schema import data_columns, strava_activity

    names = [c.name for c in data_columns(strava_activity)]
    with transaction(bench.conn) as cur:
        return copy_rows(cur, strava_activity.name, names, (tuple(row[n] for n in names) for row in rows))


def dag_path(bench: Bench, activities: Sequence[dict[str, Any]], batch: str) -> tuple[Any, float]:
    """A history import's transform + load: returns (counts, seconds of the transform alone)."""
    from fitness_pipeline import loader
    from fitness_pipeline.db import transaction
    from fitness_pipeline.schema import STAGING, strava_activity
    from fitness_pipeline.transforms.strava import strava_activity_row

    staging = STAGING[strava_activity.name]
    start = time.perf_counter()
    rows = [strava_activity_row(a) for a in activities]
    transform_seconds = time.perf_counter() - start
    with transaction(bench.conn) as cur:  # the transform task
        staged = loader.stage_rows(cur, strava_activity, batch, rows)
    with transaction(bench.conn) as cur:  # the load task
        if hasattr(loader, "staged_count") and loader.staged_count(cur, staging, batch) != staged:
            raise RuntimeError("staged rows lost")
        counts = loader.merge_staged(cur, strava_activity, batch)
        loader.delete_staged(cur, staging, batch)
    return counts, transform_seconds


def hook_insert_rows(rows: Sequence[dict[str, Any]]) -> int:
    """Airflow's generic way: ``PostgresHook.insert_rows`` with ON CONFLICT (id) DO UPDATE."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from fitness_pipeline.schema import data_columns, strava_activity

    names = [c.name for c in data_columns(strava_activity)]
    hook = PostgresHook(postgres_conn_id="fitness_db")
    hook.insert_rows(
        strava_activity.name, [tuple(row[n] for n in names) for row in rows], target_fields=names,
        replace=True, replace_index=["id"], commit_every=5000)
    return len(rows)


class DltMerge:
    """dlt's ``merge`` write disposition into PostgreSQL, one fresh pipeline and dataset per round."""

    def __init__(self, postgres: EmbeddedPostgres, workdir: Path) -> None:
        os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")  # no network
        os.environ.setdefault("PROVIDERS__ENABLE_AIRFLOW_SECRETS", "false")  # no Airflow Variable look-ups
        import dlt

        self.dlt = dlt
        self.credentials = (f"postgresql://postgres:unused@localhost:{postgres.port}/{DATABASE}"
                            f"?host={postgres.socket_dir}")
        self.workdir = workdir
        self.round = 0
        self.pipeline: Any = None

    @property
    def dataset(self) -> str:
        return f"dlt_bench_{self.round}"

    def new_round(self) -> None:
        self.round += 1
        self.pipeline = self.dlt.pipeline(
            pipeline_name=f"bench_load_{self.round}", pipelines_dir=str(self.workdir / "dlt"),
            destination=self.dlt.destinations.postgres(credentials=self.credentials), dataset_name=self.dataset)

    def run(self, rows: Sequence[dict[str, Any]]) -> Any:
        return self.pipeline.run(rows, table_name="strava_activity", write_disposition="merge", primary_key="id")

    @staticmethod
    def values(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**row, "upload_id": None if row["upload_id"] is None else str(row["upload_id"])} for row in rows]


def orm_engine(postgres: EmbeddedPostgres) -> Any:
    import sqlalchemy as sa

    url = sa.engine.URL.create("postgresql+psycopg", username="postgres", host=postgres.socket_dir,
                               port=postgres.port, database=DATABASE)
    return sa.create_engine(url, pool_size=1)


class Activity:
    """The seed article's ORM class, mapped imperatively onto ``schema.strava_activity``."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def map_activity() -> None:
    from sqlalchemy.orm import registry

    from fitness_pipeline.schema import strava_activity

    registry().map_imperatively(Activity, strava_activity)


def orm_merge(engine: Any, rows: Sequence[dict[str, Any]]) -> int:
    """Per row: a SAVEPOINT, ``session.merge`` (SELECT by key, then INSERT or UPDATE); one COMMIT at the end."""
    from sqlalchemy.orm import Session

    with Session(engine) as session, session.begin():
        for row in rows:
            with session.begin_nested():
                session.merge(Activity(**row))
    return len(rows)


def orm_values(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same rows for the ORM: JSONB takes a Python object (our rows carry ``raw`` as JSON text)."""
    return [{**row, "raw": json.loads(row["raw"])} for row in rows]


# --- the run --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000, help="synthetic activities (default 100000)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per measurement (default 2)")
    parser.add_argument("--orm-rows", type=int, default=5_000,
                        help="subset of rows for the slow ORM merge (default 5000; 0 skips it)")
    parser.add_argument("--update-fraction", type=float, default=0.10,
                        help="share of rows changed for the update measurement (default 0.10)")
    parser.add_argument("--no-peers", action="store_true", help="skip PostgresHook.insert_rows and dlt")
    parser.add_argument("--plugins", type=Path, default=None,
                        help="import fitness_pipeline from this folder instead (e.g. a copy with an older loader)")
    return parser.parse_args(argv)


@contextmanager
def embedded_database(workdir: Path) -> Iterator[EmbeddedPostgres]:
    postgres = start_postgres(workdir / "pgdata", keep=False)
    try:
        postgres.create_database(DATABASE)
        os.environ["AIRFLOW_CONN_FITNESS_DB"] = postgres.connection_env(DATABASE)
        yield postgres
    finally:
        postgres.stop()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.plugins is not None:
        sys.path.insert(0, str(args.plugins.resolve()))
    repeat = max(1, args.repeat)
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    # Airflow reads its configuration at import: set it before anything imports airflow.
    os.environ.update(airflow_env(workdir / "airflow"))
    import psycopg

    try:
        with embedded_database(workdir) as postgres:
            from fitness_pipeline.db import connect
            from fitness_pipeline.ddl import ensure_schema

            conn = connect()  # PostgresHook("fitness_db")
            ensure_schema(conn)
            bench = Bench(postgres, conn)
            try:
                run(bench, postgres, args, repeat, psycopg, workdir)
            finally:
                bench.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(bench: Bench, postgres: EmbeddedPostgres, args: argparse.Namespace, repeat: int, psycopg: Any,
        workdir: Path) -> None:
    from fitness_pipeline.transforms.fields import dump_json
    from fitness_pipeline.transforms.strava import strava_activity_row

    server_version = bench.sql("SHOW server_version")[0][0]
    print(f"Python {platform.python_version()} ({sys.implementation.name}), PostgreSQL {server_version} (pgserver, "
          f"Unix socket), driver psycopg {psycopg.__version__} ({psycopg.pq.__impl__} implementation, "
          f"libpq {psycopg.pq.version()}) via PostgresHook; {os.cpu_count()} CPUs")

    seconds, activities = timed(lambda: synthetic_activities(args.rows))
    raw_bytes = sum(len(dump_json(a).encode()) for a in activities[:1000]) / min(1000, len(activities))
    print(f"generated {len(activities):,} synthetic SummaryActivity records in {seconds:.1f} s "
          f"(raw JSON ~{raw_bytes:,.0f} bytes each)")
    print(f"best and median of {repeat} runs; rows/s and 'x COPY' from the best run\n")

    transform = Measurement("transform (Python only)", len(activities))
    rows: list[dict[str, Any]] = []
    for _ in range(repeat):
        seconds, rows = timed(lambda: [strava_activity_row(a) for a in activities])
        transform.seconds.append(seconds)

    step = max(1, round(1 / args.update_fraction)) if args.update_fraction > 0 else len(rows) + 1
    changed_rows = list(rows)  # one field changed in a share of the records, transformed again (untimed)
    for i in range(0, len(activities), step):
        changed_rows[i] = strava_activity_row({**activities[i], "name": f"{activities[i]['name']} (edited)"})
    subset = orm_values(rows[: args.orm_rows]) if args.orm_rows > 0 else []
    engine = None
    if subset:
        map_activity()
        engine = orm_engine(postgres)

    peers = not args.no_peers
    dlt_merge = None
    if peers:
        try:
            dlt_merge = DltMerge(postgres, workdir)
        except ImportError as error:
            print(f"dlt not installed ({error}): its rows are skipped\n")
    dlt_rows = DltMerge.values(rows) if dlt_merge is not None else []

    insert = Measurement("ours: insert (empty table)", len(rows))
    unchanged = Measurement("ours: unchanged re-load", len(rows))
    update = Measurement(f"ours: update {args.update_fraction:.0%} of rows", len(rows))
    dag = Measurement("DAG path: transform+stage+merge (empty)", len(rows))
    dag_load = Measurement("DAG path: stage+merge only (empty)", len(rows))
    copy = Measurement("raw COPY into target (baseline)", len(rows))
    hook_insert = Measurement("PostgresHook.insert_rows(replace) insert", len(rows))
    hook_unchanged = Measurement("PostgresHook.insert_rows(replace) unchanged", len(rows))
    dlt_insert = Measurement("dlt merge: insert (new dataset)", len(rows))
    dlt_unchanged = Measurement("dlt merge: unchanged re-load", len(rows))
    orm = Measurement(f"seed ORM merge+SAVEPOINT (SUBSET {len(subset):,})", len(subset))
    counts: dict[str, Any] = {}
    written: dict[str, int] = {"ours": 0, "hook": 0, "dlt": 0}  # tuples written by the unchanged re-loads
    # Rounds: every method once per round, so a busy spell on the machine hits all of them alike.
    for round_no in range(repeat):
        # 1. our loader into the empty table
        counts["insert"] = bench.measure(insert, bench.empty, lambda: our_upsert(bench, rows))
        # 2. the same rows again: nothing changed, nothing should be written
        written["ours"] += bench.written_by(
            lambda: counts.__setitem__("unchanged", bench.measure(unchanged, bench.settle,
                                                                  lambda: our_upsert(bench, rows))))
        # 3. one field changed in a share of the rows, on the full (vacuumed) table
        counts["update"] = bench.measure(update, bench.settle, lambda: our_upsert(bench, changed_rows))
        # 4. the DAG's way (persistent staging, two transactions) into the empty table, transform included
        batch = f"bench-{round_no}"
        counts["dag"], transform_seconds = bench.measure(
            dag, bench.empty, lambda batch=batch: dag_path(bench, activities, batch))
        dag_load.seconds.append(dag.seconds[-1] - transform_seconds)
        dag_load.wal_bytes.append(dag.wal_bytes[-1])
        # 5. this machine's limit: COPY straight into the target
        bench.measure(copy, bench.empty, lambda: raw_copy(bench, rows))
        counts["copy"] = bench.count()
        if peers:
            # 6. Airflow's generic upsert, into the empty table and then unchanged
            bench.measure(hook_insert, bench.empty, lambda: hook_insert_rows(rows))
            counts["hook"] = bench.count()
            written["hook"] += bench.written_by(
                lambda: bench.measure(hook_unchanged, bench.settle, lambda: hook_insert_rows(rows)))
        if dlt_merge is not None:
            # 7. dlt's merge into a new dataset, then unchanged
            dlt_merge.new_round()
            bench.measure(dlt_insert, bench.settle, lambda: dlt_merge.run(dlt_rows))
            written["dlt"] += bench.written_by(
                lambda: bench.measure(dlt_unchanged, bench.settle, lambda: dlt_merge.run(dlt_rows)),
                schema=dlt_merge.dataset)
            counts["dlt"] = int(bench.sql(f"SELECT count(*) FROM {dlt_merge.dataset}.strava_activity")[0][0])
            bench.maintenance.execute(f"DROP SCHEMA {dlt_merge.dataset} CASCADE")  # untimed
            bench.maintenance.execute(f"DROP SCHEMA IF EXISTS {dlt_merge.dataset}_staging CASCADE")
        # 8. the seed article's way, on a subset
        if engine is not None:
            bench.measure(orm, bench.empty, lambda: orm_merge(engine, subset))
            counts["orm"] = bench.count()
    if engine is not None:
        engine.dispose()
    measurements = [insert, unchanged, update, dag, dag_load, copy]
    if peers:
        measurements += [hook_insert, hook_unchanged]
    if dlt_merge is not None:
        measurements += [dlt_insert, dlt_unchanged]
    if subset:
        measurements.append(orm)
    written_of = {unchanged.method: written["ours"], hook_unchanged.method: written["hook"],
                  dlt_unchanged.method: written["dlt"]}

    header = (f"{'method':<46} {'rows':>8} {'best s':>8} {'median s':>9} {'rows/s':>10} {'x COPY':>7} "
              f"{'WAL MB':>7} {'written':>8}")
    print(header)
    print("-" * len(header))
    print(f"{transform.method:<46} {transform.rows:>8,} {transform.best:>8.3f} {transform.median:>9.3f} "
          f"{transform.rate:>10,.0f} {'':>7} {'':>7} {'':>8}")
    for m in measurements:
        tuples = f"{written_of[m.method]:,}" if m.method in written_of else ""
        print(f"{m.method:<46} {m.rows:>8,} {m.best:>8.3f} {m.median:>9.3f} {m.rate:>10,.0f} "
              f"{m.rate / copy.rate:>7.2f} {m.best_wal_mb:>7.1f} {tuples:>8}")
    print()
    print(f"counts returned: insert {counts['insert'].as_dict()}; unchanged {counts['unchanged'].as_dict()}; "
          f"update {counts['update'].as_dict()}; DAG path {counts['dag'].as_dict()}; "
          f"raw COPY {counts['copy']:,} rows in table")
    if peers:
        print(f"PostgresHook.insert_rows: {counts['hook']:,} rows in table after its insert")
    if dlt_merge is not None:
        print(f"dlt merge: {counts['dlt']:,} rows in its table after the re-load")
    if subset:
        print(f"ORM merge: {counts['orm']:,} rows in table after; its rows/s is from the {orm.rows:,}-row SUBSET")
    print(f"'written' = n_tup_ins + n_tup_upd deltas in pg_stat_user_tables over the {repeat} unchanged re-loads")
    print(f"transform + our insert, end to end: {len(rows) / (transform.best + insert.best):,.0f} rows/s")
    print()

    def per_round(label: str, slow: Measurement, fast: Measurement) -> None:
        paired = [s / f for f, s in zip(fast.seconds, slow.seconds, strict=True)]
        print(f"per-round {label}: {', '.join(f'{r:.2f}' for r in paired)} (median {statistics.median(paired):.2f})")

    per_round("our insert / raw COPY", copy, insert)
    per_round("DAG path load / raw COPY", copy, dag_load)
    if peers:
        per_round("our insert / insert_rows insert", hook_insert, insert)
    print(f"our insert / raw COPY = {insert.rate / copy.rate:.2f} (target >= 0.85)")
    if peers:
        print(f"our insert / PostgresHook.insert_rows insert = {insert.rate / hook_insert.rate:.2f} (target >= 1.1)")
    print(f"tuples written on our unchanged re-load: {written['ours']} (target 0)")


if __name__ == "__main__":
    main()
