"""The bodies of the ``fitness_sync`` DAG's tasks, kept out of the DAG file so it parses fast.

One module per step: :mod:`.plan` (which window a run fetches), :mod:`.prepare` (the schema),
:mod:`.extract` (API → ``raw_record``), :mod:`.transform` (→ the staging tables and ``quarantine``)
and :mod:`.load` (staging → the tables and ``sync_run``, one transaction); the API-specific parts of a
step live in :mod:`.strava` and :mod:`.fitbit`, mirroring ``hooks/``.

Data moves between tasks through the fitness database, never through XCom: each task returns a
small typed summary (:mod:`fitness_pipeline.handover`). Every step can be retried: it first removes
what an earlier try of the same batch left behind. No transaction stays open across an HTTP request
or a rate-limit wait (a token refresh is serialized by a session-level advisory lock, not a row lock:
see :mod:`fitness_pipeline.tokens`).
"""
