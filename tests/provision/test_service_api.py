"""The Python API: what the CLI does, callable without click (`from cloudstack_deploy import ...`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .conftest import DEMO, CloudView


async def test_create_plan_list_and_teardown_from_python(home: Path, cloud_view: CloudView) -> None:
    from cloudstack_deploy import InvalidInput, load_blueprint, service  # type: ignore[attr-defined]

    bp = load_blueprint(DEMO)
    plan = await service.plan(bp, "py")
    assert plan.count("create") > 0
    outcome = await service.create_env(bp, "py", skip_rollout=True)
    assert [h.name for h in outcome.inventory.hosts] == ["py-web-1", "py-worker-1", "py-db-1"]
    assert outcome.inventory.app_url == f"http://{outcome.inventory.role_hosts('web')[0].public_ip}/"
    assert outcome.rollout is None
    assert [e.env for e in await service.environments()] == ["py"]
    result = await service.teardown("py")
    assert result.deleted and cloud_view.everything()["vms"] == []
    with pytest.raises(InvalidInput, match="no version to roll out"):
        await service.create_env(bp, "py")


def test_the_python_api_does_not_need_click_or_the_lab() -> None:
    import subprocess

    code = ("import sys; import cloudstack_deploy.service; "
            "assert 'click' not in sys.modules, 'click'; "
            "assert not [m for m in sys.modules if m.startswith('cloudstack_deploy.lab')], 'lab'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
