"""OAuth tokens at rest: encrypted with Airflow's Fernet key in ``oauth_token``, rows stored in plain text by
earlier versions encrypted in place, a key rotation read through, and a missing or wrong key a clear error."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from cryptography.fernet import Fernet

from fitness_pipeline.tokens import SEALED, PostgresTokenStore, TokenKeyError, TokenSet
from tests.helpers import query, stored_tokens

KEY = "strava:strava_default"


def refresher(refreshed: list[str]) -> Any:
    def refresh(refresh_token: str) -> TokenSet:
        refreshed.append(refresh_token)
        n = len(refreshed)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=6)
        return TokenSet(f"access-{n}-abcdefgh", f"refresh-{n}-abcdefgh", expires)
    return refresh


def test_tokens_are_encrypted_at_rest_and_read_back(schema: Any) -> None:
    refreshed: list[str] = []
    tokens = PostgresTokenStore("fitness_db").get_token(KEY, "seed-refresh-abcdefgh", refresher(refreshed), 300)
    assert refreshed == ["seed-refresh-abcdefgh"] and tokens.refresh_token == "refresh-1-abcdefgh"
    ((access, refresh),) = query(schema, "SELECT access_token, refresh_token FROM oauth_token")
    for stored, plain in ((access, "access-1-abcdefgh"), (refresh, "refresh-1-abcdefgh")):
        assert stored.startswith(SEALED) and plain not in stored
    assert stored_tokens(schema) == [(KEY, "access-1-abcdefgh", "refresh-1-abcdefgh")]
    # another task reads the stored access token back, without a refresh
    again = PostgresTokenStore("fitness_db").get_token(KEY, "seed-refresh-abcdefgh", refresher(refreshed), 300)
    assert again.access_token == "access-1-abcdefgh" and len(refreshed) == 1


def test_a_row_stored_in_plain_text_is_encrypted_in_place(schema: Any) -> None:
    from fitness_pipeline.tokens import fingerprint

    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with schema.cursor() as cur:  # what the version before encryption wrote
        cur.execute("INSERT INTO oauth_token (token_key, refresh_token, access_token, expires_at, seed_fingerprint) "
                    "VALUES (%s, 'old-refresh-abcdefgh', 'old-access-abcdefgh', %s, %s)",
                    (KEY, expires, fingerprint("seed-refresh-abcdefgh")))
    schema.commit()
    refreshed: list[str] = []
    tokens = PostgresTokenStore("fitness_db").get_token(KEY, "seed-refresh-abcdefgh", refresher(refreshed), 300)
    assert tokens.access_token == "old-access-abcdefgh" and refreshed == []  # still valid: used as it was
    ((access, refresh),) = query(schema, "SELECT access_token, refresh_token FROM oauth_token")
    assert access.startswith(SEALED) and refresh.startswith(SEALED)
    assert stored_tokens(schema) == [(KEY, "old-access-abcdefgh", "old-refresh-abcdefgh")]
    PostgresTokenStore("fitness_db").get_token(KEY, "seed-refresh-abcdefgh", refresher(refreshed), 300)
    assert query(schema, "SELECT access_token, refresh_token FROM oauth_token") == [(access, refresh)]  # once
    # and the next refresh presents the old refresh token, decrypted
    PostgresTokenStore("fitness_db").get_token(KEY, "seed-refresh-abcdefgh", refresher(refreshed), math.inf)
    assert refreshed == ["old-refresh-abcdefgh"]


@pytest.fixture
def set_key(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Change Airflow's Fernet key (Airflow reads it once per process: its cache is cleared, also after)."""
    from airflow.models.crypto import get_fernet

    def set_key(value: str) -> None:
        monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", value)
        get_fernet.cache_clear()

    yield set_key
    monkeypatch.undo()
    get_fernet.cache_clear()


def test_a_rotated_key_still_reads_and_a_wrong_or_missing_key_says_what_to_do(schema: Any, set_key: Any) -> None:
    import os

    old_key = os.environ["AIRFLOW__CORE__FERNET_KEY"]
    refreshed: list[str] = []
    PostgresTokenStore("fitness_db").get_token(KEY, "seed-refresh-abcdefgh", refresher(refreshed), 300)

    new_key = Fernet.generate_key().decode()
    set_key(f"{new_key},{old_key}")  # Airflow's rotation: the new key first
    tokens = PostgresTokenStore("fitness_db").get_token(KEY, "seed-refresh-abcdefgh", refresher(refreshed), 300)
    assert tokens.access_token == "access-1-abcdefgh"

    set_key(new_key)  # the old key dropped too early
    with pytest.raises(TokenKeyError, match="put the key they were stored with into"):
        PostgresTokenStore("fitness_db").get_token(KEY, "seed-refresh-abcdefgh", refresher(refreshed), 300)
    set_key("")
    with pytest.raises(TokenKeyError, match="no Fernet key is configured"):
        PostgresTokenStore("fitness_db").get_token(KEY, "seed-refresh-abcdefgh", refresher(refreshed), 300)
    assert refreshed == ["seed-refresh-abcdefgh"]  # no refresh was attempted with a token it could not read
