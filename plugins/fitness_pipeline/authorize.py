"""Authorize an account once and print its Airflow connection.

    python -m fitness_pipeline.authorize strava   # Strava API application (STRAVA_CLIENT_ID/_SECRET)
    python -m fitness_pipeline.authorize fitbit   # Google OAuth client (GOOGLE_CLIENT_ID/_SECRET)

OAuth 2.0 authorization-code flow with a loopback redirect: prints the consent URL (and opens a
browser unless --no-browser), waits for ONE redirect on http://127.0.0.1:<port>/callback (stdlib
http.server), checks the ``state`` (CSRF), exchanges the code at the token endpoint
(grant_type=authorization_code), checks the granted scopes and warns about missing ones, then
prints the connection (conn_type strava/fitbit) as an ``AIRFLOW_CONN_<ID>='{json}'`` line and as an
``airflow connections add <id> --conn-json`` command. The client secret and the refresh token
appear only inside those two; stdout holds nothing else but comments, the rest goes to stderr.

Only the standard library and ``requests``: Airflow is not imported (fast, and runs anywhere).

With ``--athlete NAME`` the account is one more athlete of the deployment instead: the athlete is added to
(or updated in) table ``athlete`` and the tokens go straight into the token store (``oauth_token``,
encrypted with Airflow's Fernet key), keyed by athlete and provider; nothing is printed to configure, the
Connection keeps the app's client id and secret. This needs the Airflow environment of the deployment
(the ``fitness_db`` connection and the Fernet key), so it imports Airflow.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import html
import http.server
import json
import os
import re
import secrets
import shlex
import sys
import time
import webbrowser
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from fitness_pipeline import apis  # the API facts the hooks use too (apis imports no Airflow)

METRICS_SCOPE = apis.GOOGLE_METRICS_SCOPE
NUTRITION_SCOPE = apis.GOOGLE_NUTRITION_SCOPE
CALLBACK_PATH = "/callback"
LOOPBACK = "127.0.0.1"


class AuthorizeError(RuntimeError):
    """The flow failed; the message says why and what to do."""


@dataclass(frozen=True)
class Service:
    """One API's OAuth details (its :class:`fitness_pipeline.apis.OAuthApi`) and the connection its hook reads."""

    conn_type: str
    label: str
    env_prefix: str
    api: apis.OAuthApi

    @property
    def default_conn_id(self) -> str:
        return f"{self.conn_type}_default"

    @property
    def authorize_url(self) -> str:
        return self.api.authorize_url

    @property
    def token_url(self) -> str:
        return self.api.default_token_url()

    @property
    def api_root(self) -> str:
        return self.api.default_host

    @property
    def scopes(self) -> tuple[str, ...]:
        return self.api.scopes

    @property
    def scope_separator(self) -> str:
        return self.api.scope_separator

    @property
    def consent_params(self) -> Mapping[str, str]:
        return self.api.consent_params

    def hook_token_url(self, api_root: str) -> str:
        """The token URL the hook uses when the connection's extra names none."""
        return self.api.default_token_url(api_root)

    @classmethod
    def of(cls, conn_type: str, label: str, env_prefix: str) -> Service:
        """The service of the hook of ``conn_type``, its OAuth details from :data:`fitness_pipeline.apis.API_OF`."""
        return cls(conn_type=conn_type, label=label, env_prefix=env_prefix, api=apis.API_OF[conn_type])


SERVICES = {
    "strava": Service.of("strava", "Strava", "STRAVA"),
    "fitbit": Service.of("fitbit", "Google (Fitbit data, Google Health API)", "GOOGLE"),
}


# --------------------------------------------------------------------------- the consent URL


def consent_url(service: Service, authorize_url: str, client_id: str, redirect_uri: str, state: str) -> str:
    """The URL the user opens: response_type=code, the scopes the hooks need, ``state`` against CSRF."""
    params = {"client_id": client_id, "redirect_uri": redirect_uri, "response_type": "code",
              **service.consent_params, "scope": service.scope_separator.join(service.scopes), "state": state}
    separator = "&" if urlsplit(authorize_url).query else "?"
    return f"{authorize_url}{separator}{urlencode(params, safe=',:/')}"


# --------------------------------------------------------------------------- the loopback redirect


class CallbackServer(http.server.HTTPServer):
    """Waits for the redirect to ``/callback``; ``result`` holds its query parameters."""

    def __init__(self, port: int, state: str) -> None:
        super().__init__((LOOPBACK, port), CallbackHandler)
        self.expected_state = state
        self.result: dict[str, str] | None = None

    @property
    def redirect_uri(self) -> str:
        return f"http://{LOOPBACK}:{self.server_port}{CALLBACK_PATH}"

    def wait(self, timeout: float) -> dict[str, str]:
        """Serve requests until the redirect arrives (other paths get 404); then stop listening."""
        deadline = time.monotonic() + timeout
        try:
            while self.result is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AuthorizeError(
                        f"No redirect reached {self.redirect_uri} within {timeout:g} s. Open the URL above in a "
                        "browser on this machine (or pass --timeout), and check the redirect URI / callback "
                        "domain registered with the OAuth client.")
                self.timeout = remaining
                self.handle_request()
            return self.result
        finally:
            self.server_close()


def check_callback(params: Mapping[str, str], expected_state: str) -> None:
    """Raise :class:`AuthorizeError` unless the redirect carries our ``state`` and a code."""
    if not secrets.compare_digest(params.get("state", "").encode(), expected_state.encode()):
        raise AuthorizeError(
            "The redirect's state does not match the one sent (possible CSRF, or an old browser tab): "
            "nothing was exchanged. Run the command again and use the new URL.")
    if "error" in params:
        error = params["error"]
        hint = " (the consent was cancelled)" if error == "access_denied" else ""
        raise AuthorizeError(f"The authorization server answered error={error}{hint}: nothing was authorized.")
    if not params.get("code"):
        raise AuthorizeError("The redirect carries no authorization code.")


class CallbackHandler(http.server.BaseHTTPRequestHandler):
    server: CallbackServer
    timeout = 10  # a browser's idle pre-connection must not block the wait

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != CALLBACK_PATH:
            self.send_error(404)
            return
        params = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            check_callback(params, self.server.expected_state)
            status, text = 200, "Received. Return to the terminal: the connection is printed there."
        except AuthorizeError as error:
            status, text = 400, f"Authorization failed: {error}"
        body = (f"<!doctype html><meta charset='utf-8'><title>fitness-pipeline</title>"
                f"<p>{html.escape(text)}</p><p>You can close this tab.</p>").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)
        self.server.result = params

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the request line holds the authorization code."""


# --------------------------------------------------------------------------- token exchange and scopes


def exchange_code(service: Service, token_url: str, client_id: str, client_secret: str, code: str,
                  redirect_uri: str) -> dict[str, Any]:
    """POST grant_type=authorization_code; the token response, or AuthorizeError with the server's error code."""
    form = {"client_id": client_id, "client_secret": client_secret, "code": code,
            "grant_type": "authorization_code"}
    if service.conn_type == "fitbit":
        form["redirect_uri"] = redirect_uri  # Google requires the same redirect_uri again
    try:
        response = requests.post(token_url, data=form, timeout=(10, 30), headers={"Accept": "application/json"})
    except requests.RequestException as error:
        raise AuthorizeError(f"The token endpoint {token_url} could not be reached: {type(error).__name__}") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        raise AuthorizeError(f"The token endpoint refused the code: HTTP {response.status_code} "
                             f"{_error_summary(body)}. Check the client id/secret and run again.")
    if not body.get("refresh_token"):
        hint = (" Remove the app's access at https://myaccount.google.com/permissions and run again "
                "(access_type=offline&prompt=consent is sent)." if service.conn_type == "fitbit" else "")
        raise AuthorizeError(f"The token response holds no refresh token.{hint}")
    return body


def _error_summary(body: Any) -> str:
    """Error codes only (they hold no secret), never the whole body."""
    if not isinstance(body, dict):
        return "(no JSON body)"
    if "error" in body:  # RFC 6749 / Google
        return f"({body.get('error')}{': ' + str(body['error_description']) if body.get('error_description') else ''})"
    errors = ", ".join(f"{e.get('resource')}.{e.get('field')}: {e.get('code')}" for e in body.get("errors") or []
                       if isinstance(e, dict))
    return f"({body.get('message')}{'; ' + errors if errors else ''})"


def granted_scopes(service: Service, callback: Mapping[str, str], tokens: Mapping[str, Any]) -> list[str] | None:
    """Strava reports the ticked scopes on the redirect, Google in the token response; None if not reported."""
    raw = callback.get("scope") if service.conn_type == "strava" else tokens.get("scope")
    if raw is None:
        return None
    return [s for s in re.split(r"[,\s]+", str(raw)) if s]


def scope_warnings(service: Service, granted: Sequence[str] | None) -> list[str]:
    """What the DAG will miss with the scopes the user left ticked."""
    if granted is None:
        return [f"{service.label} did not report the granted scopes: check them in your account's app settings."]
    have = set(granted)
    if service.conn_type == "strava":
        if "activity:read_all" in have:
            return []
        if "activity:read" in have:
            return ["Strava granted activity:read but not activity:read_all: activities visible to 'Only You' "
                    "will be missing. Run again and leave 'View data about your private activities' ticked."]
        return [f"Strava granted only '{','.join(granted)}', without activity:read_all: the DAG cannot read any "
                "activity (it fails with '... lacks the activity:read scope'). Run again and leave every box "
                "ticked, including 'View data about your private activities'."]
    missing = {METRICS_SCOPE: "weight, body fat and height", NUTRITION_SCOPE: "calories eaten (nutrition logs)"}
    return [f"Google did not grant {scope}: {what} cannot be read (403 PERMISSION_DENIED). Run again and "
            "leave every box ticked on the consent screen." for scope, what in missing.items() if scope not in have]


# --------------------------------------------------------------------------- output


def connection(service: Service, *, api_root: str, token_url: str, client_id: str, client_secret: str,
               refresh_token: str, scopes: Sequence[str] | None, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The Airflow connection, in the JSON form (``AIRFLOW_CONN_*`` / ``--conn-json``)."""
    conn_extra: dict[str, Any] = {"refresh_token": refresh_token}
    if token_url.rstrip("/") != service.hook_token_url(api_root).rstrip("/"):
        conn_extra["refresh_url"] = token_url  # the hook's name for it (token_url would show as *** in Airflow)
    conn_extra.update(extra)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    return {
        "conn_type": service.conn_type,
        "description": f"{service.label}, authorized {today}, scope {_scope_text(service, scopes)}",
        "host": api_root.rstrip("/"),
        "login": client_id,
        "password": client_secret,
        "extra": conn_extra,
    }


def _scope_text(service: Service, scopes: Sequence[str] | None) -> str:
    if scopes is None:
        return "(not reported)"
    return service.scope_separator.join(s.removeprefix(apis.GOOGLE_SCOPE_PREFIX) for s in scopes)


def print_connection(conn_id: str, conn: Mapping[str, Any], out: TextIO) -> None:
    env_name = f"AIRFLOW_CONN_{conn_id.upper()}"
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env_name):
        print(f"# Connection {conn_id} as an environment variable (export it, or put the line in .env):", file=out)
        print(f"{env_name}={shlex.quote(json.dumps(conn))}", file=out)
        print(file=out)
    print("# or in Airflow's metadata database (first `airflow connections delete "
          f"{conn_id}` if it exists):", file=out)
    print(f"airflow connections add {shlex.quote(conn_id)} --conn-json {shlex.quote(json.dumps(conn, indent=2))}",
          file=out)


# --------------------------------------------------------------------------- command line


def _extra_item(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)  # numbers and booleans keep their type
    except ValueError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fitness_pipeline.authorize", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("service", choices=sorted(SERVICES), help="strava, or fitbit (Google Health API)")
    parser.add_argument("--client-id", help="default: $STRAVA_CLIENT_ID / $GOOGLE_CLIENT_ID")
    parser.add_argument("--client-secret",
                        help="default: $STRAVA_CLIENT_SECRET / $GOOGLE_CLIENT_SECRET, else asked for on a terminal "
                             "(prefer those: a command-line argument shows in `ps` and the shell history)")
    parser.add_argument("--authorize-url", help="default: the real consent page (an emulator's for tests/demo)")
    parser.add_argument("--token-url", help="default: the real token endpoint")
    parser.add_argument("--api-root", help=f"the connection's host; default {apis.STRAVA.default_host} / "
                                           f"{apis.GOOGLE_HEALTH.default_host}")
    parser.add_argument("--port", type=int, default=0,
                        help="loopback redirect port (default 0: any free port); fix it when the OAuth client "
                             "only accepts a registered redirect URI, e.g. a Google 'Web application' client")
    parser.add_argument("--conn-id", help="default: strava_default / fitbit_default")
    parser.add_argument("--extra", type=_extra_item, action="append", default=[], metavar="KEY=VALUE",
                        help="more connection extras, e.g. credential_store_conn_id=memory (repeatable)")
    parser.add_argument("--no-browser", action="store_true", help="only print the URL")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the redirect (300)")
    parser.add_argument("--athlete", metavar="NAME",
                        help="authorize one more athlete of this deployment: store the tokens in the fitness "
                             "database under NAME instead of printing a connection")
    parser.add_argument("--db-conn-id", default="fitness_db", help="with --athlete: the fitness database (fitness_db)")
    parser.add_argument("--replace", action="store_true",
                        help="with --athlete: connect this account although NAME authorized another one before")
    return parser


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    service = SERVICES[args.service]
    client_id = args.client_id or os.environ.get(f"{service.env_prefix}_CLIENT_ID")
    client_secret = args.client_secret or os.environ.get(f"{service.env_prefix}_CLIENT_SECRET")
    if not client_id:
        raise AuthorizeError(f"No client id: pass --client-id or set {service.env_prefix}_CLIENT_ID.")
    if not client_secret:
        if not sys.stdin.isatty():
            raise AuthorizeError(f"No client secret: set {service.env_prefix}_CLIENT_SECRET or pass --client-secret.")
        client_secret = getpass.getpass(f"{service.label} client secret: ")
    authorize_url = args.authorize_url or service.authorize_url
    token_url = args.token_url or service.token_url
    api_root = (args.api_root or service.api_root).rstrip("/")
    conn_id = args.conn_id or service.default_conn_id
    if args.athlete is not None and args.athlete.strip() in ("", "default", "1"):
        raise AuthorizeError("The default athlete's refresh token lives in the Connection: run without --athlete and "
                             "put the printed refresh token in the Connection's extra.")

    state = secrets.token_urlsafe(24)
    try:
        server = CallbackServer(args.port, state)
    except OSError as error:
        raise AuthorizeError(f"Cannot listen on {LOOPBACK}:{args.port}: {error.strerror}") from None
    url = consent_url(service, authorize_url, client_id, server.redirect_uri, state)
    print(f"Authorize {service.label} for connection {conn_id!r}: open this URL in a browser on this machine,\n"
          f"sign in and approve, leaving every box ticked. Waiting for the redirect to {server.redirect_uri}"
          f"\n\n    {url}\n", file=err, flush=True)
    if not args.no_browser:
        webbrowser.open(url)
    callback = server.wait(args.timeout)
    check_callback(callback, state)
    tokens = exchange_code(service, token_url, client_id, client_secret, callback["code"], server.redirect_uri)

    scopes = granted_scopes(service, callback, tokens)
    athlete = tokens.get("athlete")
    who = f" (athlete {athlete.get('id')})" if isinstance(athlete, dict) and athlete.get("id") else ""
    print(f"Authorized{who}; granted scope: {_scope_text(service, scopes)}", file=err)
    for warning in scope_warnings(service, scopes):
        print(f"WARNING: {warning}", file=err)
    if args.athlete is not None:
        stored = store_athlete_tokens(service, args.athlete.strip(), conn_id, tokens, api_root, args.db_conn_id,
                                      replace=args.replace)
        print(f"Athlete {args.athlete.strip()!r} (id {stored}) is connected to {service.label}: the tokens are in the "
              f"fitness database (table oauth_token); fitness_sync syncs them from its next run.", file=err)
        return 0
    conn = connection(service, api_root=api_root, token_url=token_url, client_id=client_id,
                      client_secret=client_secret, refresh_token=str(tokens["refresh_token"]), scopes=scopes,
                      extra=dict(args.extra))
    err.flush()
    print_connection(conn_id, conn, out)
    print("\nThe refresh token in the connection seeds the token store (table oauth_token) again; keep the "
          "connection secret.", file=err)
    return 0


def store_athlete_tokens(service: Service, name: str, conn_id: str, tokens: Mapping[str, Any], api_root: str,
                         db_conn_id: str, *, replace: bool = False) -> int:
    """Add athlete ``name`` (or update them: active again) with the provider's id of the account, and store the
    tokens in the token store under them. Returns the athlete's id."""
    from contextlib import closing

    from fitness_pipeline import athletes
    from fitness_pipeline.db import connect, transaction
    from fitness_pipeline.ddl import ensure_schema
    from fitness_pipeline.tokens import PostgresTokenStore, TokenSet, token_key

    strava_id = google_id = None
    if service.conn_type == "strava" and isinstance(tokens.get("athlete"), dict):
        strava_id = tokens["athlete"].get("id")
    elif service.conn_type == "fitbit":
        google_id = google_user_id(api_root, str(tokens.get("access_token")))
    with closing(connect(db_conn_id)) as conn:
        ensure_schema(conn)
        with transaction(conn) as cur:
            try:
                person = athletes.upsert(cur, name, strava_athlete_id=strava_id, google_user_id=google_id,
                                         replace=replace)
            except athletes.AthleteError as error:
                raise AuthorizeError(str(error)) from None
    PostgresTokenStore(db_conn_id).store_authorized(
        token_key(service.conn_type, conn_id, person.id),
        TokenSet(tokens.get("access_token"), str(tokens["refresh_token"]), token_expiry(tokens)))
    return person.id


def token_expiry(tokens: Mapping[str, Any]) -> dt.datetime | None:
    """When the access token expires: Strava's ``expires_at`` (epoch seconds), else now + ``expires_in``."""
    if isinstance(tokens.get("expires_at"), int | float):
        return dt.datetime.fromtimestamp(tokens["expires_at"], dt.UTC)
    if isinstance(tokens.get("expires_in"), int | float):
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=tokens["expires_in"])
    return None


def google_user_id(api_root: str, access_token: str) -> str | None:
    """The Google Health user id of the account (``users/me/identity``), for the athlete table; None when it
    cannot be read (the athlete is stored all the same)."""
    try:
        response = requests.get(f"{api_root}/v4/users/me/identity", timeout=(10, 30),
                                headers={"Authorization": f"Bearer {access_token}"})
        value = response.json().get("healthUserId") if response.status_code == 200 else None
    except (requests.RequestException, ValueError, AttributeError):
        return None
    return str(value) if value else None


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    err = err or sys.stderr
    try:
        return run(args, out or sys.stdout, err)
    except AuthorizeError as error:
        print(f"ERROR: {error}", file=err)
        return 1
    except KeyboardInterrupt:
        print("Interrupted: nothing was authorized.", file=err)
        return 130


if __name__ == "__main__":
    sys.exit(main())
