"""The deployments on a real Prefect server: the form's bounds are enforced by the server,
so a run with a bad parameter is refused before any worker sees it (as the UI is)."""

import pytest

pytestmark = pytest.mark.integration


def test_server_refuses_a_run_whose_parameters_break_the_bounds(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    from flows.deployments import build_deployments
    from tasks.core.settings import Settings

    nightly, _ = build_deployments(Settings(home=tmp_path))
    deployment_id = nightly.apply()

    with get_client(sync_client=True) as client:
        with pytest.raises(PrefectHTTPStatusError) as refused:
            client.create_flow_run_from_deployment(
                deployment_id, parameters={"params": {"holdout_days": 500}}
            )
        assert refused.value.response.status_code == 409
        assert "holdout_days" in refused.value.response.text
        with pytest.raises(PrefectHTTPStatusError):
            client.create_flow_run_from_deployment(
                deployment_id, parameters={"params": {"train": {"epochs": 0}}}
            )
        with pytest.raises(PrefectHTTPStatusError):  # a dataset nightshift does not know
            client.create_flow_run_from_deployment(
                deployment_id, parameters={"params": {"dataset": "trains"}}
            )
        accepted = client.create_flow_run_from_deployment(
            deployment_id, parameters={"params": {"holdout_days": 14, "dataset": "hotels"}}
        )
        assert accepted.parameters["params"]["holdout_days"] == 14
        client.delete_flow_run(accepted.id)  # nothing serves this deployment here
        # its retraining trigger would turn later tests' decay events into stray runs
        client.delete_resource_owned_automations(f"prefect.deployment.{deployment_id}")
