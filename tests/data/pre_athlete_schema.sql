-- The fitness schema as the last release before athletes made it: ensure_schema at commit 07a9d6c, then
-- pg_dump --schema-only --no-owner --no-privileges (session settings removed). Read by tests/test_athletes.py.

CREATE TABLE public.api_budget (
    budget_key text NOT NULL,
    window_index bigint NOT NULL,
    window_used integer NOT NULL,
    window_limit integer NOT NULL,
    day_index integer NOT NULL,
    day_used integer NOT NULL,
    day_limit integer NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE public.api_rate_limit (
    api text NOT NULL,
    bucket text NOT NULL,
    window_usage integer NOT NULL,
    window_limit integer NOT NULL,
    daily_usage integer NOT NULL,
    daily_limit integer NOT NULL,
    window_seconds integer,
    seen_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE public.extract_cursor (
    batch_id text NOT NULL,
    after_epoch bigint NOT NULL,
    landed integer NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    window_start timestamp with time zone,
    window_end timestamp with time zone
);

CREATE TABLE public.fitbit_calories (
    record_date date NOT NULL,
    id bigint NOT NULL,
    calories double precision NOT NULL,
    raw jsonb NOT NULL,
    deleted_at timestamp with time zone,
    first_seen timestamp with time zone DEFAULT now() NOT NULL,
    last_time timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE public.fitbit_height (
    id numeric(20,0) NOT NULL,
    height_mm integer NOT NULL,
    measured_at timestamp with time zone NOT NULL,
    data_point_name text NOT NULL,
    raw jsonb NOT NULL,
    first_seen timestamp with time zone DEFAULT now() NOT NULL,
    last_time timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE public.fitbit_weight (
    id numeric(20,0) NOT NULL,
    weight double precision NOT NULL,
    bmi double precision,
    fat double precision,
    record_date date NOT NULL,
    record_time time without time zone,
    measured_at timestamp with time zone NOT NULL,
    utc_offset integer,
    platform text,
    recording_method text,
    data_point_name text NOT NULL,
    raw jsonb NOT NULL,
    deleted_at timestamp with time zone,
    first_seen timestamp with time zone DEFAULT now() NOT NULL,
    last_time timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE public.oauth_token (
    token_key text NOT NULL,
    refresh_token text NOT NULL,
    access_token text,
    expires_at timestamp with time zone,
    seed_fingerprint text NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE public.quarantine (
    source text NOT NULL,
    record_key text NOT NULL,
    reason text NOT NULL,
    payload text NOT NULL,
    first_seen timestamp with time zone DEFAULT now() NOT NULL,
    last_seen timestamp with time zone DEFAULT now() NOT NULL,
    times_seen integer DEFAULT 1 NOT NULL
);

CREATE VIEW public.rate_limit_health AS
 SELECT api,
    bucket,
    window_usage,
    window_limit,
    daily_usage,
    daily_limit,
    seen_at,
    window_seconds,
    to_timestamp((((floor((EXTRACT(epoch FROM seen_at) / (window_seconds)::numeric)) + (1)::numeric) * (window_seconds)::numeric))::double precision) AS window_resets_at,
    to_timestamp((((floor((EXTRACT(epoch FROM seen_at) / (86400)::numeric)) + (1)::numeric) * (86400)::numeric))::double precision) AS daily_resets_at
   FROM public.api_rate_limit;

COMMENT ON VIEW public.rate_limit_health IS 'the rate-limit usage an API''s headers last showed, per bucket; the usage counts are those of the window and day of seen_at (they reset at window_resets_at and daily_resets_at, UTC)';

CREATE TABLE public.raw_record (
    batch_id text NOT NULL,
    seq integer NOT NULL,
    payload text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE UNLOGGED TABLE public.stage_fitbit_calories (
    batch_id text NOT NULL,
    seq integer NOT NULL,
    record_date date,
    id bigint,
    calories double precision,
    raw jsonb,
    created_at timestamp with time zone DEFAULT now() NOT NULL
)
WITH (toast_tuple_target='8160');

CREATE UNLOGGED TABLE public.stage_fitbit_height (
    batch_id text NOT NULL,
    seq integer NOT NULL,
    id numeric(20,0),
    height_mm integer,
    measured_at timestamp with time zone,
    data_point_name text,
    raw jsonb,
    created_at timestamp with time zone DEFAULT now() NOT NULL
)
WITH (toast_tuple_target='8160');

CREATE UNLOGGED TABLE public.stage_fitbit_weight (
    batch_id text NOT NULL,
    seq integer NOT NULL,
    id numeric(20,0),
    weight double precision,
    bmi double precision,
    fat double precision,
    record_date date,
    record_time time without time zone,
    measured_at timestamp with time zone,
    utc_offset integer,
    platform text,
    recording_method text,
    data_point_name text,
    raw jsonb,
    created_at timestamp with time zone DEFAULT now() NOT NULL
)
WITH (toast_tuple_target='8160');

CREATE UNLOGGED TABLE public.stage_strava_activity (
    batch_id text NOT NULL,
    seq integer NOT NULL,
    id bigint,
    owner bigint,
    activity_type text,
    sport_type text,
    name text,
    distance double precision,
    moving_time integer,
    elapsed_time integer,
    total_elevation_gain double precision,
    average_speed double precision,
    max_speed double precision,
    average_cadence double precision,
    average_heartrate double precision,
    max_heartrate double precision,
    average_watts double precision,
    kilojoules double precision,
    start_date timestamp with time zone,
    start_date_local timestamp without time zone,
    timezone text,
    utc_offset double precision,
    upload_id numeric(30,0),
    external_id text,
    device_name text,
    gear_id text,
    manual boolean,
    private boolean,
    visibility text,
    trainer boolean,
    commute boolean,
    workout_type integer,
    raw jsonb,
    created_at timestamp with time zone DEFAULT now() NOT NULL
)
WITH (toast_tuple_target='8160');

CREATE TABLE public.strava_activity (
    id bigint NOT NULL,
    owner bigint,
    activity_type text,
    sport_type text,
    name text,
    distance double precision,
    moving_time integer,
    elapsed_time integer,
    total_elevation_gain double precision,
    average_speed double precision,
    max_speed double precision,
    average_cadence double precision,
    average_heartrate double precision,
    max_heartrate double precision,
    average_watts double precision,
    kilojoules double precision,
    start_date timestamp with time zone NOT NULL,
    start_date_local timestamp without time zone,
    timezone text,
    utc_offset double precision,
    upload_id numeric(30,0),
    external_id text,
    device_name text,
    gear_id text,
    manual boolean,
    private boolean,
    visibility text,
    trainer boolean,
    commute boolean,
    workout_type integer,
    raw jsonb NOT NULL,
    deleted_at timestamp with time zone,
    first_seen timestamp with time zone DEFAULT now() NOT NULL,
    last_time timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE public.sync_run (
    batch_id text NOT NULL,
    source text NOT NULL,
    window_start timestamp with time zone,
    window_end timestamp with time zone,
    extracted integer NOT NULL,
    quarantined integer NOT NULL,
    inserted integer NOT NULL,
    updated integer NOT NULL,
    unchanged integer NOT NULL,
    deleted integer DEFAULT 0 NOT NULL,
    finished_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE VIEW public.sync_health AS
 WITH RECURSIVE seen_source(source) AS (
         SELECT min(sync_run.source) AS source
           FROM public.sync_run
        UNION ALL
         SELECT ( SELECT min(after.source) AS min_1
                   FROM public.sync_run after
                  WHERE (after.source > seen_source.source)) AS anon_1
           FROM seen_source
          WHERE (seen_source.source IS NOT NULL)
        )
 SELECT s.source,
    last_run.batch_id AS last_batch_id,
    last_run.finished_at AS last_finished_at,
    last_run.window_start,
    last_run.window_end,
    last_run.extracted,
    last_run.inserted,
    last_run.updated,
    last_run.unchanged,
    last_run.deleted,
    last_run.quarantined,
    ( SELECT count(*) AS count_1
           FROM public.sync_run recent
          WHERE ((recent.source = s.source) AND (recent.finished_at > (now() - '24:00:00'::interval)))) AS runs_last_24h,
    ( SELECT count(*) AS count_2
           FROM public.quarantine held
          WHERE (held.source = s.source)) AS quarantined_now
   FROM (( SELECT seen_source.source
           FROM seen_source
          WHERE (seen_source.source IS NOT NULL)
        UNION
         SELECT quarantine.source
           FROM public.quarantine) s
     LEFT JOIN LATERAL ( SELECT sync_run.batch_id,
            sync_run.finished_at,
            sync_run.window_start,
            sync_run.window_end,
            sync_run.extracted,
            sync_run.inserted,
            sync_run.updated,
            sync_run.unchanged,
            sync_run.deleted,
            sync_run.quarantined
           FROM public.sync_run
          WHERE (sync_run.source = s.source)
          ORDER BY sync_run.finished_at DESC, sync_run.batch_id DESC
         LIMIT 1) last_run ON (true));

COMMENT ON VIEW public.sync_health IS 'per source seen in sync_run or quarantine: its latest loaded batch (by finished_at) and what it did, the batches of the last 24 hours and the records in quarantine now; no payloads';

CREATE VIEW public.token_health AS
 SELECT token_key,
    split_part(token_key, ':'::text, 1) AS conn_type,
    substr(token_key, (strpos(token_key, ':'::text) + 1)) AS conn_id,
    updated_at AS refreshed_at,
    expires_at
   FROM public.oauth_token;

COMMENT ON VIEW public.token_health IS 'when each stored OAuth token was last refreshed and when its access token expires; never a token value';

CREATE VIEW public.training_activity AS
 SELECT id,
    (start_date_local)::date AS day,
    (date_trunc('week'::text, start_date_local))::date AS week_start,
    start_date_local,
    COALESCE(sport_type, activity_type) AS sport_type,
    name,
    (distance / (1000.0)::double precision) AS distance_km,
    moving_time AS moving_time_s,
    elapsed_time AS elapsed_time_s,
    total_elevation_gain AS elevation_m,
        CASE
            WHEN ((COALESCE(sport_type, activity_type) = ANY (ARRAY['Run'::text, 'TrailRun'::text, 'VirtualRun'::text])) AND (distance > (0)::double precision)) THEN ((moving_time)::double precision / (distance / (1000.0)::double precision))
            ELSE NULL::double precision
        END AS pace_s_per_km,
    average_heartrate
   FROM public.strava_activity
  WHERE ((deleted_at IS NULL) AND (start_date_local IS NOT NULL));

COMMENT ON VIEW public.training_activity IS 'one row per Strava activity not deleted, on its local date (start_date_local); distance in km, pace in s/km for runs only';

CREATE VIEW public.training_day AS
 SELECT day,
    week_start,
    count(activity_id) AS activities,
    COALESCE(sum(distance_km), (0)::double precision) AS distance_km,
    COALESCE(sum(moving_time_s), (0)::bigint) AS moving_time_s,
    COALESCE(sum(elevation_m), (0)::double precision) AS elevation_m,
    avg(weight_kg) AS weight_kg,
    count(weight_kg) AS weighins,
    sum(kcal) AS kcal
   FROM ( SELECT training_activity.day,
            training_activity.week_start,
            training_activity.id AS activity_id,
            training_activity.distance_km,
            training_activity.moving_time_s,
            training_activity.elevation_m,
            NULL::double precision AS weight_kg,
            NULL::double precision AS kcal
           FROM public.training_activity
        UNION ALL
         SELECT fitbit_weight.record_date AS day,
            (date_trunc('week'::text, (fitbit_weight.record_date)::timestamp without time zone))::date AS week_start,
            NULL::bigint AS activity_id,
            NULL::double precision AS distance_km,
            NULL::integer AS moving_time_s,
            NULL::double precision AS elevation_m,
            fitbit_weight.weight AS weight_kg,
            NULL::double precision AS kcal
           FROM public.fitbit_weight
          WHERE (fitbit_weight.deleted_at IS NULL)
        UNION ALL
         SELECT fitbit_calories.record_date AS day,
            (date_trunc('week'::text, (fitbit_calories.record_date)::timestamp without time zone))::date AS week_start,
            NULL::bigint AS activity_id,
            NULL::double precision AS distance_km,
            NULL::integer AS moving_time_s,
            NULL::double precision AS elevation_m,
            NULL::double precision AS weight_kg,
            fitbit_calories.calories AS kcal
           FROM public.fitbit_calories
          WHERE (fitbit_calories.deleted_at IS NULL)) entry
  GROUP BY day, week_start;

COMMENT ON VIEW public.training_day IS 'one row per local date with an activity, a weigh-in or a nutrition log; weight_kg is the mean of the day''s weigh-ins, kcal is null (not 0) on a day without a nutrition log';

CREATE VIEW public.training_week AS
 SELECT week_start,
    count(activity_id) AS activities,
    COALESCE(sum(distance_km), (0)::double precision) AS distance_km,
    COALESCE(sum(moving_time_s), (0)::bigint) AS moving_time_s,
    COALESCE(sum(elevation_m), (0)::double precision) AS elevation_m,
    avg(weight_kg) AS avg_weight_kg,
    count(weight_kg) AS weighins,
    avg(kcal) AS avg_kcal,
    count(kcal) AS logged_days
   FROM ( SELECT training_activity.day,
            training_activity.week_start,
            training_activity.id AS activity_id,
            training_activity.distance_km,
            training_activity.moving_time_s,
            training_activity.elevation_m,
            NULL::double precision AS weight_kg,
            NULL::double precision AS kcal
           FROM public.training_activity
        UNION ALL
         SELECT fitbit_weight.record_date AS day,
            (date_trunc('week'::text, (fitbit_weight.record_date)::timestamp without time zone))::date AS week_start,
            NULL::bigint AS activity_id,
            NULL::double precision AS distance_km,
            NULL::integer AS moving_time_s,
            NULL::double precision AS elevation_m,
            fitbit_weight.weight AS weight_kg,
            NULL::double precision AS kcal
           FROM public.fitbit_weight
          WHERE (fitbit_weight.deleted_at IS NULL)
        UNION ALL
         SELECT fitbit_calories.record_date AS day,
            (date_trunc('week'::text, (fitbit_calories.record_date)::timestamp without time zone))::date AS week_start,
            NULL::bigint AS activity_id,
            NULL::double precision AS distance_km,
            NULL::integer AS moving_time_s,
            NULL::double precision AS elevation_m,
            NULL::double precision AS weight_kg,
            fitbit_calories.calories AS kcal
           FROM public.fitbit_calories
          WHERE (fitbit_calories.deleted_at IS NULL)) entry
  GROUP BY week_start;

COMMENT ON VIEW public.training_week IS 'one row per ISO week (Monday first, local dates) with any data; avg_weight_kg is the mean of the week''s weigh-ins, avg_kcal the mean over the days with a nutrition log (logged_days)';

CREATE VIEW public.training_week_sport AS
 SELECT week_start,
    sport_type,
    count(id) AS activities,
    COALESCE(sum(distance_km), (0)::double precision) AS distance_km,
    COALESCE(sum(moving_time_s), (0)::bigint) AS moving_time_s,
    COALESCE(sum(elevation_m), (0)::double precision) AS elevation_m
   FROM public.training_activity
  GROUP BY week_start, sport_type;

COMMENT ON VIEW public.training_week_sport IS 'activities per ISO week (local dates) and sport type';

ALTER TABLE ONLY public.api_budget
    ADD CONSTRAINT api_budget_pkey PRIMARY KEY (budget_key);

ALTER TABLE ONLY public.api_rate_limit
    ADD CONSTRAINT api_rate_limit_pkey PRIMARY KEY (api, bucket);

ALTER TABLE ONLY public.extract_cursor
    ADD CONSTRAINT extract_cursor_pkey PRIMARY KEY (batch_id);

ALTER TABLE ONLY public.fitbit_calories
    ADD CONSTRAINT fitbit_calories_id_key UNIQUE (id);

ALTER TABLE ONLY public.fitbit_calories
    ADD CONSTRAINT fitbit_calories_pkey PRIMARY KEY (record_date);

ALTER TABLE ONLY public.fitbit_height
    ADD CONSTRAINT fitbit_height_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.fitbit_weight
    ADD CONSTRAINT fitbit_weight_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.oauth_token
    ADD CONSTRAINT oauth_token_pkey PRIMARY KEY (token_key);

ALTER TABLE ONLY public.quarantine
    ADD CONSTRAINT quarantine_pkey PRIMARY KEY (source, record_key);

ALTER TABLE ONLY public.raw_record
    ADD CONSTRAINT raw_record_pkey PRIMARY KEY (batch_id, seq);

ALTER TABLE ONLY public.stage_fitbit_calories
    ADD CONSTRAINT stage_fitbit_calories_pkey PRIMARY KEY (batch_id, seq);

ALTER TABLE ONLY public.stage_fitbit_height
    ADD CONSTRAINT stage_fitbit_height_pkey PRIMARY KEY (batch_id, seq);

ALTER TABLE ONLY public.stage_fitbit_weight
    ADD CONSTRAINT stage_fitbit_weight_pkey PRIMARY KEY (batch_id, seq);

ALTER TABLE ONLY public.stage_strava_activity
    ADD CONSTRAINT stage_strava_activity_pkey PRIMARY KEY (batch_id, seq);

ALTER TABLE ONLY public.strava_activity
    ADD CONSTRAINT strava_activity_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.sync_run
    ADD CONSTRAINT sync_run_pkey PRIMARY KEY (batch_id);

CREATE INDEX ix_fitbit_weight_measured_at ON public.fitbit_weight USING btree (measured_at);

CREATE INDEX ix_fitbit_weight_record_date ON public.fitbit_weight USING btree (record_date);

CREATE INDEX ix_strava_activity_local_day ON public.strava_activity USING btree (((start_date_local)::date));

CREATE INDEX ix_strava_activity_local_week ON public.strava_activity USING btree (((date_trunc('week'::text, start_date_local))::date));

CREATE INDEX ix_strava_activity_owner_start_date ON public.strava_activity USING btree (owner, start_date);

CREATE INDEX ix_strava_activity_start_date ON public.strava_activity USING btree (start_date);

CREATE INDEX ix_sync_run_source_finished_at ON public.sync_run USING btree (source, finished_at);

