"""What a body too large or too deep to decode does (issue 10, defect 2): a clear error naming the
limit and the endpoint, never the body, in the family that fits."""

from __future__ import annotations

import inspect

import pytest

from fitness_pipeline import errors
from fitness_pipeline.hooks.base import OAuthApiHook
from fitness_pipeline.hooks.fitbit import FitbitHook
from fitness_pipeline.hooks.strava import StravaHook
from tests.unit.stubs import response

URL = "https://www.strava.com/api/v3/athlete/activities"


def deep_body(levels: int) -> bytes:
    return b'[{"name":"secret athlete","x":' + b"[" * levels + b"1" + b"]" * levels + b"}]"


@pytest.mark.parametrize("hook", [StravaHook, FitbitHook])
@pytest.mark.parametrize("levels", [5_000, 100_000])
def test_a_body_too_deep_to_decode_needs_a_person_and_names_the_limit(hook: type, levels: int) -> None:
    with pytest.raises(errors.FatalApiError, match="nested deeper than Python's JSON decoder can read") as raised:
        hook.json_body(response(200, raw=deep_body(levels), url=URL + "?page=3&per_page=200"))
    message = str(raised.value)
    assert f"GET {URL} answered 200" in message and "recursion limit" in message
    assert "secret" not in message and "page=3" not in message
    assert isinstance(raised.value, errors.NeedsPersonError) and raised.value.status == 200


def test_a_body_nested_900_levels_still_decodes() -> None:
    # such a record is quarantined by the transform, not fatal to the extract
    body = StravaHook.json_body(response(200, raw=deep_body(900)))
    assert body[0]["name"] == "secret athlete"


def test_a_body_over_the_size_limit_needs_a_person_and_names_the_limit() -> None:
    raw = b'[{"name":"secret athlete"}]' + b" " * 1_000
    with pytest.raises(errors.FatalApiError, match="more than the limit of 1,000 bytes") as raised:
        StravaHook.json_body(response(200, raw=raw, url=URL + "?after=1"), max_bytes=1_000)
    assert f"GET {URL} answered 200 with a body of {len(raw):,} bytes" in str(raised.value)
    assert "secret" not in str(raised.value) and "after=1" not in str(raised.value)
    assert StravaHook.json_body(response(200, raw=raw), max_bytes=len(raw)) == [{"name": "secret athlete"}]


def test_the_default_size_limit_is_64_mib() -> None:
    assert inspect.signature(OAuthApiHook.json_body).parameters["max_bytes"].default == 64 * 2**20
    raw = b"[" + b" " * (64 * 2**20) + b"]"
    with pytest.raises(errors.FatalApiError, match="limit of 67,108,864 bytes"):
        FitbitHook.json_body(response(200, raw=raw))


@pytest.mark.parametrize("raw", [b'[{"name":"secret athlete"', b"<html>secret</html>", b""])
def test_invalid_json_stays_retriable(raw: bytes) -> None:
    with pytest.raises(errors.RetriableApiError, match="not valid JSON") as raised:
        FitbitHook.json_body(response(200, raw=raw, url=URL))
    assert "secret" not in str(raised.value) and not isinstance(raised.value, errors.NeedsPersonError)
