"""Checks of the function's CPU, memory and scale against Cloud Run and Mixpanel.

The CPU and memory cases follow the tables on Cloud Run's CPU limits and
memory limits pages for services, which a 2nd gen function's service obeys.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from infra_mocks import (
    ROOT,
    SA_USERNAME,
    SECRET_VALUE,
    base_config,
    build,
    load,
    make_function_dir,
    project_key,
)

from infra.config import ConfigError


def sizing(memory: str, cpu: str, **overrides: str) -> dict[str, str]:
    return base_config(functionMemory=memory, functionCpu=cpu, **overrides)


def rejection(config: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(config)
    return caught.value


@pytest.mark.parametrize(
    ("memory", "cpu"),
    [
        ("128Mi", "0.083"),
        ("256Mi", "0.167"),
        ("512Mi", "0.08"),
        ("1Gi", "0.5"),
        ("1Gi", "0.583"),
        ("2G", "1"),
        ("4Gi", "1"),
        ("8Gi", "2"),
        ("2Gi", "4"),
        ("16Gi", "4"),
        ("4Gi", "6"),
        ("24Gi", "6"),
        ("32Gi", "8"),
        ("512Mi", "0.999"),
    ],
)
def test_cloud_run_sizes_accepted(memory: str, cpu: str):
    cfg = load(sizing(memory, cpu))
    assert cfg.function_memory == memory
    assert cfg.function_cpu == cpu


@pytest.mark.parametrize(
    ("memory", "cpu", "needed", "ceiling"),
    [
        ("1Gi", "0.167", "0.5", "512Mi"),
        ("2Gi", "0.583", "1", "1Gi"),
        ("5Gi", "1", "2", "4Gi"),
        ("9Gi", "2", "4", "8Gi"),
        ("17Gi", "4", "6", "16Gi"),
        ("25Gi", "6", "8", "24Gi"),
    ],
)
def test_memory_above_cpu_ceiling_rejected(
    memory: str, cpu: str, needed: str, ceiling: str
):
    error = rejection(sizing(memory, cpu))
    message = str(error)
    assert error.key == "functionMemory"
    assert memory in message
    assert f"functionCpu is {cpu}" in message
    assert f"pulumi config set functionCpu {needed}" in message
    assert f"pulumi config set functionMemory {ceiling}" in message


@pytest.mark.parametrize(
    ("memory", "cpu", "floor"),
    [("1Gi", "4", "2Gi"), ("2Gi", "6", "4Gi"), ("3Gi", "8", "4Gi")],
)
def test_memory_below_cpu_floor_rejected(memory: str, cpu: str, floor: str):
    error = rejection(sizing(memory, cpu))
    message = str(error)
    assert error.key == "functionMemory"
    assert memory in message
    assert floor in message
    assert f"pulumi config set functionMemory {floor}" in message


@pytest.mark.parametrize("memory", ["64Mi", "100M", "128M", "33Gi", "40G"])
def test_memory_outside_cloud_run_range_rejected(memory: str):
    error = rejection(sizing(memory, "1"))
    assert error.key == "functionMemory"
    assert memory in str(error)
    assert "128Mi-32Gi" in str(error)
    assert "pulumi config set functionMemory" in str(error)


@pytest.mark.parametrize("cpu", ["3", "1.5", "0.05", "16", "nan", "inf"])
def test_cpu_outside_cloud_run_values_rejected(cpu: str):
    error = rejection(sizing("512Mi", cpu))
    assert error.key == "functionCpu"
    assert cpu in str(error)
    assert "1, 2, 4, 6, 8" in str(error)
    assert "pulumi config set functionCpu" in str(error)


def test_cpu_finer_than_step_rejected():
    error = rejection(sizing("256Mi", "0.1667"))
    assert error.key == "functionCpu"
    assert "0.1667" in str(error)
    assert "0.001" in str(error)


def warnings_for(**overrides: str) -> list[str]:
    warnings: list[str] = []
    load(base_config(**overrides), warnings=warnings)
    return warnings


def test_defaults_stay_below_mixpanel_limit():
    assert warnings_for() == [], "the default sizing warns"


def test_sizing_at_mixpanel_limit_not_warned():
    assert warnings_for(maxInstances="15") == [], "15 pushes at once warn"


def test_sizing_above_mixpanel_limit_warned():
    warnings = warnings_for(maxInstances="16")
    assert len(warnings) == 1, warnings
    assert "maxInstances (16)" in warnings[0]
    assert "32000 events per second" in warnings[0]
    assert "30000" in warnings[0]
    assert "pulumi config set maxInstances 15" in warnings[0]


def test_high_concurrency_warning_suggests_both_keys():
    warnings = warnings_for(
        functionCpu="1", functionMemory="512Mi", instanceConcurrency="20"
    )
    assert len(warnings) == 1, warnings
    assert "instanceConcurrency (20)" in warnings[0]
    assert "pulumi config set instanceConcurrency 15" in warnings[0]


def test_sizing_above_mixpanel_limit_still_deploys(tmp_path: Path):
    stack = build(base_config(maxInstances="100"), make_function_dir(tmp_path))
    function = stack.one("gcp:cloudfunctionsv2/function:Function")
    assert len(stack.warnings) == 1, stack.warnings
    assert function.inputs["serviceConfig"]["maxInstanceCount"] == 100, function.name


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_example_stacks_within_rate_limit(stack: str):
    path = ROOT / f"Pulumi.{stack}.yaml"
    values = {
        key: str(value)
        for key, value in yaml.safe_load(path.read_text(encoding="utf-8"))[
            "config"
        ].items()
    }
    values.setdefault(project_key("mixpanelServiceAccountUsername"), SA_USERNAME)
    values[project_key("mixpanelServiceAccountSecret")] = SECRET_VALUE
    warnings: list[str] = []
    load(values, stack=stack, warnings=warnings)
    assert warnings == [], f"Pulumi.{stack}.yaml warnings: {warnings}"
