"""Google Health API webhook subscribers of a Google Cloud project: create, show, delete.

    GOOGLE_CLOUD_ACCESS_TOKEN=$(gcloud auth print-access-token) \\
    python -m fitness_pipeline.google_subscriber create --project P --subscriber-id S \\
        --endpoint-url https://example.org/google [--data-types weight,body-fat,height,nutrition-log] [--secret X]
    python -m fitness_pipeline.google_subscriber show --project P
    python -m fitness_pipeline.google_subscriber delete --project P --subscriber-id S

A subscriber is Google's side of the webhook: Google notifies its endpoint (the receiver's ``POST /google``,
see ``fitness_pipeline.receiver``) of every change of the subscribed data types of every user who authorized
the project's OAuth client. While creating it, Google verifies the endpoint: it POSTs ``{"type":
"verification"}`` with ``Authorization: <the secret>`` (201 expected) and without it (401 or 403 expected). So
the receiver must already run, at that public HTTPS URL, with ``FITNESS_GOOGLE_ENDPOINT_SECRET`` set to the
secret. Without ``--secret`` the secret is ``$FITNESS_GOOGLE_ENDPOINT_SECRET`` when set (the receiver's own
setting), else a new one (``Bearer <random>``), printed first, so that the receiver can be configured with it
before ``create`` is run again with ``--secret``.

The API root is the host of the Airflow connection ``fitbit_default`` (as the Fitbit hook uses it; the
emulator's URL in development), or ``--api-root``. These calls are authorized with a Google Cloud access token
of an account that may manage the project (not a user's token): ``$GOOGLE_CLOUD_ACCESS_TOKEN`` or
``--access-token-file``. The token is never printed.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shlex
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import requests

DEFAULT_CONN_ID = "fitbit_default"
DEFAULT_DATA_TYPES = ("weight", "body-fat", "height", "nutrition-log")
SUBSCRIBER_ID_RE = re.compile(r"[a-z][a-z0-9-]{2,34}[a-z0-9]")
DATA_TYPE_RE = re.compile(r"[a-z][a-z0-9-]*")
TOKEN_ENV = "GOOGLE_CLOUD_ACCESS_TOKEN"
SECRET_ENV = "FITNESS_GOOGLE_ENDPOINT_SECRET"
#: connect, read: a create waits for Google's two verification requests to the endpoint
TIMEOUT = (10.0, 120.0)


class SubscriberError(Exception):
    """A failure with its cause and what to do (never a token or a secret)."""


def new_secret() -> str:
    """A new endpoint secret, sent by Google as the whole ``Authorization`` header."""
    return "Bearer " + secrets.token_urlsafe(32)


def _collection(api_root: str, project: str) -> str:
    return f"{api_root.rstrip('/')}/v4/projects/{quote(project, safe='')}/subscribers"


def _headers(access_token: str) -> dict[str, str]:
    if not access_token or not access_token.strip():
        raise SubscriberError(f"no Google Cloud access token: set {TOKEN_ENV}=$(gcloud auth print-access-token) "
                              "or pass --access-token-file")
    return {"Authorization": f"Bearer {access_token.strip()}", "Accept": "application/json"}


def _google_error(response: requests.Response) -> tuple[str, str, str]:
    """(status, message, reason) of Google's error body, as far as there is one."""
    try:
        error = response.json().get("error", {})
    except ValueError:
        error = {}
    if not isinstance(error, dict):
        error = {}
    reasons = [d.get("reason") for d in error.get("details", []) if isinstance(d, dict) and d.get("reason")]
    return str(error.get("status") or ""), str(error.get("message") or response.reason or ""), \
        str(reasons[0] if reasons else "")


def _failure(response: requests.Response, *, project: str, subscriber_id: str | None = None,
             action: str) -> SubscriberError:
    code = response.status_code
    status, message, reason = _google_error(response)
    what = f"{code} {status}".strip() + (f" ({reason})" if reason else "")
    if code == 401:
        return SubscriberError(f"{action}: the Google Cloud access token was refused ({what}): get a fresh one, "
                               f"e.g. {TOKEN_ENV}=$(gcloud auth print-access-token)")
    if code == 403:
        return SubscriberError(f"{action}: permission denied ({what}: {message}): the token's account needs "
                               f"permission to manage Google Health API subscribers of project {project!r}, and "
                               "the Google Health API must be enabled in that project")
    if code == 409:
        return SubscriberError(f"{action}: subscriber {subscriber_id!r} already exists in project {project!r}: "
                               f"delete it first (delete --project {project} --subscriber-id {subscriber_id}) or "
                               "choose another --subscriber-id")
    if code == 404:
        if subscriber_id is None:
            return SubscriberError(f"{action}: not found ({what}: {message}): check --project and the API root")
        return SubscriberError(f"{action}: there is no subscriber {subscriber_id!r} in project {project!r} "
                               f"({what}); 'show --project {project}' lists them")
    if code == 400 and status == "FAILED_PRECONDITION":
        return SubscriberError(f"{action}: Google could not verify the endpoint ({what}: {message}). The receiver "
                               "must already be running at that public HTTPS URL with "
                               f"{SECRET_ENV} set to this very secret (Google sends it as the whole "
                               "Authorization header); start or reconfigure it, then run create again with the "
                               "same --secret")
    if code >= 500 or code == 429:
        return SubscriberError(f"{action}: Google answered {what}: {message}; try again in a few minutes")
    return SubscriberError(f"{action}: Google refused the request ({what}: {message})")


def _send(method: str, url: str, access_token: str, *, action: str, project: str, subscriber_id: str | None = None,
          session: requests.Session | None = None, **kwargs: Any) -> dict[str, Any]:
    headers = _headers(access_token)
    try:
        response = (session or requests).request(method, url, headers=headers, timeout=TIMEOUT, **kwargs)
    except requests.RequestException as error:
        root = urlsplit(url)
        raise SubscriberError(f"{action}: cannot reach the Google Health API at {root.scheme}://{root.netloc} "
                              f"({type(error).__name__}): check the host of connection {DEFAULT_CONN_ID!r} "
                              "(or --api-root) and the network") from None
    if not response.ok:
        raise _failure(response, project=project, subscriber_id=subscriber_id, action=action)
    try:
        body = response.json() if response.content else {}
    except ValueError:
        raise SubscriberError(f"{action}: Google answered {response.status_code} with a body that is not JSON "
                              "(is the API root right?)") from None
    if not isinstance(body, dict):
        raise SubscriberError(f"{action}: Google answered with an unexpected body (is the API root right?)")
    return _finished(body, action)


def _finished(body: dict[str, Any], action: str) -> dict[str, Any]:
    """The result of a long-running operation that is done (its ``response``); other bodies as they are."""
    if "done" not in body or not str(body.get("name", "")).count("/operations/"):
        return body
    if body.get("error"):
        error = body["error"]
        raise SubscriberError(f"{action}: the operation {body['name']} failed: "
                              f"{error.get('message') if isinstance(error, dict) else error}")
    if not body.get("done"):
        return body  # still running: the caller shows the operation's name
    return {k: v for k, v in (body.get("response") or {}).items() if k != "@type"}


def check_subscriber_id(subscriber_id: str) -> str:
    if not SUBSCRIBER_ID_RE.fullmatch(subscriber_id or ""):
        raise SubscriberError(f"subscriber id {subscriber_id!r}: Google wants 4 to 36 characters, a lower-case "
                              "letter first, then lower-case letters, digits or '-', not ending with '-'")
    return subscriber_id


def create_subscriber(api_root: str, project: str, subscriber_id: str, endpoint_url: str,
                      data_types: Sequence[str], secret: str, access_token: str, *,
                      session: requests.Session | None = None) -> dict[str, Any]:
    """Create the subscriber (Google verifies ``endpoint_url`` meanwhile); the Subscriber resource."""
    check_subscriber_id(subscriber_id)
    parts = urlsplit(endpoint_url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise SubscriberError(f"endpoint URL {endpoint_url!r}: give the receiver's public HTTPS URL of POST /google, "
                              "e.g. https://fitness.example.org/google")
    types = list(data_types)
    bad = [t for t in types if not DATA_TYPE_RE.fullmatch(t)]
    if not types or bad:
        raise SubscriberError(f"data types {bad or types!r}: give Google's kebab-case names, e.g. "
                              f"{','.join(DEFAULT_DATA_TYPES)}")
    if not secret or not secret.strip():
        raise SubscriberError("the endpoint secret is empty")
    body = {"endpointUri": endpoint_url,
            "subscriberConfigs": [{"dataTypes": types, "subscriptionCreatePolicy": "AUTOMATIC"}],
            "endpointAuthorization": {"secret": secret}}
    return _send("POST", _collection(api_root, project), access_token, action="create", project=project,
                 subscriber_id=subscriber_id, session=session, params={"subscriberId": subscriber_id}, json=body)


def list_subscribers(api_root: str, project: str, access_token: str, *,
                     session: requests.Session | None = None) -> list[dict[str, Any]]:
    """Every subscriber of the project (all pages)."""
    found: list[dict[str, Any]] = []
    params: dict[str, str] = {}
    while True:
        page = _send("GET", _collection(api_root, project), access_token, action="show", project=project,
                     session=session, params=params)
        found += page.get("subscribers", [])
        token = page.get("nextPageToken")
        if not token or token == params.get("pageToken"):
            return found
        params = {"pageToken": token}


def delete_subscriber(api_root: str, project: str, subscriber_id: str, access_token: str, *,
                      session: requests.Session | None = None) -> dict[str, Any]:
    """Delete the subscriber: Google stops notifying its endpoint."""
    url = f"{_collection(api_root, project)}/{quote(subscriber_id, safe='')}"
    return _send("DELETE", url, access_token, action="delete", project=project, subscriber_id=subscriber_id,
                 session=session)


def api_root_of(conn_id: str = DEFAULT_CONN_ID) -> str:
    """The Google Health API root of an Airflow connection, as the Fitbit hook derives it from its host."""
    from fitness_pipeline.hooks.fitbit import FitbitHook

    try:
        return FitbitHook(conn_id).base_url
    except Exception as error:  # AirflowNotFoundException and friends: no connection of that id
        raise SubscriberError(f"the API root comes from the Airflow connection {conn_id!r}, which cannot be read "
                              f"({type(error).__name__}): define it (see README, 'Connections') or pass "
                              "--api-root") from None


def _access_token(args: argparse.Namespace) -> str:
    if args.access_token_file:
        try:
            with open(args.access_token_file, encoding="utf-8") as file:
                token = file.read().strip()
        except OSError as error:
            raise SubscriberError(f"cannot read --access-token-file ({type(error).__name__})") from None
        if not token:
            raise SubscriberError("--access-token-file is empty: write a fresh token into it, e.g. "
                                  "gcloud auth print-access-token > FILE")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise SubscriberError(f"no Google Cloud access token: set {TOKEN_ENV}=$(gcloud auth print-access-token) or "
                              "pass --access-token-file")
    return token


def _describe(subscriber: dict[str, Any]) -> str:
    types = sorted({t for c in subscriber.get("subscriberConfigs", []) for t in c.get("dataTypes", [])})
    return f"{subscriber.get('name')} -> {subscriber.get('endpointUri')} ({', '.join(types) or 'no data types'})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fitness_pipeline.google_subscriber",
                                     description="Google Health API webhook subscribers of a Google Cloud project.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project", required=True, help="Google Cloud project id or number")
    common.add_argument("--conn-id", default=DEFAULT_CONN_ID, help="the Airflow connection whose host is the API root")
    common.add_argument("--api-root", help="the API root instead of the connection's host")
    common.add_argument("--access-token-file", help=f"a file holding the Cloud access token (default: ${TOKEN_ENV})")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", parents=[common], help="create a subscriber (Google verifies the endpoint)")
    create.add_argument("--subscriber-id", required=True)
    create.add_argument("--endpoint-url", required=True, help="the receiver's public URL of POST /google")
    create.add_argument("--data-types", default=",".join(DEFAULT_DATA_TYPES),
                        help="comma-separated, kebab-case (default: %(default)s)")
    create.add_argument("--secret", help=f"the endpoint secret (default: ${SECRET_ENV}, else a new one)")
    commands.add_parser("show", parents=[common], help="list the project's subscribers")
    delete = commands.add_parser("delete", parents=[common], help="delete a subscriber")
    delete.add_argument("--subscriber-id", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        secret = None
        if args.command == "create":
            check_subscriber_id(args.subscriber_id)
            secret = args.secret or os.environ.get(SECRET_ENV) or None
            if secret is None:
                secret = new_secret()
                print("A new endpoint secret. The receiver must run with it before Google can verify the endpoint:")
                print(f"  {SECRET_ENV}={shlex.quote(secret)}")
        token = _access_token(args)
        root = args.api_root or api_root_of(args.conn_id)
        if args.command == "create":
            types = [t.strip() for t in args.data_types.split(",") if t.strip()]
            created = create_subscriber(root, args.project, args.subscriber_id, args.endpoint_url, types,
                                        str(secret), token)
            if "done" in created:
                print(f"creating: operation {created.get('name')} is still running; check with show")
            else:
                print(f"created {_describe(created)}")
            # the secret only when made here (it was printed above): one given is known, and logs keep output
            print(f"The receiver must keep running with {SECRET_ENV} (the secret given to create) and")
            print("  FITNESS_GOOGLE_PUBLIC_KEY=<Google's notification public key, PEM>")
        elif args.command == "show":
            subscribers = list_subscribers(root, args.project, token)
            for subscriber in subscribers:
                print(_describe(subscriber))
            if not subscribers:
                print(f"no subscribers in project {args.project}")
        else:
            delete_subscriber(root, args.project, args.subscriber_id, token)
            print(f"deleted projects/{args.project}/subscribers/{args.subscriber_id}")
    except SubscriberError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
