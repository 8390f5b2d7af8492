"""Tooling for the demo, the local Airflow and the tests: never needed by a deployment."""
