"""Packaging of the function source directory into a content-named archive."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pulumi

# Hex digits of the SHA-256 kept in the object name: 64 bits, so two
# different sources colliding is not a practical concern.
DIGEST_LENGTH = 16

# The Python runtime of Cloud Run functions loads the entry point from here.
ENTRY_MODULE = "main.py"


class FunctionSourceError(pulumi.RunError):
    """The function source directory is missing or cannot be deployed."""


def source_files(directory: Path) -> list[tuple[str, Path]]:
    """List the files to deploy as (relative POSIX path, path), sorted.

    Skips dotfiles and dot directories (such as `.venv`), `__pycache__`
    directories and compiled `*.pyc` files, none of which the build needs.
    """
    files = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for file_name in names:
            if file_name.startswith(".") or file_name.endswith(".pyc"):
                continue
            path = Path(root, file_name)
            files.append((path.relative_to(directory).as_posix(), path))
    return sorted(files)


def source_archive(directory: Path) -> tuple[str, pulumi.AssetArchive]:
    """Return the object name and the archive of a function source directory.

    The name is `function-source-<digest>.zip`, where the digest covers each
    file's relative path and bytes in sorted order. It changes when a file is
    added, removed, renamed or edited, and stays the same across copies of the
    same files, so it ignores timestamps and directory listing order.

    Raises:
        FunctionSourceError: the directory does not exist, contains no files, or
            lacks the entry module `main.py`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FunctionSourceError(
            f"Function source directory {str(directory)!r} does not exist"
        )

    files = source_files(directory)
    if not files:
        raise FunctionSourceError(
            f"Function source directory {str(directory)!r} contains no files"
        )
    if ENTRY_MODULE not in {relative for relative, _ in files}:
        raise FunctionSourceError(
            f"Function source directory {str(directory)!r} has no {ENTRY_MODULE}, "
            "which the Python runtime loads the entry point from"
        )

    digest = hashlib.sha256()
    for relative, path in files:
        data = path.read_bytes()
        # Lengths keep the boundaries unambiguous, so moving bytes from one
        # file's content into another file's name changes the digest.
        encoded_name = relative.encode()
        digest.update(len(encoded_name).to_bytes(8, "big"))
        digest.update(encoded_name)
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)

    name = f"function-source-{digest.hexdigest()[:DIGEST_LENGTH]}.zip"
    archive = pulumi.AssetArchive(
        {relative: pulumi.FileAsset(str(path)) for relative, path in files}
    )
    return name, archive
