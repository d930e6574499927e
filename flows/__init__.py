"""Prefect flows (the DAG) and the `nightshift` CLI. Flows hold no business logic."""
