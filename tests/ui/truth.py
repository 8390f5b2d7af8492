"""What the page must show, computed by hand-written SQL on the tables (never the views), for the
API and browser tests."""

# Per ISO week (Monday of start_date_local, the athlete's wall clock), straight from the tables.
WEEK_TRUTH_SQL = """
WITH a AS (SELECT date_trunc('week', start_date_local)::date AS week, count(*) AS activities,
                  sum(distance) / 1000.0 AS km, sum(moving_time) AS moving_s, sum(total_elevation_gain) AS climb_m
           FROM strava_activity WHERE deleted_at IS NULL GROUP BY 1),
     w AS (SELECT date_trunc('week', record_date)::date AS week, avg(weight) AS weight_kg
           FROM fitbit_weight WHERE deleted_at IS NULL GROUP BY 1),
     c AS (SELECT date_trunc('week', record_date)::date AS week, avg(calories) AS kcal, count(*) AS logged_days
           FROM fitbit_calories WHERE deleted_at IS NULL GROUP BY 1)
SELECT week, a.activities, a.km, a.moving_s, a.climb_m, w.weight_kg, c.kcal, c.logged_days
FROM a JOIN w USING (week) JOIN c USING (week)
WHERE week < date_trunc('week', now())::date  -- complete weeks
ORDER BY week
"""
