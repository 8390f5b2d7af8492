"""Reading values out of API JSON: each reader raises :class:`RecordError` naming the field.

Reasons name fields and types, never values (records hold personal data).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from typing import Any

BIGINT_MAX = 2**63 - 1
# str.isdigit() also accepts "²" and "١٧٨٠", which int() refuses or reads differently
DIGITS = re.compile(r"[0-9]+")


class RecordError(ValueError):
    """A record that cannot be loaded; the message is the quarantine reason."""


def dump_json(record: Any) -> str:
    """Compact JSON text of a record, as stored in ``raw``."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


#: how deep a record may nest (objects and arrays, the record itself being level 1). Strava's and
#: Google's records nest 3 to 5 levels; deeper ones are quarantined, and every check here is
#: iterative, so a record of any depth costs one record, never the batch (``json.dumps`` and a
#: recursive walk raise ``RecursionError`` at about 1,000 levels).
MAX_DEPTH = 64
TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"


def nesting_depth(value: Any, *, stop_after: int = MAX_DEPTH) -> int:
    """How many levels of objects and arrays ``value`` nests (0 for a scalar), counted without
    recursion; counting stops at ``stop_after + 1`` (enough to tell "too deep")."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > stop_after:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


def check_depth(record: Any) -> None:
    """Raise :class:`RecordError` when ``record`` nests deeper than :data:`MAX_DEPTH` levels."""
    if nesting_depth(record) > MAX_DEPTH:
        raise RecordError(TOO_DEEP)


def checked_json(record: Mapping[str, Any]) -> str:
    """JSON text of ``record`` that PostgreSQL's jsonb and text types will accept."""
    check_depth(record)  # first: json.dumps itself recurses
    try:
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise RecordError("contains NaN or Infinity, which JSON (and jsonb) does not allow") from None
    if _has_nul(record):
        raise RecordError("contains a NUL character (\\u0000), which PostgreSQL cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordError("contains invalid Unicode (an unpaired surrogate)") from None
    return text


def _has_nul(value: Any) -> bool:
    """Whether any string (key or value) inside ``value`` holds a NUL character (no recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


def as_int(record: Mapping[str, Any], key: str, *, required: bool = False, maximum: int = BIGINT_MAX) -> int | None:
    value = record.get(key)
    if value is None:
        if required:
            raise RecordError(f"{key} is missing")
        return None
    if isinstance(value, bool):
        raise RecordError(f"{key} must be an integer, got a boolean")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and len(value) < 40 and DIGITS.fullmatch(value.strip()):
        value = int(value)
    if not isinstance(value, int):
        raise RecordError(f"{key} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise RecordError(f"{key} is out of range")
    return value


def as_float(record: Mapping[str, Any], key: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"{key} must be a number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:
        raise RecordError(f"{key} is out of range") from None
    if not math.isfinite(value):
        raise RecordError(f"{key} must be a finite number")
    return value


def as_seconds(record: Mapping[str, Any], key: str) -> int | None:
    value = as_float(record, key)
    if value is None:
        return None
    if not 0 <= value <= 2**31 - 1:
        raise RecordError(f"{key} is out of range")
    return round(value)


def as_text(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError(f"{key} must be a string, got {type(value).__name__}")
    return value


def as_bool(record: Mapping[str, Any], key: str) -> bool | None:
    value = record.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise RecordError(f"{key} must be true or false, got {type(value).__name__}")


def as_utc_instant(record: Mapping[str, Any], key: str) -> dt.datetime:
    """An ISO 8601 instant with a zone (``Z`` or an offset), as an aware UTC datetime."""
    value = _parse_iso(record, key)
    if value.tzinfo is None:
        raise RecordError(f"{key} has no time zone")
    return value.astimezone(dt.UTC)


def as_wall_clock(record: Mapping[str, Any], key: str) -> dt.datetime | None:
    """A local wall-clock time as a naive datetime. Any zone suffix is dropped, not applied:
    Strava writes ``start_date_local`` with a ``Z`` although it is local time."""
    if record.get(key) is None:
        return None
    return _parse_iso(record, key).replace(tzinfo=None)


def _parse_iso(record: Mapping[str, Any], key: str) -> dt.datetime:
    value = record.get(key)
    if value is None:
        raise RecordError(f"{key} is missing")
    if not isinstance(value, str):
        raise RecordError(f"{key} must be an ISO 8601 string, got {type(value).__name__}")
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise RecordError(f"{key} is not an ISO 8601 date-time") from None
