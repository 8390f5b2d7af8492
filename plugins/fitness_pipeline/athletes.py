"""The athletes one deployment syncs: the ``athlete`` table, and the command that manages it.

The default athlete (``athlete.id`` 1, named ``default``) is the person of a single-athlete setup: their
tokens come from the Connections' extra, as before there were athletes, and every row loaded before
belongs to them. Every other athlete authorizes the app with ``python -m fitness_pipeline.authorize
strava --athlete NAME`` (and ``fitbit``), which adds them here and puts their tokens in the token store.

``python -m fitness_pipeline.athletes`` lists who is connected and when each token was last refreshed
(never a token), disables and enables an athlete, says which Airflow users may see an athlete's
training page, and purges an athlete: all their rows in every table, their quarantine entries and their
tokens, in one transaction, after a confirmation. Strava's terms ask exactly that when an athlete revokes
access (see the README's "Several athletes").
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from fitness_pipeline.db import FITNESS_DB_CONN_ID, connect, execute, transaction
from fitness_pipeline.errors import NeedsPersonError
from fitness_pipeline.schema import (
    ATHLETE_ID,
    DEFAULT_ATHLETE_ID,
    athlete,
    extract_cursor,
    metadata,
    oauth_token,
    quarantine,
    raw_record,
    staging_for,
    strava_activity,
    strava_activity_detail,
    strava_gear,
    strava_lap,
    webhook_event,
)

log = logging.getLogger(__name__)

#: how the reason of the (kept) default athlete starts once purged
PURGED = "purged"


class AthleteError(NeedsPersonError):
    """An athlete that does not exist, or a change the registry refuses (the message says what to do)."""


@dataclass(frozen=True)
class Athlete:
    id: int
    name: str
    active: bool
    strava_athlete_id: int | None = None
    google_user_id: str | None = None
    inactive_reason: str | None = None
    airflow_users: tuple[str, ...] | None = None

    def to_xcom(self) -> dict[str, Any]:
        """What a mapped task of the DAG gets: the id and the name (the name labels the task in the UI)."""
        return {"athlete_id": self.id, "name": self.name}


_COLUMNS = (athlete.c.id, athlete.c.name, athlete.c.active, athlete.c.strava_athlete_id, athlete.c.google_user_id,
            athlete.c.inactive_reason, athlete.c.airflow_users)


def _athlete(row: Sequence[Any]) -> Athlete:
    users = row[6]
    return Athlete(*row[:6], airflow_users=tuple(users) if users is not None else None)


def all_athletes(cur: Any) -> list[Athlete]:
    """Every athlete, by id."""
    execute(cur, sa.select(*_COLUMNS).order_by(athlete.c.id))
    return [_athlete(row) for row in cur.fetchall()]


def find(cur: Any, name: str) -> Athlete:
    """The athlete called ``name`` (or, for digits, with that id: names are never all digits);
    :class:`AthleteError` if there is none."""
    execute(cur, sa.select(*_COLUMNS).where(athlete.c.name == name))
    row = cur.fetchone()
    if row is None and name.isdigit():
        execute(cur, sa.select(*_COLUMNS).where(athlete.c.id == int(name)))
        row = cur.fetchone()
    if row is None:
        raise AthleteError(f"No athlete is called {name!r}: python -m fitness_pipeline.athletes list shows who is "
                           "connected; python -m fitness_pipeline.authorize strava --athlete NAME adds one.")
    return _athlete(row)


def of_strava_athlete(cur: Any, owner_id: int) -> int | None:
    """Our athlete whose Strava athlete id is ``owner_id``: from the athlete table, else the one whose activities
    name that owner (the default athlete, whose Strava id the Connection does not say); None: not ours."""
    execute(cur, sa.select(athlete.c.id).where(athlete.c.strava_athlete_id == owner_id))
    row = cur.fetchone()
    if row is None:
        execute(cur, sa.select(strava_activity.c.athlete_id).where(strava_activity.c.owner == owner_id).limit(1))
        row = cur.fetchone()
    return int(row[0]) if row else None


def of_google_user(conn: Any, health_user_id: str) -> int | None:
    """Our athlete whose Google Health user is ``health_user_id``; None: not ours. The default athlete's user is
    not in the Connection: a user the table does not know is asked of the API (``users/me/identity``) with the
    default athlete's tokens, and kept as theirs (also when the Connection now holds another account). No Google
    connection, or one not authorized, means not theirs; an API error that a retry may mend is raised."""
    with transaction(conn) as cur:
        execute(cur, sa.select(athlete.c.id).where(athlete.c.google_user_id == health_user_id))
        row = cur.fetchone()
    if row is not None:
        return int(row[0])
    from fitness_pipeline.hooks.fitbit import FitbitHook

    hook = FitbitHook()
    try:
        default_user = str(hook.identity().get("healthUserId") or "")
    except Exception as error:
        if not isinstance(error, NeedsPersonError) and type(error).__name__ != "AirflowNotFoundException":
            raise  # a timeout, a 5xx, a rate limit: the notification waits for the next try
        log.info("The default athlete has no working Google connection (%s): the notification is not theirs",
                 type(error).__name__)
        return None
    finally:
        hook.close()
    if not default_user:
        return None
    taken = sa.select(athlete.c.id).where(athlete.c.google_user_id == default_user, athlete.c.id != DEFAULT_ATHLETE_ID)
    with transaction(conn) as cur:  # unless another athlete is that account (then it is not the default's)
        execute(cur, sa.update(athlete).where(athlete.c.id == DEFAULT_ATHLETE_ID, ~sa.exists(taken),
                                              athlete.c.google_user_id.is_distinct_from(default_user))
                .values(google_user_id=default_user, updated_at=sa.func.now()))
    return DEFAULT_ATHLETE_ID if default_user == health_user_id else None


def to_sync(cur: Any, names: Sequence[str] = ()) -> list[Athlete]:
    """The active athletes (only those named in ``names``, if any: a name that is unknown or inactive fails, so a
    history import for one athlete never silently imports nothing)."""
    active = [a for a in all_athletes(cur) if a.active]
    if not names:
        return active
    chosen = [find(cur, name) for name in names]
    inactive = [a.name for a in chosen if not a.active]
    if inactive:
        raise AthleteError(f"Athlete(s) {', '.join(inactive)} are inactive: python -m fitness_pipeline.athletes "
                           "enable NAME (after they authorized the app again) to sync them.")
    return [a for a in active if a.id in {c.id for c in chosen}]


def upsert(cur: Any, name: str, *, strava_athlete_id: int | None = None, google_user_id: str | None = None,
           replace: bool = False) -> Athlete:
    """Add athlete ``name``, or update the provider ids of the one of that name; either way active again (they
    have just authorized the app). Returns the athlete.

    Refused (:class:`AthleteError`): an all-digit name (ids are given as digits); a provider account already
    connected as another athlete; and, unless ``replace``, another account of the same provider than the one
    ``name`` authorized before (their rows and page would then show someone else's data)."""
    if not name or name.isdigit():
        raise AthleteError(f"An athlete's name cannot be {name!r}: use letters (digits alone name an id).")
    for column, value in (("strava_athlete_id", strava_athlete_id), ("google_user_id", google_user_id)):
        if value is None:
            continue
        execute(cur, sa.select(athlete.c.name, athlete.c[column] == value).where(
            sa.or_(athlete.c.name == name, athlete.c[column] == value)))
        for holder, same_account in cur.fetchall():
            if holder != name and same_account:
                raise AthleteError(f"That {column.split('_')[0].title()} account is already connected as athlete "
                                   f"{holder!r}: authorize it under that name, or purge {holder!r} first.")
            if holder == name and same_account is False and not replace:
                raise AthleteError(f"Athlete {name!r} authorized another {column.split('_')[0].title()} account "
                                   "before: pass --replace to connect this one instead (their rows stay; purge "
                                   "them first if they are someone else's).")
    values: dict[str, Any] = {"name": name, "active": True, "inactive_reason": None}
    if strava_athlete_id is not None:
        values["strava_athlete_id"] = strava_athlete_id
    if google_user_id is not None:
        values["google_user_id"] = google_user_id
    insert = pg.insert(athlete).values(**values)
    execute(cur, insert.on_conflict_do_update(
        index_elements=[athlete.c.name],
        set_={**{k: insert.excluded[k] for k in values if k != "name"}, "updated_at": sa.func.now()},
    ).returning(*_COLUMNS))
    return _athlete(cur.fetchone())


def hold(cur: Any, athlete_id: int) -> None:
    """Before a transform or load writes rows of ``athlete_id``: lock their athlete row (``FOR SHARE``) until the
    caller's transaction ends, so that a purge (which locks it ``FOR UPDATE`` first) waits for the write and a
    write after a purge finds nothing to write for. :class:`AthleteError` when the athlete was purged (an athlete
    disabled or revoked meanwhile still gets what this run fetched: the next runs leave them out)."""
    execute(cur, sa.select(athlete.c.active, athlete.c.inactive_reason).where(athlete.c.id == athlete_id)
            .with_for_update(read=True))
    row = cur.fetchone()
    if row is None or (not row[0] and str(row[1] or "").startswith(PURGED)):
        raise AthleteError(f"Athlete {athlete_id} was purged while this run went on: nothing of theirs was written. "
                           "Nothing to do (the next runs leave them out).")


def set_active(cur: Any, athlete_id: int, active: bool, reason: str | None = None) -> None:
    """Mark the athlete active, or inactive with ``reason`` (what happened and what to do)."""
    execute(cur, sa.update(athlete).where(athlete.c.id == athlete_id)
            .values(active=active, inactive_reason=None if active else reason, updated_at=sa.func.now()))


def set_users(cur: Any, athlete_id: int, users: Sequence[str] | None) -> None:
    """Which Airflow users may see the athlete's training page (None: every user, while they are the only one)."""
    execute(cur, sa.update(athlete).where(athlete.c.id == athlete_id)
            .values(airflow_users=list(users) if users is not None else None, updated_at=sa.func.now()))


def visible_to(athletes: Sequence[Athlete], user: str) -> list[Athlete]:
    """The athletes Airflow user ``user`` may see: those whose ``airflow_users`` name them, and an athlete with
    no list while they are the only athlete (a single-athlete deployment, as before athletes)."""
    return [a for a in athletes if (a.airflow_users is None and len(athletes) == 1)
            or (a.airflow_users is not None and user in a.airflow_users)]


def personal_tables() -> list[sa.Table]:
    """Every table holding rows about an athlete (``athlete_id``), staging tables included."""
    return [t for t in metadata.sorted_tables if ATHLETE_ID in t.c and t is not athlete]


def strava_accounts(cur: Any, person: Athlete) -> set[str]:
    """The Strava athlete ids of ``person`` (as ``webhook_event.account_id``): theirs in the athlete table and the
    owners of their activities (the default athlete's, whose Strava id the Connection does not say)."""
    execute(cur, sa.select(strava_activity.c.owner).distinct().where(strava_activity.c[ATHLETE_ID] == person.id,
                                                                       strava_activity.c.owner.is_not(None)))
    accounts = {str(owner) for (owner,) in cur.fetchall()}
    if person.strava_athlete_id is not None:
        accounts.add(str(person.strava_athlete_id))
    return accounts


def purge(cur: Any, person: Athlete) -> dict[str, int]:
    """Delete everything about ``person`` in the caller's transaction: their rows in every table, their
    quarantine entries, their tokens and what their unfinished batches left; the athlete row too, except the
    default athlete's (kept, inactive: the Connections still name them). Returns the rows deleted per table."""
    deleted: dict[str, int] = {}
    # first: a transform or load of theirs still writing finishes before (see hold), and none writes after
    execute(cur, sa.select(athlete.c.id).where(athlete.c.id == person.id).with_for_update())
    # the events the providers pushed about them (by the provider's ids of the account: the default athlete's
    # Strava id is known from their activities only, so these are read before the activities go)
    accounts = {"strava": strava_accounts(cur, person), "google": set()}
    if person.google_user_id is not None:
        accounts["google"].add(person.google_user_id)
    for provider, ids in accounts.items():
        if ids:
            execute(cur, sa.delete(webhook_event).where(webhook_event.c.provider == provider,
                                                        webhook_event.c.account_id == sa.any_(
                                                            sa.cast(sorted(ids), pg.ARRAY(sa.Text)))))
            deleted[f"{webhook_event.name} ({provider})"] = cur.rowcount
    for table in personal_tables():
        execute(cur, sa.delete(table).where(table.c[ATHLETE_ID] == person.id))
        deleted[table.name] = cur.rowcount
    # the hand-over tables have no athlete column: their batch ids end with the athlete's
    suffix = "" if person.id == DEFAULT_ATHLETE_ID else f"/athlete-{person.id}"
    for table in (raw_record, extract_cursor):
        # the default athlete's batches are "<run>/<source>"
        owned = table.c.batch_id.like(f"%{suffix}") if suffix else sa.not_(table.c.batch_id.like("%/athlete-%"))
        execute(cur, sa.delete(table).where(owned))
        deleted[table.name] = cur.rowcount
    if person.id == DEFAULT_ATHLETE_ID:
        set_active(cur, person.id, False, f"{PURGED}: put a new refresh token in the Connections, then "
                                          "python -m fitness_pipeline.athletes enable default")
    else:
        execute(cur, sa.delete(athlete).where(athlete.c.id == person.id))
        deleted[athlete.name] = cur.rowcount
    return {name: count for name, count in deleted.items() if count}


#: ``true`` (or 1, yes): an athlete whose Strava authorization is revoked (confirmed by Strava refusing their refresh
#: token) loses their Strava data at once, as Strava's API agreement asks; unset: it stays until ``purge``
PURGE_ON_REVOKE_ENV = "FITNESS_STRAVA_PURGE_ON_REVOKE"
#: the sources whose quarantine entries are Strava data
STRAVA_SOURCES = ("strava_activity", "strava_activity_detail")


def purge_on_revoke(environ: Any = None) -> bool:
    """Whether ``$FITNESS_STRAVA_PURGE_ON_REVOKE`` asks for a revoked athlete's Strava data to be deleted at once."""
    import os

    return str((os.environ if environ is None else environ).get(PURGE_ON_REVOKE_ENV, "")).strip().lower() in (
        "1", "true", "yes", "on")


def purge_strava(cur: Any, person: Athlete) -> dict[str, int]:
    """Delete ``person``'s Strava data in the caller's transaction: their activities (with their details and laps),
    gear, Strava quarantine entries, Strava tokens, the Strava events pushed about them and what their unfinished
    Strava batches left; their Google data stays. The athlete forgets their Strava account (its events are no
    longer kept). Returns the rows deleted per table."""
    deleted: dict[str, int] = {}
    execute(cur, sa.select(athlete.c.id).where(athlete.c.id == person.id).with_for_update())
    accounts = strava_accounts(cur, person)
    if accounts:
        events = sa.select(webhook_event.c.id).where(
            webhook_event.c.provider == "strava",
            webhook_event.c.account_id == sa.any_(sa.cast(sorted(accounts), pg.ARRAY(sa.Text))))
        execute(cur, sa.delete(quarantine).where(
            quarantine.c[ATHLETE_ID] == person.id, quarantine.c.source == "webhook_event",
            quarantine.c.record_key.in_(sa.select(sa.cast(events.subquery().c.id, sa.Text)))))
        deleted["quarantine (Strava events)"] = cur.rowcount
        execute(cur, sa.delete(webhook_event).where(webhook_event.c.id.in_(events)))
        deleted["webhook_event (strava)"] = cur.rowcount
    execute(cur, sa.delete(quarantine).where(quarantine.c[ATHLETE_ID] == person.id,
                                             quarantine.c.source == sa.any_(sa.cast(list(STRAVA_SOURCES),
                                                                                    pg.ARRAY(sa.Text)))))
    deleted[quarantine.name] = cur.rowcount
    for table in (strava_lap, strava_activity_detail, strava_activity, strava_gear):  # laps and details first
        for target in (table, staging_for(table)):
            execute(cur, sa.delete(target).where(target.c[ATHLETE_ID] == person.id))
            deleted[target.name] = cur.rowcount
    suffix = "" if person.id == DEFAULT_ATHLETE_ID else f"/athlete-{person.id}"
    for table in (raw_record, extract_cursor):
        execute(cur, sa.delete(table).where(sa.or_(*(table.c.batch_id.like(f"%/{source}{suffix}")
                                                     for source in STRAVA_SOURCES))))
        deleted[table.name] = cur.rowcount
    execute(cur, sa.delete(oauth_token).where(oauth_token.c[ATHLETE_ID] == person.id,
                                              oauth_token.c.token_key.like("strava:%")))
    deleted[oauth_token.name] = cur.rowcount
    execute(cur, sa.update(athlete).where(athlete.c.id == person.id)
            .values(strava_athlete_id=None, updated_at=sa.func.now()))
    return {name: count for name, count in deleted.items() if count}


def token_refreshes(cur: Any) -> dict[int, list[tuple[str, Any]]]:
    """Per athlete, each stored token's connection type and when it was last refreshed (never a token)."""
    execute(cur, sa.select(oauth_token.c.athlete_id, oauth_token.c.token_key, oauth_token.c.updated_at)
            .order_by(oauth_token.c.token_key))
    refreshed: dict[int, list[tuple[str, Any]]] = {}
    for athlete_id, key, updated_at in cur.fetchall():
        refreshed.setdefault(athlete_id, []).append((key.split(":", 1)[0], updated_at))
    return refreshed


# --- the command -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fitness_pipeline.athletes",
        description="Who fitness_sync syncs: list, disable, enable, set who sees the page, purge.")
    parser.add_argument("--db-conn-id", default=FITNESS_DB_CONN_ID, help="the fitness database's connection")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="athletes, active or not, and when their tokens were last refreshed")
    for name, text in (("disable", "stop syncing the athlete (their data stays)"),
                       ("enable", "sync the athlete again (after they authorized the app again)")):
        commands.add_parser(name, help=text).add_argument("athlete", help="name (or id)")
    users = commands.add_parser("users", help="which Airflow users may see the athlete's training page")
    users.add_argument("athlete", help="name (or id)")
    users.add_argument("users", nargs="*", help="Airflow user names; none: every user while they are the only one")
    purge_command = commands.add_parser(
        "purge", help="delete all of the athlete's rows, quarantine entries and tokens, in one transaction")
    purge_command.add_argument("athlete", help="name (or id)")
    purge_command.add_argument("--yes", metavar="NAME",
                               help="confirm without a prompt by giving the athlete's name again")
    return parser


def run(args: argparse.Namespace, out: TextIO, err: TextIO, ask: Any = input) -> int:
    from fitness_pipeline import sources
    from fitness_pipeline.ddl import ensure_schema
    from fitness_pipeline.tasks.prepare import source_tables

    with closing(connect(args.db_conn_id)) as conn:
        # as the DAG does: one source's schema problem (reported by fitness_sync) does not stop the command
        ensure_schema(conn, groups={spec.id: source_tables(spec) for spec in sources.REGISTRY})
        with transaction(conn) as cur:
            if args.command == "list":
                print_athletes(all_athletes(cur), token_refreshes(cur), out)
                return 0
            person = find(cur, args.athlete)
            if args.command in ("disable", "enable"):
                set_active(cur, person.id, args.command == "enable",
                           "disabled by python -m fitness_pipeline.athletes disable")
                print(f"{person.name}: {args.command}d", file=out)
                return 0
            if args.command == "users":
                set_users(cur, person.id, args.users or None)
                seen_by = ", ".join(args.users) if args.users else "every user while the only athlete"
                print(f"{person.name}: seen by {seen_by}", file=out)
                return 0
            try:
                confirmation = args.yes if args.yes is not None else ask(
                    f"Delete every row, quarantine entry and token of athlete {person.name!r}? Type the name to "
                    "confirm: ")
            except EOFError:  # not a terminal: only --yes NAME confirms
                confirmation = None
            if confirmation != person.name:
                print("Not confirmed: nothing was deleted.", file=err)
                return 1
            deleted = purge(cur, person)
        print(f"{person.name}: purged ({', '.join(f'{n} {t}' for t, n in deleted.items()) or 'nothing stored'})",
              file=out)
        return 0


def print_athletes(athletes: Sequence[Athlete], refreshed: dict[int, list[tuple[str, Any]]], out: TextIO) -> None:
    for person in athletes:
        state = "active" if person.active else f"inactive ({person.inactive_reason or 'no reason recorded'})"
        tokens = ", ".join(f"{kind} refreshed {when.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"
                           for kind, when in refreshed.get(person.id, []))
        users = ", ".join(person.airflow_users) if person.airflow_users is not None else "every user (if only athlete)"
        print(f"{person.id}\t{person.name}\t{state}\ttokens: {tokens or 'none stored'}\tseen by: {users}", file=out)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        return run(args, out, err)
    except NeedsPersonError as error:
        print(str(error), file=err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
