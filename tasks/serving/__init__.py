"""The model as a service: `models:/<name>@champion` over HTTP, following the alias.

Plain modules, no Prefect and no torch: `model.py` loads one registered version from its
artifacts (integrity checked, smoke tested), `schema.py` turns request bodies into the
model's input rows (MLflow `/invocations` and Open Inference Protocol v2), `follower.py`
polls the registry and swaps versions atomically, `app.py` is the HTTP application.
"""
