"""``python -m fitness_pipeline.google_subscriber`` end to end: against the emulator's subscribers API (the API
root from connection ``fitbit_default``), with the receiver under uvicorn answering Google's verification."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from fitness_pipeline import google_subscriber
from fitness_pipeline.google_subscriber import SubscriberError, main
from tests.helpers import query
from tests.webhook_receiver import google_receiver

SECRET = "Bearer " + "r" * 43
TOKEN = "ya29.cloud-token-never-printed"
PROJECT = "fitness-project"


@pytest.fixture
def emulator(connect_fitbit: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """An emulator behind ``fitbit_default``; the Cloud token in the environment, no endpoint secret there."""
    monkeypatch.setenv("GOOGLE_CLOUD_ACCESS_TOKEN", TOKEN)
    monkeypatch.delenv("FITNESS_GOOGLE_ENDPOINT_SECRET", raising=False)
    return connect_fitbit()


@pytest.fixture
def endpoint(emulator: Any, schema: Any) -> Iterator[str]:
    with google_receiver(emulator.url, SECRET) as url:
        yield url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    return code, out, err


def test_create_show_and_delete_end_to_end(emulator: Any, endpoint: str, schema: Any,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "create", "--project", PROJECT, "--subscriber-id", "fitness-sync",
                         "--endpoint-url", endpoint, "--secret", SECRET)
    assert (code, err) == (0, "")
    assert f"created projects/{PROJECT}/subscribers/fitness-sync -> {endpoint} " \
           "(body-fat, height, nutrition-log, weight)" in out
    assert "FITNESS_GOOGLE_ENDPOINT_SECRET" in out and SECRET not in out  # a secret given is not printed back

    code, out, _ = run(capsys, "show", "--project", PROJECT)
    assert code == 0 and out.strip() == f"projects/{PROJECT}/subscribers/fitness-sync -> {endpoint} " \
                                        "(body-fat, height, nutrition-log, weight)"

    # Google now notifies the receiver of a change
    weight = {"physicalTime": "2026-03-08T01:31:10Z", "grams": 80500}
    assert requests.post(f"{emulator.url}/_emulator/google/weight", json=weight, timeout=10).status_code == 201
    assert requests.get(f"{emulator.url}/_emulator/google/push", params={"wait": 20}, timeout=30) \
        .json()["pending"] == 0
    ((account, payload),) = query(schema, "SELECT account_id, payload FROM webhook_event")
    assert account == "108527364915620845632" and json.loads(payload)["data"]["dataType"] == "weight"

    code, out, _ = run(capsys, "create", "--project", PROJECT, "--subscriber-id", "fitness-sync",
                       "--endpoint-url", endpoint, "--secret", SECRET)
    assert code == 1  # it exists
    assert run(capsys, "delete", "--project", PROJECT, "--subscriber-id", "fitness-sync")[:2] == (
        0, f"deleted projects/{PROJECT}/subscribers/fitness-sync\n")
    assert run(capsys, "show", "--project", PROJECT)[:2] == (0, f"no subscribers in project {PROJECT}\n")


def test_a_generated_secret_is_printed_first_and_fails_until_the_receiver_has_it(
        emulator: Any, endpoint: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, err = run(capsys, "create", "--project", PROJECT, "--subscriber-id", "fitness-sync",
                         "--endpoint-url", endpoint, "--data-types", "weight")
    assert code == 1
    (generated,) = re.findall(r"FITNESS_GOOGLE_ENDPOINT_SECRET='(Bearer [A-Za-z0-9_-]{43})'", out)
    assert "Google could not verify the endpoint" in err and "FITNESS_GOOGLE_ENDPOINT_SECRET" in err
    assert "run create again with the same --secret" in err and generated not in err
    # the receiver's own setting is the default secret (the command run where the receiver is configured)
    monkeypatch.setenv("FITNESS_GOOGLE_ENDPOINT_SECRET", SECRET)
    code, out, err = run(capsys, "create", "--project", PROJECT, "--subscriber-id", "fitness-sync",
                         "--endpoint-url", endpoint, "--data-types", "weight,nutrition-log")
    assert (code, err) == (0, "") and "(nutrition-log, weight)" in out


def test_the_token_comes_from_a_file_and_errors_say_what_to_do(
        emulator: Any, endpoint: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_ACCESS_TOKEN")
    code, _, err = run(capsys, "show", "--project", PROJECT)
    assert code == 1 and "GOOGLE_CLOUD_ACCESS_TOKEN=$(gcloud auth print-access-token)" in err
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert run(capsys, "show", "--project", PROJECT, "--access-token-file", str(token_file))[0] == 0
    token_file.write_text("")
    assert "is empty" in run(capsys, "show", "--project", PROJECT, "--access-token-file", str(token_file))[2]
    monkeypatch.setenv("GOOGLE_CLOUD_ACCESS_TOKEN", TOKEN)

    code, _, err = run(capsys, "delete", "--project", PROJECT, "--subscriber-id", "nobody-here")
    assert code == 1 and "there is no subscriber 'nobody-here'" in err and f"show --project {PROJECT}" in err
    code, _, err = run(capsys, "create", "--project", PROJECT, "--subscriber-id", "Bad_Id", "--endpoint-url",
                       endpoint, "--secret", SECRET)
    assert code == 1 and "4 to 36 characters" in err
    code, _, err = run(capsys, "create", "--project", PROJECT, "--subscriber-id", "fitness-sync", "--endpoint-url",
                       endpoint, "--secret", SECRET, "--data-types", "bodyFat")
    assert code == 1 and "kebab-case" in err
    code, _, err = run(capsys, "show", "--project", PROJECT, "--api-root", "http://127.0.0.1:9")
    assert code == 1 and "cannot reach the Google Health API at http://127.0.0.1:9" in err
    code, _, err = run(capsys, "show", "--project", PROJECT, "--conn-id", "no_such_connection")
    assert code == 1 and "'no_such_connection'" in err and "--api-root" in err


def test_the_functions_answer_the_resources(emulator: Any, endpoint: str) -> None:
    created = google_subscriber.create_subscriber(emulator.url, PROJECT, "fitness-sync", endpoint, ["weight"],
                                                  SECRET, TOKEN)
    assert created["name"] == f"projects/{PROJECT}/subscribers/fitness-sync"
    assert created["endpointAuthorization"] == {"secretSet": True}
    assert google_subscriber.list_subscribers(emulator.url, PROJECT, TOKEN) == [created]
    google_subscriber.delete_subscriber(emulator.url, PROJECT, "fitness-sync", TOKEN)
    assert google_subscriber.list_subscribers(emulator.url, PROJECT, TOKEN) == []
    with pytest.raises(SubscriberError, match="no Google Cloud access token"):
        google_subscriber.list_subscribers(emulator.url, PROJECT, " ")
    assert google_subscriber.new_secret().startswith("Bearer ") and len(google_subscriber.new_secret()) == 50


def test_it_runs_as_a_module() -> None:
    answer = subprocess.run([sys.executable, "-m", "fitness_pipeline.google_subscriber", "--help"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert answer.returncode == 0 and "create" in answer.stdout and "delete" in answer.stdout


@pytest.mark.parametrize(("status", "error", "expected"), [
    (401, {"status": "UNAUTHENTICATED"}, "access token was refused (401 UNAUTHENTICATED): get a fresh one"),
    (403, {"status": "PERMISSION_DENIED", "message": "Health API has not been used in project"},
     "the Google Health API must be enabled"),
    (503, {"status": "UNAVAILABLE", "message": "try later"}, "try again in a few minutes"),
    (400, {"status": "INVALID_ARGUMENT", "message": "bad dataTypes"}, "refused the request (400 INVALID_ARGUMENT: "
                                                                       "bad dataTypes)"),
])
def test_googles_errors_are_explained(status: int, error: dict[str, Any], expected: str) -> None:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps({"error": {"code": status, **error}}).encode()
    assert expected in str(google_subscriber._failure(response, project=PROJECT, action="show"))
