"""Apply :mod:`fitness_pipeline.schema` to a database, idempotently.

Creates missing tables and indexes, adds missing columns, and widens the seed
article's column types in place (``varchar(50)`` names, ``timestamp`` instants,
``bigint`` upload ids, float seconds) so an existing database keeps its data.
Staging tables are UNLOGGED and keep their rows inline (see :data:`STAGING_TOAST_TUPLE_TARGET`);
an existing logged one is switched over in place, with its rows.
Then the views of :mod:`fitness_pipeline.views`: created when missing, replaced in place
(``CREATE OR REPLACE VIEW``) when their definition changed by columns added at the end, dropped and
created again (with the views of ours that read them) when it changed otherwise. A view is compared
as PostgreSQL itself prints it (``pg_get_viewdef``), so an unchanged view is not touched.
Everything runs in one transaction under an advisory lock, so concurrent runs
(a backfill) neither race nor see a half-made schema. A column with no safe cast, or rows that
would break a unique key and differ, raise :class:`SchemaError` with what to do (identical
duplicates are one record stored twice: one is kept); with ``groups`` (the DAG passes one per
source) such a problem leaves only that group's tables as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable

from fitness_pipeline.db import DIALECT, transaction
from fitness_pipeline.errors import NeedsPersonError
from fitness_pipeline.schema import (
    ATHLETE_ID,
    DEFAULT_ATHLETE_ID,
    DEFAULT_ATHLETE_NAME,
    MANAGED_COLUMNS,
    RETIRED_CONSTRAINTS,
    STAGING,
    athlete,
    metadata,
)
from fitness_pipeline.views import VIEWS, View

log = logging.getLogger(__name__)

_LOCK_KEY = 0x66697473  # any constant: serializes schema changes across tasks

#: Staging tables: a row stays inline and uncompressed up to this size (the maximum). A staged activity
#: is just over the default 2 KB, so PostgreSQL tried to compress its hard-to-compress ``raw`` and moved
#: it to TOAST, only for the merge to read it back: COPY into staging took twice as long (issue 8).
STAGING_TOAST_TUPLE_TARGET = 8160

# (existing udt_name, wanted udt_name) -> USING expression; {col} is the quoted column.
_SAFE_CASTS = {
    ("varchar", "text"): "{col}::text",
    ("bpchar", "text"): "{col}::text",
    ("int8", "numeric"): "{col}::numeric",
    ("int4", "numeric"): "{col}::numeric",
    ("int4", "int8"): "{col}::bigint",
    ("float8", "int4"): "round({col})::integer",
    ("float4", "int4"): "round({col})::integer",
    # the seed stored UTC instants without a zone
    ("timestamp", "timestamptz"): "{col} AT TIME ZONE 'UTC'",
    # the seed's record_date was a DateTime holding dates at midnight
    ("timestamp", "date"): "{col}::date",
}


@dataclass
class SchemaChanges:
    """What :func:`ensure_schema` did; empty when the schema was already current."""

    created_tables: list[str] = field(default_factory=list)
    added_columns: list[str] = field(default_factory=list)
    altered_columns: list[str] = field(default_factory=list)
    created_indexes: list[str] = field(default_factory=list)
    altered_tables: list[str] = field(default_factory=list)
    #: views created or changed, as ``"<name>: created|replaced|recreated|commented"``
    views: list[str] = field(default_factory=list)
    #: duplicate rows removed before a unique index could be made, as ``"<table>: <n> identical rows"``
    removed_duplicates: list[str] = field(default_factory=list)
    #: the groups (sources, or ``"views"``) whose schema could not be brought up to date -> what to do; their
    #: tables were left as they were, everything else was applied
    problems: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.created_tables or self.added_columns or self.altered_columns or self.created_indexes
                    or self.altered_tables or self.views or self.removed_duplicates or self.problems)

    def _mark(self) -> dict[str, int]:
        return {name: len(value) for name, value in vars(self).items() if isinstance(value, list)}

    def _undo(self, mark: dict[str, int]) -> None:
        """Forget what was recorded since ``mark`` (its savepoint was rolled back)."""
        for name, length in mark.items():
            del getattr(self, name)[length:]


class SchemaError(NeedsPersonError):
    """A table cannot be brought up to date without a person: the message says which table and column,
    what was found, what was expected and how to fix it."""


def ensure_schema(conn: Any, meta: sa.MetaData = metadata, tables: list[sa.Table] | None = None,
                  views: Sequence[View] | None = None,
                  groups: Mapping[str, Sequence[sa.Table]] | None = None) -> SchemaChanges:
    """Bring the database reached by DB-API ``conn`` up to ``meta`` (or only ``tables``), then ``views``
    (default: :data:`fitness_pipeline.views.VIEWS` when the whole default schema is applied, none otherwise).
    Returns what changed.

    ``groups`` (name -> tables, e.g. each source's tables) isolates problems: each group is applied under
    a SAVEPOINT, and one that fails (:class:`SchemaError`, or PostgreSQL refusing a statement) is rolled
    back and reported in ``problems`` while the other groups, the tables in no group and the views still
    are applied (a view that cannot be made is reported as problem ``"views"``). Without ``groups`` the
    first problem raises: :class:`SchemaError` (or PostgreSQL's error), and nothing is changed.
    """
    if views is None:
        views = VIEWS if meta is metadata and tables is None else []
    wanted = list(tables if tables is not None else meta.sorted_tables)
    grouped = {name: [t for t in wanted if t in set(members)] for name, members in (groups or {}).items()}
    in_groups = {t.name for members in grouped.values() for t in members}
    changes = SchemaChanges()
    with transaction(conn) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%(key)s)", {"key": _LOCK_KEY})
        state = _SchemaState(cur, list(views), changes)
        for table in wanted:
            if table.name not in in_groups:
                state.apply(table)
        for name, members in grouped.items():
            if members:
                _isolated(state, name, lambda members=members: [state.apply(t) for t in members])
        if athlete in wanted and athlete.name in state.applied:
            # the default athlete: whose rows every row from before athletes is, and whose tokens the Connections hold
            cur.execute(str(pg.insert(athlete).values(id=DEFAULT_ATHLETE_ID, name=DEFAULT_ATHLETE_NAME)
                            .on_conflict_do_nothing().compile(dialect=DIALECT, compile_kwargs={"literal_binds": True})))
        staging = {t.name for t in STAGING.values()}
        _tune_staging(cur, [t.name for t in wanted if t.name in staging and t.name in state.applied], changes)
        if groups is None:
            _ensure_views(cur, list(views), changes, state.grants)
        elif views:
            _isolated(state, "views", lambda: _ensure_views(cur, list(views), changes, state.grants))
    if changes.problems:
        log.error("Schema: left as they were: %s", "; ".join(f"{k}: {v}" for k, v in changes.problems.items()))
    if changes:
        log.info("Schema updated: %s", changes)
    return changes


class _SchemaState:
    """What :func:`ensure_schema` knows of the database while it applies tables one by one."""

    def __init__(self, cur: Any, views: list[View], changes: SchemaChanges) -> None:
        self.cur, self.views, self.changes = cur, views, changes
        self.existing = _existing_columns(cur)
        self.existing_indexes = _existing_indexes(cur)
        self.primary_keys = _existing_primary_keys(cur)
        self.type_names: dict[str, str] = {}  # compiled type -> udt_name, asked of the server once each
        self.dropped_views: list[str] = []  # a column type cannot change under a view: ours go first, come back
        self.grants: dict[str, list[str]] = {}  # the GRANTs of the views dropped, given again once they are back
        self.applied: set[str] = set()

    def snapshot(self) -> Any:
        return list(self.dropped_views), dict(self.grants), set(self.applied), set(self.existing_indexes)

    def restore(self, snapshot: Any) -> None:
        self.dropped_views, self.grants, self.applied, self.existing_indexes = (
            list(snapshot[0]), dict(snapshot[1]), set(snapshot[2]), set(snapshot[3]))

    def apply(self, table: sa.Table) -> None:
        cur, changes = self.cur, self.changes
        if table.name not in self.existing:
            cur.execute(str(CreateTable(table).compile(dialect=DIALECT)))
            changes.created_tables.append(table.name)
            for index in table.indexes:
                cur.execute(str(CreateIndex(index).compile(dialect=DIALECT)))
                changes.created_indexes.append(str(index.name))
            self.applied.add(table.name)
            return
        _upgrade_table(cur, table, self.existing[table.name], changes, self.type_names,
                       before_type_change=lambda: _drop_views(cur, self.views, self.dropped_views, self.grants))
        for retired in RETIRED_CONSTRAINTS.get(table.name, ()):
            if retired in self.existing_indexes:  # a constraint's index is named after it
                quote = DIALECT.identifier_preparer.quote
                cur.execute(f"ALTER TABLE {quote(table.name)} DROP CONSTRAINT IF EXISTS {quote(retired)}")
                self.existing_indexes.discard(retired)
                changes.altered_tables.append(f"{table.name}: constraint {retired} dropped")
        if ATHLETE_ID in table.c:
            self.key_per_athlete(table)
        key = [c.name for c in table.primary_key.columns]
        if key and self.primary_keys.get(table.name) != key:
            # an older table keyed otherwise (the seed's fitbit_calories had id): the loader's
            # ON CONFLICT needs a unique index on our key
            name = f"uq_{table.name}_{'_'.join(key)}"
            if name not in self.existing_indexes:
                _remove_identical_duplicates(cur, table, key, self.existing[table.name], changes)
                columns = ", ".join(DIALECT.identifier_preparer.quote(c) for c in key)
                cur.execute(f"CREATE UNIQUE INDEX {name} ON {DIALECT.identifier_preparer.quote(table.name)} "
                            f"({columns})")
                changes.created_indexes.append(name)
                self.existing_indexes.add(name)
        for index in table.indexes:
            if index.name not in self.existing_indexes:
                cur.execute(str(CreateIndex(index).compile(dialect=DIALECT)))
                changes.created_indexes.append(str(index.name))
                self.existing_indexes.add(str(index.name))
        for unique in _unique_constraints(table):
            if unique.name not in self.existing_indexes:  # PostgreSQL names a constraint's index after it
                # spelled out: SQLAlchemy's AddConstraint would leave the constraint out of every later CreateTable
                quote = DIALECT.identifier_preparer.quote
                cur.execute(f"ALTER TABLE {quote(table.name)} ADD CONSTRAINT {quote(str(unique.name))} "
                            f"UNIQUE ({', '.join(quote(c.name) for c in unique.columns)})")
                changes.created_indexes.append(str(unique.name))
                self.existing_indexes.add(str(unique.name))
        self.applied.add(table.name)

    def key_per_athlete(self, table: sa.Table) -> None:
        """A table from before there were several athletes is keyed by the record alone (``id``, a calorie
        day's ``record_date``): that unique index or constraint goes, and the key with ``athlete_id`` comes
        (every existing row is the default athlete's, so it holds them all). A dropped primary key is added
        again on the wider key; the caller makes a unique index instead where a key column holds NULLs."""
        cur, quote = self.cur, DIALECT.identifier_preparer.quote
        keys = [[c.name for c in table.primary_key.columns], *([c.name for c in u.columns]
                                                               for u in _unique_constraints(table))]
        narrower = {frozenset(key) - {ATHLETE_ID} for key in keys if ATHLETE_ID in key}
        cur.execute(
            "SELECT i.relname, con.conname, con.contype, array_agg(a.attname::text) FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(x.indkey) "
            "LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid AND con.conrelid = t.oid "
            "WHERE t.relname = %(table)s AND t.relnamespace = current_schema()::regnamespace AND x.indisunique "
            "GROUP BY i.relname, con.conname, con.contype", {"table": table.name})
        dropped_primary_key = False
        for index, constraint, kind, columns in cur.fetchall():
            if frozenset(columns) not in narrower:
                continue
            if constraint is not None:
                cur.execute(f"ALTER TABLE {quote(table.name)} DROP CONSTRAINT {quote(constraint)}")
                dropped_primary_key |= kind == "p"
            else:
                cur.execute(f"DROP INDEX {quote(index)}")
            self.existing_indexes.discard(index)
            self.changes.altered_tables.append(f"{table.name}: unique ({', '.join(sorted(columns))}) is now "
                                               "unique per athlete")
        key = [c.name for c in table.primary_key.columns]
        if dropped_primary_key:
            self.primary_keys.pop(table.name, None)
            cur.execute(f"SELECT count(*) FROM {quote(table.name)} WHERE "
                        + " OR ".join(f"{quote(c)} IS NULL" for c in key))
            if cur.fetchone()[0] == 0:
                _remove_identical_duplicates(cur, table, key, self.existing[table.name], self.changes)
                cur.execute(f"ALTER TABLE {quote(table.name)} ADD PRIMARY KEY ({', '.join(map(quote, key))})")
                self.primary_keys[table.name] = key


def _unique_constraints(table: sa.Table) -> list[sa.UniqueConstraint]:
    """``table``'s named unique constraints of several columns (a column's own ``unique=True`` is made with
    the table and never changes)."""
    return sorted((c for c in table.constraints if isinstance(c, sa.UniqueConstraint) and c.name),
                  key=lambda c: str(c.name))


def _isolated(state: _SchemaState, group: str, apply: Any) -> None:
    """Run ``apply`` under a SAVEPOINT; on failure roll it back and record the problem of ``group``."""
    cur, changes = state.cur, state.changes
    mark, snapshot = changes._mark(), state.snapshot()
    cur.execute("SAVEPOINT fitness_schema_group")
    try:
        apply()
    except Exception as error:
        if group == "views" and any(state.dropped_views):
            # a group dropped our views to change a column under them: without them back (and their GRANTs)
            # nothing may be kept; the whole upgrade rolls back and says why
            raise
        try:
            cur.execute("ROLLBACK TO SAVEPOINT fitness_schema_group")
        except Exception:
            raise error from None  # the connection itself is gone: not a problem of this group
        changes._undo(mark)
        state.restore(snapshot)
        changes.problems[group] = _describe(error)
        return
    cur.execute("RELEASE SAVEPOINT fitness_schema_group")


def _describe(error: Exception) -> str:
    """What a person needs to know of ``error``: our own message, or PostgreSQL's primary message and
    SQLSTATE (never its detail, which quotes row values)."""
    if isinstance(error, NeedsPersonError):
        return str(error)
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None) or type(error).__name__
    state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return f"PostgreSQL refused the upgrade: {primary}{f' (SQLSTATE {state})' if state else ''}"


def _remove_identical_duplicates(cur: Any, table: sa.Table, key: list[str], columns: dict[str, str],
                                 changes: SchemaChanges) -> None:
    """Before a unique index on ``key``: rows sharing a key and equal in every column the schema keeps
    (apart from the key, columns unique of their own such as the seed's id, and the load timestamps) are
    one record stored twice: keep one. Rows sharing a key but differing raise :class:`SchemaError`."""
    quote = DIALECT.identifier_preparer.quote
    unique = {c.name for c in table.columns if c.unique} | {c.name for u in _unique_constraints(table)
                                                              for c in u.columns if c.name != ATHLETE_ID}
    compared = [c.name for c in table.columns if c.name in columns and c.name not in {*key, *unique, *MANAGED_COLUMNS}]
    keys = ", ".join(quote(c) for c in key)
    row = f"ROW({', '.join(quote(c) for c in compared)})" if compared else "1"
    name = quote(table.name)
    not_null = " AND ".join(f"{quote(c)} IS NOT NULL" for c in key)  # NULLs never clash in a unique index
    cur.execute(f"SELECT count(*), coalesce(sum(n - 1), 0), count(*) FILTER (WHERE variants > 1) FROM ("
                f"SELECT count(*) AS n, count(DISTINCT {row}) AS variants FROM {name} WHERE {not_null} "
                f"GROUP BY {keys} HAVING count(*) > 1) d")
    groups, surplus, differing = cur.fetchone()
    if not groups:
        return
    if differing:
        raise SchemaError(
            f"Table {table.name}: {differing} value(s) of ({', '.join(key)}) appear on several rows that differ "
            f"(in {', '.join(compared) or 'no column'}); {', '.join(key)} must be unique for the loader. Found: "
            f"{groups} duplicated key(s); expected: one row each. Fix: keep the right row of each and delete "
            f"the others (SELECT {keys}, count(*) FROM {name} GROUP BY {keys} HAVING count(*) > 1 lists them), "
            "then trigger fitness_sync again.")
    matching = " AND ".join(f"a.{quote(c)} = b.{quote(c)}" for c in key)
    cur.execute(f"DELETE FROM {name} a USING {name} b WHERE {matching} AND a.ctid > b.ctid")
    changes.removed_duplicates.append(f"{table.name}: {int(surplus)} identical rows")
    log.warning("Table %s: removed %d rows identical to another row of the same %s (one record stored twice)",
                table.name, int(surplus), ", ".join(key))


def _upgrade_table(cur: Any, table: sa.Table, columns: dict[str, str], changes: SchemaChanges,
                   type_names: dict[str, str], before_type_change: Any = None) -> None:
    quote = DIALECT.identifier_preparer.quote
    for column in table.columns:
        if column.name not in columns:
            if column.server_default is None and not column.nullable:
                # existing rows have no value for it: added as nullable, old rows keep NULL
                column = column._copy()
                column.nullable = True
            ddl = CreateColumn(column).compile(dialect=DIALECT)
            cur.execute(f"ALTER TABLE {quote(table.name)} ADD COLUMN {ddl}")
            changes.added_columns.append(f"{table.name}.{column.name}")
            continue
        have, want = columns[column.name], _udt_name(cur, column, type_names)
        if have == want:
            continue
        using = _SAFE_CASTS.get((have, want))
        if using is None:
            wanted_type = column.type.compile(dialect=DIALECT)
            raise SchemaError(
                f"Column {table.name}.{column.name} is {have}, expected {want} ({wanted_type}), and there is no "
                f"cast that cannot lose data. Fix: convert it yourself (ALTER TABLE {quote(table.name)} ALTER "
                f"COLUMN {quote(column.name)} TYPE {wanted_type} USING <expression>), or rename the old column "
                f"to keep it (ALTER TABLE ... RENAME COLUMN), then trigger fitness_sync again.")
        col = quote(column.name)
        if before_type_change is not None:
            before_type_change()
        cur.execute(
            f"ALTER TABLE {quote(table.name)} ALTER COLUMN {col} TYPE "
            f"{column.type.compile(dialect=DIALECT)} USING {using.format(col=col)}"
        )
        changes.altered_columns.append(f"{table.name}.{column.name}: {have} -> {want}")


def _existing_views(cur: Any, views: list[View]) -> set[str]:
    """Which of ``views`` exist in the current schema."""
    cur.execute("SELECT c.relname FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace "
                "AND c.relkind = 'v' AND c.relname = ANY(%(names)s)", {"names": [v.name for v in views]})
    return {row[0] for row in cur.fetchall()}


def _drop_views(cur: Any, views: list[View], dropped: list[str], grants: dict[str, list[str]]) -> None:
    """Drop the existing ones of ``views`` (dependents first), once; :func:`_ensure_views` creates them again."""
    if dropped or not views:
        return
    existing = _existing_views(cur, views)
    for view in reversed(views):
        if view.name in existing:
            grants[view.name] = _drop_view(cur, view.name, {v.name for v in views})
            dropped.append(view.name)
    dropped.append("")  # done, even when there was none


def view_sql(view: View) -> str:
    """The view's ``SELECT``, compiled for PostgreSQL with its constants inline (a view has no parameters)."""
    return str(view.select.compile(dialect=DIALECT, compile_kwargs={"literal_binds": True}))


def _ensure_views(cur: Any, views: list[View], changes: SchemaChanges, grants: dict[str, list[str]]) -> None:
    """Create, replace or recreate ``views`` (in dependency order) whose definition differs from the database's."""
    if not views:
        return
    quote = DIALECT.identifier_preparer.quote
    existing = _existing_views(cur, views)
    dropped: set[str] = set()
    for position, view in enumerate(views):
        name, sql = quote(view.name), view_sql(view)
        if view.name in existing and view.name not in dropped:
            change = _compare_view(cur, view, sql)
            if change == "replaced":
                cur.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
            elif change == "recreated":
                # columns renamed, retyped, reordered or removed: CREATE OR REPLACE cannot; those of our views
                # that read this one (listed after it) go first and are created again below, with their GRANTs
                readers = _reading_views(cur, view.name)
                for later in reversed(views[position:]):
                    if later.name in readers | {view.name} and later.name in existing and later.name not in dropped:
                        grants[later.name] = _drop_view(cur, later.name, {v.name for v in views})
                        dropped.add(later.name)
                cur.execute(f"CREATE VIEW {name} AS {sql}")
                _grant(cur, grants.pop(view.name, []))
            if change is None and _view_comment(cur, view.name) == view.comment:
                continue
            _comment_view(cur, view)
            changes.views.append(f"{view.name}: {change or 'commented'}")
            continue
        cur.execute(f"CREATE VIEW {name} AS {sql}")
        _grant(cur, grants.pop(view.name, []))
        _comment_view(cur, view)
        changes.views.append(f"{view.name}: {'recreated' if view.name in dropped else 'created'}")


class DependentViewError(NeedsPersonError):
    """A view that is not ours reads one of ours that an upgrade must drop and create again."""


def _drop_view(cur: Any, name: str, ours: set[str]) -> list[str]:
    """Drop our view ``name``; returns the GRANT statements that give its privileges again once it is back.

    A view of someone else's reading it (a BI tool's) is not dropped with it (``CASCADE`` would do that
    silently): :class:`DependentViewError` says which, and the schema stays as it was.
    """
    foreign = sorted(_reading_views(cur, name) - ours)
    if foreign:
        raise DependentViewError(
            f"The view(s) {', '.join(foreign)} read {name}, which this upgrade must drop and create again (its "
            f"columns change). Drop them, let ensure_schema run (trigger fitness_sync), then create them again.")
    cur.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, "
        "a.privilege_type, a.is_grantable FROM pg_class c, aclexplode(c.relacl) a "
        "WHERE c.relname = %(name)s AND c.relnamespace = current_schema()::regnamespace AND a.grantee <> c.relowner",
        {"name": name})
    quoted = DIALECT.identifier_preparer.quote(name)
    statements = [f"GRANT {privilege} ON {quoted} TO {grantee}{' WITH GRANT OPTION' if grantable else ''}"
                  for grantee, privilege, grantable in cur.fetchall()]
    cur.execute(f"DROP VIEW {quoted}")
    return statements


def _grant(cur: Any, statements: list[str]) -> None:
    for statement in statements:
        cur.execute(statement)


def _reading_views(cur: Any, name: str) -> set[str]:
    """The views of the current schema that read view ``name``, directly or through others."""
    cur.execute(
        "WITH RECURSIVE reader(oid) AS ("
        " SELECT c.oid FROM pg_class c WHERE c.relname = %(name)s AND c.relnamespace = current_schema()::regnamespace"
        " UNION SELECT r.ev_class FROM reader JOIN pg_depend d ON d.refobjid = reader.oid"
        " AND d.classid = 'pg_rewrite'::regclass JOIN pg_rewrite r ON r.oid = d.objid AND r.ev_class <> reader.oid)"
        " SELECT c.relname FROM reader JOIN pg_class c ON c.oid = reader.oid WHERE c.relname <> %(name)s",
        {"name": name})
    return {row[0] for row in cur.fetchall()}


_WANTED_VIEW = "fitness_pipeline_wanted_view"


def _compare_view(cur: Any, view: View, sql: str) -> str | None:
    """None when the database's view ``view.name`` is ``sql`` as PostgreSQL prints it; ``"replaced"`` when only
    columns were added at its end (``CREATE OR REPLACE VIEW`` does it), ``"recreated"`` otherwise.

    ``sql`` becomes a temporary view first, so that both are printed by the server (the same SQLAlchemy
    statement compiles to different text in 1.4 and 2, whitespace and casts, which PostgreSQL normalizes)."""
    quote = DIALECT.identifier_preparer.quote
    cur.execute(f"CREATE TEMPORARY VIEW {quote(_WANTED_VIEW)} AS {sql}")
    try:
        cur.execute(
            "SELECT pg_get_viewdef(c.oid) FROM pg_class c WHERE c.relname = %(name)s AND c.relnamespace = "
            "current_schema()::regnamespace UNION ALL SELECT pg_get_viewdef(c.oid) FROM pg_class c "
            "WHERE c.relname = %(wanted)s AND c.relnamespace = pg_my_temp_schema()",
            {"name": view.name, "wanted": _WANTED_VIEW})
        have, want = (row[0] for row in cur.fetchall())
        if have == want:
            return None
        have_columns, want_columns = _view_columns(cur, view.name, "current_schema()::regnamespace"), \
            _view_columns(cur, _WANTED_VIEW, "pg_my_temp_schema()")
        return "replaced" if want_columns[:len(have_columns)] == have_columns else "recreated"
    finally:
        cur.execute(f"DROP VIEW {quote(_WANTED_VIEW)}")


def _view_columns(cur: Any, name: str, namespace: str) -> list[tuple[Any, ...]]:
    cur.execute("SELECT a.attname, a.atttypid, a.atttypmod, a.attcollation FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid "
                f"WHERE c.relname = %(name)s AND c.relnamespace = {namespace} AND a.attnum > 0 "
                "AND NOT a.attisdropped ORDER BY a.attnum", {"name": name})
    return [tuple(row) for row in cur.fetchall()]


def _view_comment(cur: Any, name: str) -> str | None:
    cur.execute("SELECT obj_description(c.oid, 'pg_class') FROM pg_class c WHERE c.relname = %(name)s "
                "AND c.relnamespace = current_schema()::regnamespace", {"name": name})
    row = cur.fetchone()
    return row[0] if row else None


def _comment_view(cur: Any, view: View) -> None:
    # a literal, not a parameter: utility statements take none (psycopg 3 binds on the server)
    comment = sa.literal(view.comment, sa.Text).compile(dialect=DIALECT, compile_kwargs={"literal_binds": True})
    cur.execute(f"COMMENT ON VIEW {DIALECT.identifier_preparer.quote(view.name)} IS {comment}")


def _tune_staging(cur: Any, names: list[str], changes: SchemaChanges) -> None:
    """Make the staging tables ``names`` UNLOGGED with inline rows, idempotently.

    Their rows live from one task to the next and are loaded or re-staged by a retry: skipping
    the WAL halves what staging writes. After a crash PostgreSQL empties an UNLOGGED table, which
    the load detects (``loader.staged_count``). ``SET UNLOGGED`` rewrites a logged table with its
    rows (an existing user's staged batch survives the upgrade).
    """
    if not names:
        return
    quote = DIALECT.identifier_preparer.quote
    option = f"toast_tuple_target={STAGING_TOAST_TUPLE_TARGET}"
    cur.execute("SELECT c.relname, c.relpersistence, coalesce(c.reloptions, '{}') FROM pg_class c "
                "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' "
                "AND c.relname = ANY(%(names)s)", {"names": names})
    just_created = set(changes.created_tables)
    for name, persistence, options in cur.fetchall():
        done = []
        if persistence == "p":
            cur.execute(f"ALTER TABLE {quote(name)} SET UNLOGGED")
            done.append("logged -> unlogged")
        if option not in options:
            cur.execute(f"ALTER TABLE {quote(name)} SET ({option})")
            done.append(option)
        if done and name not in just_created:
            changes.altered_tables.append(f"{name}: {', '.join(done)}")


def _udt_name(cur: Any, column: sa.Column, cache: dict[str, str]) -> str:
    """PostgreSQL's own name for the column's type (``pg_type.typname``, what information_schema's ``udt_name``
    reports), asked of the server rather than derived from SQLAlchemy's spelling: ``TIME`` compiles to
    ``TIME WITHOUT TIME ZONE`` (udt ``time``), ``FLOAT`` is ``float8`` but ``FLOAT(24)`` ``float4``, ``DOUBLE
    PRECISION`` ``float8``, ``VARCHAR(50)`` ``varchar``, ``INTEGER[]`` ``_int4``. The server parses every spelling
    it accepts in DDL, so no table of names can fall behind. ``cache`` maps compiled types to answers."""
    compiled = column.type.compile(dialect=DIALECT)
    if compiled not in cache:
        # to_regtype parses a type name as DDL does (typmods ignored), NULL for an unknown type
        cur.execute("SELECT t.typname FROM pg_type t WHERE t.oid = to_regtype(%(type)s)", {"type": compiled})
        row = cur.fetchone()
        # unknown to the server (e.g. an enum not created yet): the spelling itself, which will not match
        cache[compiled] = str(row[0]) if row else compiled.split("(")[0].strip().lower()
    return cache[compiled]


def _existing_columns(cur: Any) -> dict[str, dict[str, str]]:
    cur.execute(
        "SELECT table_name, column_name, udt_name FROM information_schema.columns "
        "WHERE table_schema = current_schema()"
    )
    tables: dict[str, dict[str, str]] = {}
    for table_name, column_name, udt_name in cur.fetchall():
        tables.setdefault(table_name, {})[column_name] = udt_name
    return tables


def _existing_primary_keys(cur: Any) -> dict[str, list[str]]:
    cur.execute(
        "SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc "
        "JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = tc.constraint_name "
        "AND kcu.table_schema = tc.table_schema "
        "WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = current_schema() "
        "ORDER BY tc.table_name, kcu.ordinal_position"
    )
    keys: dict[str, list[str]] = {}
    for table_name, column_name in cur.fetchall():
        keys.setdefault(table_name, []).append(column_name)
    return keys


def _existing_indexes(cur: Any) -> set[str]:
    cur.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
    return {row[0] for row in cur.fetchall()}
