"""The README's tables stay in step with Pulumi.yaml and the program."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from infra_mocks import base_config, build, make_function_dir

from infra import config
from infra.apis import APIS
from infra.grants import GRANTS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _table(heading: str) -> list[list[str]]:
    """Return the rows of the first table under `heading`, without the header."""
    section = README.split(f"\n{heading}\n", 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("## "):
            break
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows.append(cells)
    return [row for row in rows[2:]]


def _code(cell: str) -> str:
    match = re.fullmatch(r"`([^`]*)`", cell)
    return match.group(1) if match else cell


def _config_rows() -> dict[str, list[str]]:
    return {_code(row[0]): row for row in _table("## Configuration")}


def test_config_table_lists_every_key():
    assert set(_config_rows()) == set(config.KNOWN_KEYS)


def test_config_table_types_match_program():
    for key, row in _config_rows().items():
        assert row[2] == config.KNOWN_KEYS[key], f"type of {key}"


def test_config_table_defaults_match_program():
    for key, row in _config_rows().items():
        expected = config.DEFAULTS.get(key)
        shown = _code(row[3])
        if expected is None:
            assert shown == "", f"{key} has no default"
        elif expected == "":
            assert shown == '""', f"default of {key}"
        else:
            assert shown == str(expected), f"default of {key}"


def test_config_table_secret_column():
    for key, row in _config_rows().items():
        expected = "yes" if key in config.SECRET_KEYS else "no"
        assert row[5] == expected, f"secret column of {key}"


def test_config_table_matches_pulumi_yaml():
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text(encoding="utf-8"))
    project_keys = {key for key in declared["config"] if ":" not in key}
    table_keys = {key for key in _config_rows() if ":" not in key}

    assert table_keys == project_keys


def test_outputs_table_matches_stack(tmp_path):
    built = build(base_config(), make_function_dir(tmp_path))
    rows = {_code(row[0]) for row in _table("## Stack outputs")}

    assert rows == set(built.outputs)


def test_requirements_list_every_api():
    rows = _table("## Requirements")
    listed = {_code(row[0]) for row in rows}

    assert listed == {api for api, _reason in APIS.values()}


def test_requirements_list_every_grant():
    section = README.split("\n## Requirements\n", 1)[1].split("\n## ", 1)[0]
    roles_table = section.split("| who | role | on what | why |", 1)[1]
    rows = {
        tuple(cell.strip() for cell in line.strip().strip("|").split("|")[:3])
        for line in roles_table.splitlines()[2:]
        if line.startswith("|")
    }
    expected = {(grant.member, f"`{grant.role}`", grant.resource) for grant in GRANTS}

    assert rows == expected
