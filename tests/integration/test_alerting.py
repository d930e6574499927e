"""The alerting automation the README documents registers on a real Prefect server."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_failure_automation_registers_with_a_notification_block(prefect_server):
    from prefect.automations import Automation
    from prefect.blocks.notifications import SlackWebhook

    code = next(
        block
        for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
        if "SendNotification" in block
    )
    block_id = SlackWebhook(url="https://hooks.slack.com/services/T000/B000/XXXX").save(
        "nightshift-alerts-test", overwrite=True
    )
    exec(code.replace("<your Slack webhook block id>", str(block_id)), {})

    created = Automation.read(name="nightshift-failed")
    assert created.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert str(created.actions[0].block_document_id) == str(block_id)
