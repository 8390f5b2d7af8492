"""Pure transforms: API JSON in, table rows out. No I/O, no Airflow.

``fields`` reads values out of JSON (each reader raises ``RecordError`` naming the field), ``records``
turns a batch into rows and quarantine entries, and one module per API (mirroring ``hooks/``) holds
that API's row functions.
"""
