"""OAuthApiHook's pure logic: the API root and token endpoint from a Connection, HttpSettings, the API facts."""

from __future__ import annotations

import pytest

from fitness_pipeline import apis, authorize, provider
from fitness_pipeline.errors import PaginationLoopError
from fitness_pipeline.hooks import StravaHook
from fitness_pipeline.hooks.base import HttpSettings, PageGuard
from fitness_pipeline.hooks.fitbit import FitbitHook
from tests.unit.stubs import StubConnection, hook_on


@pytest.mark.parametrize(("host", "schema", "port", "expected"), [
    (None, None, None, "https://www.strava.com"),
    ("", None, None, "https://www.strava.com"),
    ("  https://api.example.test/  ", None, None, "https://api.example.test"),
    ("api.example.test", None, None, "https://api.example.test"),
    ("127.0.0.1", "http", 8080, "http://127.0.0.1:8080"),
    ("http://127.0.0.1", None, 8080, "http://127.0.0.1:8080"),
    ("http://127.0.0.1:9000", None, 8080, "http://127.0.0.1:9000"),  # a port in the host wins
])
def test_base_url(host: str | None, schema: str | None, port: int | None, expected: str) -> None:
    assert hook_on(StravaHook, StubConnection(host=host, schema=schema, port=port)).base_url == expected


def test_default_hosts_and_token_endpoints() -> None:
    assert hook_on(FitbitHook, StubConnection(host=None)).base_url == "https://health.googleapis.com"
    # Strava's token endpoint is under the API root (an emulator's root has its own), Google's is fixed
    assert hook_on(StravaHook, StubConnection(host=None)).token_url == "https://www.strava.com/oauth/token"
    assert hook_on(StravaHook).token_url == "https://api.example.test/oauth/token"
    assert hook_on(FitbitHook).token_url == "https://oauth2.googleapis.com/token"
    for hook_class in (StravaHook, FitbitHook):
        for name in ("refresh_url", "token_url"):  # the deprecated name still counts
            conn = StubConnection(extra_dejson={"refresh_token": "r", name: "https://login.example.test/t"})
            assert hook_on(hook_class, conn).token_url == "https://login.example.test/t"


def test_http_settings_defaults_and_conversions() -> None:
    assert HttpSettings.from_extra({}) == HttpSettings()
    assert HttpSettings().timeout == (10.0, 60.0)
    assert HttpSettings().max_pages == 10_000
    settings = HttpSettings.from_extra({"connect_timeout": "2.5", "read_timeout": 7, "max_retries": "3",
                                        "backoff_factor": "", "max_pages": "50", "unrelated": "x"})
    assert settings.timeout == (2.5, 7.0)
    assert settings.max_retries == 3 and isinstance(settings.max_retries, int)
    assert settings.backoff_factor == 1.0  # an empty field: the default
    assert settings.max_pages == 50
    assert settings.credential_store_conn_id == "fitness_db"


@pytest.mark.parametrize(("extra", "expected"), [
    ({"credential_store_conn_id": "memory"}, None),
    ({"credential_store_conn_id": ""}, "fitness_db"),  # an empty form field: the default, never memory
    ({"credential_store_conn_id": "other_db"}, "other_db"),
    ({"token_store_conn_id": "old_db"}, "old_db"),
    ({"token_store_conn_id": "old_db", "credential_store_conn_id": "new_db"}, "new_db"),
])
def test_http_settings_token_store(extra: dict[str, str], expected: str | None) -> None:
    assert HttpSettings.from_extra(extra).credential_store_conn_id == expected


def test_a_missing_refresh_token_needs_a_person() -> None:
    from fitness_pipeline.hooks import AuthorizationError

    hook = hook_on(FitbitHook, StubConnection(extra_dejson={}))
    with pytest.raises(AuthorizationError, match="'fitbit_default' has no refresh_token"):
        hook.access_token()


def test_page_guard() -> None:
    guard = PageGuard("c", "the x listing", 2, "https://api.example.test")
    guard.request()
    guard.seen("a", "repeated")
    guard.request()
    guard.seen("b", "repeated")
    with pytest.raises(PaginationLoopError, match="did not end after 2 pages"):
        guard.request()
    with pytest.raises(PaginationLoopError, match=r"the x listing repeated \(page 2\)"):
        guard.seen("a", "repeated")


def test_the_api_facts_are_read_from_one_place() -> None:
    assert StravaHook.api is apis.STRAVA and FitbitHook.api is apis.GOOGLE_HEALTH
    assert apis.STRAVA.scope == "read,activity:read_all"
    assert apis.GOOGLE_HEALTH.default_token_url("https://anything.test") == "https://oauth2.googleapis.com/token"
    for conn_type, service in authorize.SERVICES.items():
        api = apis.API_OF[conn_type]
        assert (service.authorize_url, service.api_root, service.scopes) == (api.authorize_url, api.default_host,
                                                                             api.scopes)
        assert service.token_url == api.default_token_url()
        assert service.hook_token_url("http://127.0.0.1:5000/") == api.default_token_url("http://127.0.0.1:5000")
    forms = {c["connection-type"]: c for c in provider.get_provider_info()["connection-types"]}
    assert forms["strava"]["ui-field-behaviour"]["placeholders"]["host"] == apis.STRAVA.default_host
    assert forms["fitbit"]["ui-field-behaviour"]["placeholders"]["host"] == apis.GOOGLE_HEALTH.default_host
