"""The application's Strava push subscription (webhooks): make a verify token, create, show, delete.

    python -m fitness_pipeline.subscriptions strava token
    python -m fitness_pipeline.subscriptions strava create --callback-url https://hooks.example.org/strava \\
        [--verify-token T] [--conn-id strava_default]
    python -m fitness_pipeline.subscriptions strava show
    python -m fitness_pipeline.subscriptions strava delete [--id N]

Strava has one push subscription per application, for every athlete who authorized it. The calls use the
application's client id and secret (the Airflow connection ``strava_default``: login = client id, password =
client secret, host = the API root, read as ``StravaHook`` reads them), never an athlete's token.

Strava validates the callback while it creates the subscription: it sends ``GET <callback>?hub.mode=
subscribe&hub.challenge=..&hub.verify_token=..``, which the receiver (``fitness_pipeline.receiver``) answers
only with the same verify token. So: ``strava token`` prints a fresh one; start the receiver with it
(``FITNESS_STRAVA_VERIFY_TOKEN``) behind its public HTTPS URL; then ``strava create --callback-url URL``
(the verify token from ``--verify-token`` or ``$FITNESS_STRAVA_VERIFY_TOKEN``; one is generated when neither
is given, which only works if the receiver does not check it). ``create`` prints the two lines the receiver
needs (``FITNESS_STRAVA_SUBSCRIPTION_ID``, ``FITNESS_STRAVA_VERIFY_TOKEN``) on stdout, the rest on stderr.
The client secret is never printed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

import requests

SUBSCRIPTIONS_PATH = "/api/v3/push_subscriptions"
MAX_CALLBACK_URL_LENGTH = 255
VERIFY_TOKEN_ENV = "FITNESS_STRAVA_VERIFY_TOKEN"
SUBSCRIPTION_ID_ENV = "FITNESS_STRAVA_SUBSCRIPTION_ID"
PROG = "python -m fitness_pipeline.subscriptions"


class SubscriptionError(RuntimeError):
    """A subscription call failed; the message names the connection, the cause and what to do."""


def new_verify_token() -> str:
    """A fresh verify token (43 URL-safe characters)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class StravaApplication:
    """The Strava application of an Airflow connection: where its API is and its client credentials."""

    conn_id: str
    base_url: str
    client_id: str
    client_secret: str
    timeout: tuple[float, float]

    @classmethod
    def from_connection(cls, conn_id: str) -> StravaApplication:
        """Read connection ``conn_id`` through :class:`~fitness_pipeline.hooks.strava.StravaHook` (its host, its
        timeouts); the client secret is masked in Airflow's logs."""
        from fitness_pipeline.compat import mask_secret
        from fitness_pipeline.hooks.strava import StravaHook

        hook = StravaHook(conn_id)
        try:
            connection = hook.connection
        except Exception as error:
            raise SubscriptionError(
                f"Connection {conn_id!r} cannot be read ({type(error).__name__}): define it (e.g. "
                f"AIRFLOW_CONN_{conn_id.upper()}, or `airflow connections add`), with the Strava application's "
                "client id as login and its client secret as password.") from None
        client_id, client_secret = str(connection.login or ""), str(connection.password or "")
        if not client_id or not client_secret:
            raise SubscriptionError(
                f"Connection {conn_id!r} has no {'client id (login)' if not client_id else 'client secret (password)'}"
                ": put the Strava application's client id in its login and the client secret in its password.")
        mask_secret(client_secret)
        return cls(conn_id, hook.base_url, client_id, client_secret,
                   (hook.settings.connect_timeout, hook.settings.read_timeout))

    @property
    def credentials(self) -> dict[str, str]:
        return {"client_id": self.client_id, "client_secret": self.client_secret}

    def request(self, method: str, path: str = "", **kwargs: Any) -> requests.Response:
        """One call to ``<host>/api/v3/push_subscriptions<path>``; a transport failure is a
        :class:`SubscriptionError` (naming the error's type only: its text may hold the URL's query)."""
        try:
            return requests.request(method, f"{self.base_url}{SUBSCRIPTIONS_PATH}{path}", timeout=self.timeout,
                                    allow_redirects=False, **kwargs)
        except requests.RequestException as error:
            raise SubscriptionError(
                f"Strava could not be reached at {self.base_url} (the host of connection {self.conn_id!r}): "
                f"{type(error).__name__}. Check the connection's host and the network, then run the command "
                "again.") from None

    def refused(self, response: requests.Response, doing: str) -> SubscriptionError:
        """The error for a refused call: 401 is the client credentials; anything else is Strava's message."""
        if response.status_code == 401:
            return SubscriptionError(
                f"Strava refused the client id and secret of connection {self.conn_id!r} while {doing} (401): "
                "check its login (the application's client id) and password (its client secret) against "
                "https://www.strava.com/settings/api.")
        return SubscriptionError(f"Strava refused {doing} ({response.status_code} {self.describe(response)}).")

    def describe(self, response: requests.Response) -> str:
        """Strava's error body in one line (``message: resource field code; ...``), never the secret."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            text = " ".join(response.text.split())[:200]
        else:
            errors = body.get("errors") if isinstance(body.get("errors"), list) else []
            details = "; ".join(" ".join(str(e.get(k, "")) for k in ("resource", "field", "code")).strip()
                                for e in errors if isinstance(e, dict))
            text = f"{body.get('message', '')}: {details}" if details else str(body.get("message", ""))
        return text.replace(self.client_secret, "***")


def error_codes(response: requests.Response) -> set[str]:
    """The ``code`` of each of Strava's ``errors`` in a refusal (lower case)."""
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return set()
    return {str(e.get("code", "")).lower() for e in errors if isinstance(e, dict)}


def check_callback_url(callback_url: str) -> None:
    """What Strava would refuse anyway, said before the call: a URL that is not http(s), or too long."""
    parts = urlsplit(callback_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SubscriptionError(f"--callback-url {callback_url!r} is not an http(s) URL: give the receiver's public "
                                "HTTPS URL, ending in /strava (e.g. https://hooks.example.org/strava).")
    if len(callback_url) > MAX_CALLBACK_URL_LENGTH:
        raise SubscriptionError(f"--callback-url is {len(callback_url)} characters long: Strava takes at most "
                                f"{MAX_CALLBACK_URL_LENGTH}.")


def create(app: StravaApplication, callback_url: str, verify_token: str, *, generated: bool = False) -> int:
    """Create the application's subscription (Strava validates ``callback_url`` first); returns its id."""
    check_callback_url(callback_url)
    response = app.request("POST", data={**app.credentials, "callback_url": callback_url,
                                         "verify_token": verify_token})
    if response.status_code in (200, 201):
        try:
            return int(response.json()["id"])
        except (ValueError, KeyError, TypeError):
            raise SubscriptionError(f"Strava answered the create with {response.status_code} but no subscription "
                                    f"id: {app.describe(response)}") from None
    codes = error_codes(response)
    if response.status_code == 400 and "already exists" in codes:
        raise SubscriptionError(
            f"The application of connection {app.conn_id!r} already has a push subscription (Strava allows one per "
            f"application): `{PROG} strava show` shows it; `{PROG} strava delete` removes it, then create again.")
    if response.status_code == 400 and "callback" in app.describe(response).lower():
        hint = (" The verify token was generated just now, so the receiver cannot know it: run "
                f"`{PROG} strava token`, start the receiver with {VERIFY_TOKEN_ENV} set to it, then create with "
                "--verify-token (or the same variable set here)." if generated else "")
        raise SubscriptionError(
            f"Strava could not validate the callback {callback_url} for the application of connection "
            f"{app.conn_id!r} ({app.describe(response)}): no subscription was created. Check that the receiver is "
            "running and reachable at that public HTTPS URL (Strava sends it "
            f"GET ?hub.mode=subscribe&hub.challenge=..&hub.verify_token=.. and needs a 200 with the challenge within "
            f"2 s) and that it was started with {VERIFY_TOKEN_ENV} equal to the verify token given here.{hint}")
    raise app.refused(response, f"to create the subscription for connection {app.conn_id!r}")


def list_subscriptions(app: StravaApplication) -> list[dict[str, Any]]:
    """The application's subscriptions (Strava: none or one)."""
    response = app.request("GET", params=app.credentials)
    if response.status_code != 200:
        raise app.refused(response, f"to list the subscriptions of connection {app.conn_id!r}")
    try:
        listed = response.json()
    except ValueError:
        listed = None
    if not isinstance(listed, list):
        raise SubscriptionError(f"Strava's list of subscriptions is not a list: {app.describe(response)}")
    return [item for item in listed if isinstance(item, dict)]


def delete(app: StravaApplication, subscription_id: int) -> None:
    response = app.request("DELETE", f"/{subscription_id}", params=app.credentials)
    if response.status_code in (200, 204):
        return
    if response.status_code == 404:
        raise SubscriptionError(f"The application of connection {app.conn_id!r} has no subscription "
                                f"{subscription_id}: `{PROG} strava show` lists the one it has.")
    raise app.refused(response, f"to delete subscription {subscription_id}")


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    services = parser.add_subparsers(dest="service", required=True)
    strava = services.add_parser("strava", help="the Strava application's push subscription")
    commands = strava.add_subparsers(dest="command", required=True)
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--conn-id", default="strava_default",
                            help="the Strava connection: login = client id, password = client secret, host = API root")
    commands.add_parser("token", help="print a fresh verify token (start the receiver with it before create)")
    made = commands.add_parser("create", parents=[connection],
                               help="create the subscription (the receiver must answer Strava's handshake)")
    made.add_argument("--callback-url", required=True, help="the receiver's public HTTPS URL, e.g. "
                                                            "https://hooks.example.org/strava (at most 255 characters)")
    made.add_argument("--verify-token", help=f"default: ${VERIFY_TOKEN_ENV}, else a new one (see `strava token`)")
    commands.add_parser("show", parents=[connection], help="the application's subscription")
    removed = commands.add_parser("delete", parents=[connection], help="delete the subscription")
    removed.add_argument("--id", type=int, help="its id (default: the one the application has)")
    return parser


def run(args: argparse.Namespace, out: TextIO, err: TextIO, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    if args.command == "token":
        print(f"{VERIFY_TOKEN_ENV}={new_verify_token()}", file=out)
        print(f"# Start the receiver with this {VERIFY_TOKEN_ENV}, then: {PROG} strava create --callback-url "
              f"https://<its public host>/strava (with the same {VERIFY_TOKEN_ENV} in the environment, or "
              "--verify-token).", file=err)
        return 0
    app = StravaApplication.from_connection(args.conn_id)
    if args.command == "create":
        verify_token = args.verify_token or environ.get(VERIFY_TOKEN_ENV) or ""
        generated = not verify_token
        if generated:
            verify_token = new_verify_token()
            print(f"No --verify-token and no {VERIFY_TOKEN_ENV}: generated one. Strava validates the callback now, "
                  "with this token: the receiver must already answer with it.", file=err)
        if urlsplit(args.callback_url).scheme != "https":
            print("Note: Strava calls only public https:// callback URLs.", file=err)
        subscription_id = create(app, args.callback_url, verify_token, generated=generated)
        print(f"Subscription {subscription_id} created for Strava application {app.client_id} (connection "
              f"{app.conn_id!r}): events go to {args.callback_url}. Configure the receiver with these lines and "
              "restart it (until it knows the subscription id it refuses the events):", file=err)
        err.flush()
        print(f"{SUBSCRIPTION_ID_ENV}={subscription_id}", file=out)
        print(f"{VERIFY_TOKEN_ENV}={verify_token}", file=out)
        return 0
    subscriptions = list_subscriptions(app)
    if args.command == "show":
        if not subscriptions:
            print(f"No push subscription for Strava application {app.client_id} (connection {app.conn_id!r}).",
                  file=err)
        for item in subscriptions:
            print(f"{item.get('id')}\t{item.get('callback_url')}\tcreated {item.get('created_at')}", file=out)
        return 0
    ids = [args.id] if args.id is not None else [int(item["id"]) for item in subscriptions if "id" in item]
    if not ids:
        print(f"No push subscription to delete for Strava application {app.client_id} (connection "
              f"{app.conn_id!r}).", file=err)
        return 0
    for subscription_id in ids:
        delete(app, subscription_id)
        print(f"Deleted subscription {subscription_id}: Strava sends no more events; remove "
              f"{SUBSCRIPTION_ID_ENV} from the receiver's environment (or create a new subscription).", file=out)
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    err = err or sys.stderr
    try:
        return run(args, out or sys.stdout, err)
    except SubscriptionError as error:
        print(f"ERROR: {error}", file=err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
