"""CLI: ``python -m fitness_emulator [--port 0] [--seed 42] ...``.

Prints exactly one line ``READY http://127.0.0.1:PORT`` on stdout once the server
accepts connections, then runs until SIGTERM/SIGINT.  Logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from fitness_emulator.app import EmulatorSettings
from fitness_emulator.google import GoogleSettings
from fitness_emulator.server import start_emulator
from fitness_emulator.strava import StravaSettings


def _limit_pair(text: str) -> tuple[int, int]:
    try:
        window, daily = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WINDOW,DAILY (e.g. 100,1000), got {text!r}") from None
    return window, daily


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fitness_emulator", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--years", type=int, default=5, help="years of calendar-mode history")
    parser.add_argument("--activities", type=int, default=None, help="exactly N activities ending now")
    parser.add_argument("--athlete-id", type=int, default=StravaSettings.athlete_id)
    parser.add_argument("--scope", default=StravaSettings.scope)
    parser.add_argument("--read-limit", type=_limit_pair, default=StravaSettings.read_limit, metavar="W,D")
    parser.add_argument("--overall-limit", type=_limit_pair, default=StravaSettings.overall_limit, metavar="W,D")
    parser.add_argument("--rate-window", type=int, default=StravaSettings.rate_window_seconds, metavar="SECONDS")
    parser.add_argument("--access-token-ttl", type=int, default=StravaSettings.access_token_ttl, metavar="SECONDS")
    parser.add_argument("--short-page-every", type=int, default=0, metavar="N")
    parser.add_argument(
        "--extra-athletes", type=int, default=0, metavar="N", help="athletes athlete-id+1 .. +N of the same app"
    )
    google = parser.add_argument_group("Google Health (Fitbit successor)")
    google.add_argument("--google-years", type=int, default=GoogleSettings.years, metavar="N")
    google.add_argument(
        "--google-requests-per-minute", type=int, default=GoogleSettings.requests_per_minute, metavar="N"
    )
    google.add_argument("--google-testing-app", action="store_true", help="refresh tokens expire after 7 days")
    google.add_argument("--google-rotate-refresh-tokens", action="store_true")
    google.add_argument("--google-account-not-linked", action="store_true", help="data requests: ACCOUNT_NOT_LINKED")
    google.add_argument("--google-extra-users", type=int, default=0, metavar="N", help="more users of the same client")
    parser.add_argument("--access-log", action="store_true", help="log every request to stderr")
    parser.add_argument("--log-level", default="INFO")
    return parser


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    return EmulatorSettings(
        seed=args.seed,
        host=args.host,
        port=args.port,
        access_log=args.access_log,
        strava=StravaSettings(
            athlete_id=args.athlete_id,
            years=args.years,
            activities=args.activities,
            scope=args.scope,
            read_limit=args.read_limit,
            overall_limit=args.overall_limit,
            rate_window_seconds=args.rate_window,
            access_token_ttl=args.access_token_ttl,
            short_page_every=args.short_page_every,
            extra_athletes=args.extra_athletes,
        ),
        google=GoogleSettings(
            years=args.google_years,
            requests_per_minute=args.google_requests_per_minute,
            testing_app=args.google_testing_app,
            rotate_refresh_tokens=args.google_rotate_refresh_tokens,
            account_linked=not args.google_account_not_linked,
            extra_users=args.google_extra_users,
        ),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("fitness_emulator").info("signal %s: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with start_emulator(settings_from_args(args)) as emulator:
        print(f"READY {emulator.url}", flush=True)
        while not stop.wait(0.5):
            if not emulator.running:
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
