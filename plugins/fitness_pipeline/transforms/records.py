"""A batch of records in, rows and quarantine entries out: one bad record never sinks its batch.

A record that cannot be turned into a row raises :class:`~fitness_pipeline.transforms.fields.RecordError`
with a reason a person can act on; :func:`transform_batch` turns it into a :class:`QuarantineEntry`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fitness_pipeline.transforms.fields import MAX_DEPTH, TOO_DEEP, RecordError, as_int, nesting_depth

#: one row of a target table: its data columns by name
Row = dict[str, Any]


@dataclass(frozen=True)
class QuarantineEntry:
    """A record for the quarantine table."""

    record_key: str
    reason: str
    payload: str  # the record as JSON text


@dataclass
class TransformResult:
    """The rows of a batch and its quarantined records; ``companions``: the same for other tables
    whose rows the batch also brings (heights with weights), by table name."""

    rows: list[Row] = field(default_factory=list)
    quarantined: list[QuarantineEntry] = field(default_factory=list)
    companions: dict[str, TransformResult] = field(default_factory=dict)


def transform_batch(records: Iterable[Any], transform: Callable[[Any], Row],
                    key: Callable[[Any], str] | None = None) -> TransformResult:
    """Apply ``transform`` to each record; bad records go to ``quarantined`` with their reason.

    ``key`` gives a quarantined record's quarantine key: it must equal the target's primary key as
    text, so that a quarantined record counts as present upstream (default :func:`record_key`).
    """
    result = TransformResult()
    for record in records:
        try:
            result.rows.append(transform(record))
        except RecordError as error:
            result.quarantined.append(quarantine_entry(record, str(error), key))
        except (ValueError, OverflowError, TypeError, ArithmeticError) as error:
            # values no reader foresaw (a 5,000-digit number, the year 10**20): still one record, not the batch
            result.quarantined.append(quarantine_entry(record, f"unreadable value ({type(error).__name__})", key))
        except RecursionError:
            # the readers are iterative and check the depth first; this is the net for anything that is not
            result.quarantined.append(quarantine_entry(record, f"{TOO_DEEP} (RecursionError)", key))
    return result


def quarantine_entry(record: Any, reason: str, key: Callable[[Any], str] | None = None) -> QuarantineEntry:
    """A quarantine entry for ``record``; its key falls back to a hash when ``key`` cannot read one."""
    try:
        record_id = (key or record_key)(record)
        record_id.encode("utf-8")
    except (RecordError, ValueError, OverflowError, TypeError, AttributeError, KeyError, UnicodeEncodeError,
            RecursionError):
        record_id = _hash_key(record)
    return QuarantineEntry(record_id, reason, quarantine_json(record))


def record_key(record: Any) -> str:
    """The record's integer ``id`` as text when it has a readable one, else a stable hash."""
    if isinstance(record, Mapping):
        try:
            record_id = as_int(record, "id")
        except (RecordError, ValueError):
            record_id = None
        if record_id is not None:
            return str(record_id)
    return _hash_key(record)


def _hash_key(record: Any) -> str:
    return "sha256:" + hashlib.sha256(quarantine_json(record).encode("ascii")).hexdigest()


#: what stands in the quarantine payload for the part of a record nested below :data:`MAX_DEPTH`
CUT = f"<cut: {TOO_DEEP}>"


def quarantine_json(record: Any) -> str:
    """JSON text for the quarantine: ASCII, so even lone surrogates and NUL are stored (escaped).

    A record nested deeper than :data:`~fitness_pipeline.transforms.fields.MAX_DEPTH` levels is stored
    down to that level, each deeper object or array replaced by the string :data:`CUT`
    (``json.dumps`` of the whole would raise ``RecursionError``)."""
    if nesting_depth(record) > MAX_DEPTH:
        record = _cut(record, MAX_DEPTH)
    try:
        return json.dumps(record, ensure_ascii=True, separators=(",", ":"))
    except (RecursionError, ValueError, TypeError) as error:  # cannot happen for decoded JSON; never sink the batch
        return json.dumps(f"<not stored: {type(error).__name__}>")


def _cut(value: Any, levels: int) -> Any:
    """``value`` down to ``levels`` levels of nesting (recursion at most ``levels`` deep)."""
    if not isinstance(value, (Mapping, list, tuple)):
        return value
    if levels <= 0:
        return CUT
    if isinstance(value, Mapping):
        return {k: _cut(v, levels - 1) for k, v in value.items()}
    return [_cut(v, levels - 1) for v in value]
