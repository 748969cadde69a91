"""cluster.yaml passes the cluster launcher's own offline checks (no cloud calls)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from _paths import ROOT

CLUSTER_YAML = ROOT / "cluster.yaml"


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def prepared(config: dict[str, Any]) -> dict[str, Any]:
    """What ``ray up`` does before it talks to AWS: merge defaults, then schema-validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(config))
    validate_config(config)
    return config


def test_launcher_schema_accepts_it(raw: dict[str, Any]) -> None:
    config = prepared(raw)
    assert config["provider"]["type"] == "aws"


def test_schema_check_is_real(raw: dict[str, Any]) -> None:
    import jsonschema

    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_worker"]["min_workerz"] = 0
    with pytest.raises(jsonschema.ValidationError):
        prepared(bad)


def test_node_types(raw: dict[str, Any]) -> None:
    config = prepared(raw)
    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]
    assert head["node_config"]["InstanceType"] == "m5.2xlarge"
    assert head["resources"].get("CPU") == 0  # no trials on the head
    gpu = nodes["gpu_worker"]
    assert gpu["node_config"]["InstanceType"] == "g5.xlarge"
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1
    assert gpu["resources"]["GPU"] == 1
    assert config["max_workers"] >= gpu["max_workers"]


def test_installs_this_project(raw: dict[str, Any]) -> None:
    config = prepared(raw)
    mounted = {v for v in config["file_mounts"].values()}
    assert "." in mounted
    assert any("pip install -e ~/metaplat" in c for c in config["setup_commands"])


def test_dashboard_and_auth_stay_private(raw: dict[str, Any]) -> None:
    config = prepared(raw)
    start = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "0.0.0.0" not in start
    assert "--dashboard-host=127.0.0.1" in start
    assert start.count("RAY_AUTH_MODE=token") == 2
    assert "~/.ray/auth_token" in config["file_mounts"]
    # no security-group rule opens the dashboard, GCS or client ports
    text = CLUSTER_YAML.read_text()
    for node in config["available_node_types"].values():
        assert "SecurityGroupIds" not in node["node_config"]
    assert "IpPermissions" not in text
