"""Local emulator of the fitness APIs the DAGs talk to (Strava API v3, Google OAuth + Google Health API v4).

>>> with start_emulator(EmulatorSettings(seed=7)) as emu:
...     emu.url  # doctest: +SKIP
'http://127.0.0.1:PORT'
"""

from fitness_emulator.app import EmulatorSettings, EmulatorState, create_app
from fitness_emulator.google import GoogleSettings
from fitness_emulator.server import RunningEmulator, start_emulator
from fitness_emulator.strava import StravaSettings

__all__ = [
    "EmulatorSettings",
    "EmulatorState",
    "GoogleSettings",
    "RunningEmulator",
    "StravaSettings",
    "create_app",
    "start_emulator",
]
