"""The job kinds' registry: every line names a kind that resolves, with its own prefix, and the job
core itself imports no kind (a new kind is one module in its package and one registry line)."""

from __future__ import annotations

import subprocess
import sys

from winnow.jobs.kinds import REGISTRY, kind, names
from winnow.jobs.store import JobStore


def test_every_registered_kind_resolves_with_its_own_prefix_and_one_way_to_run() -> None:
    kinds = [kind(name) for name in REGISTRY]
    assert [k.name for k in kinds] == list(REGISTRY)
    assert len({k.prefix for k in kinds}) == len(kinds)
    for k in kinds:
        assert (k.run is None) == k.sharded == (k.merge is not None), k.name
        assert k.pattern.match(JobStore.new_id(k.name))
        assert not k.pattern.match(JobStore.new_id(next(n for n in REGISTRY if n != k.name)))
    assert set(names(sharded=True)) | set(names(sharded=False)) == set(REGISTRY)


def test_the_job_core_imports_no_kind() -> None:
    code = (
        "import sys, winnow.jobs.worker, winnow.jobs.store, winnow.jobs.shards, winnow.jobs.processes;"
        "print(sorted(m for m in sys.modules if m.startswith(('winnow.sdg', 'winnow.evals', 'winnow.finetune'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
