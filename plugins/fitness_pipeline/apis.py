"""Facts about the two upstream APIs that several modules use: hosts, OAuth endpoints and scopes,
paths and page limits (see shared/api-notes.md for where they come from).

The hooks, ``authorize`` (the OAuth bootstrap, which must not import Airflow) and ``provider``
(the connection forms, loaded by every Airflow process) all read them here. Only the standard
library: importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class OAuthApi:
    """One API's root and OAuth 2.0 details.

    The token endpoint is either fixed (``token_url``, Google's) or served by the API root itself
    (``token_path``, Strava's), so that a connection pointing at another root (an emulator) refreshes there.
    """

    name: str
    #: the connection's host when it names none
    default_host: str
    authorize_url: str
    scopes: tuple[str, ...]
    scope_separator: str
    #: extra query parameters of the consent URL
    consent_params: Mapping[str, str] = field(default_factory=dict)
    token_url: str | None = None
    token_path: str | None = None

    def default_token_url(self, api_root: str | None = None) -> str:
        """The token endpoint a connection with API root ``api_root`` refreshes at when its extra names none."""
        if self.token_url:
            return self.token_url
        return f"{(api_root or self.default_host).rstrip('/')}{self.token_path}"

    @property
    def scope(self) -> str:
        """The scopes as the consent URL writes them."""
        return self.scope_separator.join(self.scopes)


# --- Strava API v3 ---------------------------------------------------------------------------------

STRAVA = OAuthApi(
    name="Strava",
    default_host="https://www.strava.com",
    authorize_url="https://www.strava.com/oauth/authorize",
    token_path="/oauth/token",
    # activity:read_all: also the activities visible to "Only You"
    scopes=("read", "activity:read_all"),
    scope_separator=",",
    consent_params=MappingProxyType({"approval_prompt": "force"}),
)
STRAVA_ACTIVITIES_PATH = "/api/v3/athlete/activities"
#: ``GET {STRAVA_ACTIVITY_PATH}/{id}``: one DetailedActivity
STRAVA_ACTIVITY_PATH = "/api/v3/activities"
#: the largest ``per_page`` Strava accepts
STRAVA_MAX_PER_PAGE = 200
#: Strava's short rate-limit window (the long one is the UTC day)
STRAVA_RATE_LIMIT_WINDOW_SECONDS = 900

# --- Google Health API v4 (Fitbit data) ------------------------------------------------------------

GOOGLE_SCOPE_PREFIX = "https://www.googleapis.com/auth/"
GOOGLE_METRICS_SCOPE = f"{GOOGLE_SCOPE_PREFIX}googlehealth.health_metrics_and_measurements.readonly"
GOOGLE_NUTRITION_SCOPE = f"{GOOGLE_SCOPE_PREFIX}googlehealth.nutrition.readonly"
GOOGLE_HEALTH = OAuthApi(
    name="Google Health API",
    default_host="https://health.googleapis.com",
    authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
    token_url="https://oauth2.googleapis.com/token",
    scopes=(GOOGLE_METRICS_SCOPE, GOOGLE_NUTRITION_SCOPE),
    scope_separator=" ",
    # offline: a refresh token; consent: a new one even when the user consented before
    consent_params=MappingProxyType({"access_type": "offline", "prompt": "consent"}),
)
#: the scope each data type needs
GOOGLE_SCOPE_OF = MappingProxyType({"weight": GOOGLE_METRICS_SCOPE, "body-fat": GOOGLE_METRICS_SCOPE,
                                    "height": GOOGLE_METRICS_SCOPE, "nutrition-log": GOOGLE_NUTRITION_SCOPE})
GOOGLE_DATA_POINTS_PATH = "/v4/users/me/dataTypes/{data_type}/dataPoints"
GOOGLE_DAILY_ROLLUP_PATH = "/v4/users/me/dataTypes/{data_type}/dataPoints:dailyRollUp"
GOOGLE_IDENTITY_PATH = "/v4/users/me/identity"
#: the largest ``pageSize`` of a data-point listing
GOOGLE_MAX_PAGE_SIZE = 10_000
#: the longest range of one dailyRollUp call (400 INVALID_ROLLUP_QUERY_DURATION beyond)
GOOGLE_MAX_ROLLUP_DAYS = 90

#: the API of each connection type
API_OF = MappingProxyType({"strava": STRAVA, "fitbit": GOOGLE_HEALTH})
