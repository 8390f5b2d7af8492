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
(a backfill) neither race nor see a half-made schema.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.schema import CreateColumn, CreateIndex, CreateTable

from fitness_pipeline.db import DIALECT, transaction
from fitness_pipeline.errors import NeedsPersonError
from fitness_pipeline.schema import STAGING, metadata
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

    def __bool__(self) -> bool:
        return bool(self.created_tables or self.added_columns or self.altered_columns or self.created_indexes
                    or self.altered_tables or self.views)


def ensure_schema(conn: Any, meta: sa.MetaData = metadata, tables: list[sa.Table] | None = None,
                  views: Sequence[View] | None = None) -> SchemaChanges:
    """Bring the database reached by DB-API ``conn`` up to ``meta`` (or only ``tables``), then ``views``
    (default: :data:`fitness_pipeline.views.VIEWS` when the whole default schema is applied, none otherwise).
    Returns what changed."""
    if views is None:
        views = VIEWS if meta is metadata and tables is None else []
    changes = SchemaChanges()
    with transaction(conn) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%(key)s)", {"key": _LOCK_KEY})
        existing = _existing_columns(cur)
        existing_indexes = _existing_indexes(cur)
        primary_keys = _existing_primary_keys(cur)
        type_names: dict[str, str] = {}  # compiled type -> udt_name, asked of the server once each
        dropped_views: list[str] = []  # a column type cannot change under a view: ours go first, come back below
        grants: dict[str, list[str]] = {}  # the GRANTs of the views dropped, given again once they are back
        for table in tables if tables is not None else meta.sorted_tables:
            if table.name not in existing:
                cur.execute(str(CreateTable(table).compile(dialect=DIALECT)))
                changes.created_tables.append(table.name)
                for index in table.indexes:
                    cur.execute(str(CreateIndex(index).compile(dialect=DIALECT)))
                    changes.created_indexes.append(str(index.name))
                continue
            _upgrade_table(cur, table, existing[table.name], changes, type_names,
                           before_type_change=lambda: _drop_views(cur, list(views), dropped_views, grants))
            key = [c.name for c in table.primary_key.columns]
            if key and primary_keys.get(table.name) != key:
                # an older table keyed otherwise (the seed's fitbit_calories had id): the loader's
                # ON CONFLICT needs a unique index on our key; duplicates make this fail, loudly
                name = f"uq_{table.name}_{'_'.join(key)}"
                if name not in existing_indexes:
                    columns = ", ".join(DIALECT.identifier_preparer.quote(c) for c in key)
                    cur.execute(f"CREATE UNIQUE INDEX {name} ON {DIALECT.identifier_preparer.quote(table.name)} "
                                f"({columns})")
                    changes.created_indexes.append(name)
            for index in table.indexes:
                if index.name not in existing_indexes:
                    cur.execute(str(CreateIndex(index).compile(dialect=DIALECT)))
                    changes.created_indexes.append(str(index.name))
        staging = {t.name for t in STAGING.values()}
        _tune_staging(cur, [t.name for t in (tables if tables is not None else meta.sorted_tables)
                            if t.name in staging], changes)
        _ensure_views(cur, list(views), changes, grants)
    if changes:
        log.info("Schema updated: %s", changes)
    return changes


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
            log.warning("Column %s.%s is %s, expected %s: left as it is (migrate it by hand)",
                        table.name, column.name, have, want)
            continue
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
