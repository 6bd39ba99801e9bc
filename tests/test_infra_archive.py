"""Packaging of the function source and the content-derived object name."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from infra_mocks import MAIN_PY, make_function_dir

from infra.archive import FunctionSourceError, source_archive, source_files


def write_source(directory: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return directory


FILES = {
    "main.py": MAIN_PY,
    "requirements.txt": "requests==2.34.2\n",
    "forwarder/__init__.py": "",
    "forwarder/handler.py": "def handle(body):\n    return body\n",
}


def archive_name(directory: Path) -> str:
    return source_archive(directory)[0]


def test_name_has_expected_form(tmp_path: Path):
    name = archive_name(write_source(tmp_path, FILES))
    assert re.fullmatch(r"function-source-[0-9a-f]{16}\.zip", name), name


def test_same_content_elsewhere_gives_same_name(tmp_path: Path):
    first = write_source(tmp_path / "a", FILES)
    second = write_source(tmp_path / "b", dict(reversed(list(FILES.items()))))
    assert archive_name(first) == archive_name(second)


def test_copy_with_new_mtimes_gives_same_name(tmp_path: Path):
    original = write_source(tmp_path / "a", FILES)
    name = archive_name(original)
    copy = tmp_path / "b"
    shutil.copytree(original, copy)
    for path in copy.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    assert archive_name(copy) == name
    os.utime(original / "main.py")
    assert archive_name(original) == name


def test_edited_file_changes_name(tmp_path: Path):
    directory = write_source(tmp_path, FILES)
    before = archive_name(directory)
    (directory / "forwarder" / "handler.py").write_text(
        "def handle(body):\n    return body[:1]\n", encoding="utf-8"
    )
    assert archive_name(directory) != before


def test_edit_to_any_file_changes_name(tmp_path: Path):
    directory = write_source(tmp_path, FILES)
    names = {archive_name(directory)}
    for relative in FILES:
        path = directory / relative
        path.write_text(path.read_text(encoding="utf-8") + "\n", encoding="utf-8")
        names.add(archive_name(directory))
    assert len(names) == len(FILES) + 1, f"an edit left the name unchanged: {names}"


def test_added_file_changes_name(tmp_path: Path):
    directory = write_source(tmp_path, FILES)
    before = archive_name(directory)
    write_source(directory, {"forwarder/retry.py": "ATTEMPTS = 3\n"})
    assert archive_name(directory) != before


def test_renamed_file_changes_name(tmp_path: Path):
    directory = write_source(tmp_path, FILES)
    before = archive_name(directory)
    (directory / "forwarder" / "handler.py").rename(
        directory / "forwarder" / "handlers.py"
    )
    assert archive_name(directory) != before


def test_moved_bytes_between_name_and_content_change_name(tmp_path: Path):
    first = write_source(tmp_path / "a", {"main.py": MAIN_PY, "ab": "c"})
    second = write_source(tmp_path / "b", {"main.py": MAIN_PY, "a": "bc"})
    assert archive_name(first) != archive_name(second)


def test_generated_and_hidden_files_skipped(tmp_path: Path):
    directory = write_source(tmp_path, FILES)
    before = archive_name(directory)
    write_source(
        directory,
        {
            "__pycache__/main.cpython-312.pyc": "bytecode",
            "forwarder/__pycache__/handler.cpython-312.pyc": "bytecode",
            "forwarder/stale.pyc": "bytecode",
            ".env": "SECRET=1",
            ".venv/lib/site.py": "x = 1",
            "forwarder/.hidden": "x",
        },
    )
    assert archive_name(directory) == before
    relative_paths = [relative for relative, _ in source_files(directory)]
    assert relative_paths == sorted(FILES)


def test_archive_holds_each_file(tmp_path: Path):
    directory = write_source(tmp_path, FILES)
    _name, archive = source_archive(directory)
    assert sorted(archive.assets) == sorted(FILES)
    assert archive.assets["main.py"].path == str(directory / "main.py")


def test_missing_directory_rejected(tmp_path: Path):
    with pytest.raises(FunctionSourceError, match="does not exist"):
        source_archive(tmp_path / "absent")


def test_empty_directory_rejected(tmp_path: Path):
    with pytest.raises(FunctionSourceError, match="contains no files"):
        source_archive(tmp_path)


def test_directory_without_main_rejected(tmp_path: Path):
    write_source(tmp_path, {"requirements.txt": "requests\n"})
    with pytest.raises(FunctionSourceError, match="main.py"):
        source_archive(tmp_path)


def test_test_helper_directory_is_deployable(tmp_path: Path):
    name, archive = source_archive(make_function_dir(tmp_path))
    assert name.startswith("function-source-")
    assert sorted(archive.assets) == ["main.py", "requirements.txt"]
