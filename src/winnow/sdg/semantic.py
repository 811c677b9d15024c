"""Semantic filters, after NeMo Curator's semantic dedup and SemDeDup: responses whose embeddings
are closer than a cosine threshold count as one, and the best-scored of them stays.

``semantic_dedupe`` {threshold, within, model, max_kept}:
- ``within: "prompt"``: among one prompt's responses (exact: a prompt's responses share a chunk).
- ``within: "job"``: also against every response kept so far in the job. The state is the
  embeddings of the rows already kept, so a resumed job rebuilds it from the kept rows its
  checkpoint holds (``resume``): nothing to save, nothing lost. Memory is bounded by ``max_kept``
  embeddings (float16: 100,000 x 384 dimensions = 77 MB for minilm-l6); past it, new responses are
  still compared with the first ``max_kept`` kept ones and with their own chunk's. A sharded job
  (several workers) or one on the Ray executor dedupes within each shard or actor.

The embedding model is a configured model of type ``embedding`` (default minilm-l6), loaded once
per process. ``diversity`` is the report a job with this filter gets in its summary.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from winnow.config import get_settings
from winnow.errors import InvalidRequest
from winnow.models.embedding import Embedder, Vectors
from winnow.sdg.filter_types import Filter
from winnow.sdg.filter_types import bad_params as _bad
from winnow.sdg.filter_types import check_params as _params
from winnow.sdg.filter_types import in_range as _in_range
from winnow.sdg.rows import Candidate

DEFAULT_MODEL = "minilm-l6"
DEFAULT_THRESHOLD = 0.7  # calibrated on tests/sdg/fixtures/near_duplicates.jsonl (README)
DEFAULT_MAX_KEPT = 100_000
DIVERSITY_SAMPLE = 1000  # kept responses the diversity report embeds, at most
Bank = npt.NDArray[np.float16]  # the kept responses' embeddings, half precision


@cache
def embedder(model: str) -> Embedder:
    """The configured embedding model ``model``, as a provider of this process's own (loaded lazily)."""
    from winnow.models.registry import provider_classes

    configs = {c.id: c for c in get_settings().models}
    config = configs.get(model)
    if config is None or config.type != "embedding":
        embedding = sorted(c.id for c in configs.values() if c.type == "embedding")
        raise InvalidRequest(f"{model!r} is not a configured embedding model", f"embedding models: {embedding}")
    provider = provider_classes()[config.provider](config, get_settings())
    if not isinstance(provider, Embedder):
        raise InvalidRequest(f"model {model!r} cannot embed here", f"provider {config.provider!r} is not local")
    return provider


def leaders(vectors: Vectors, threshold: float, bank: Bank | None = None) -> list[int]:
    """Greedy leader clustering in the given order: the rows of ``vectors`` (unit length) whose cosine
    with every earlier leader, and with every row of ``bank``, is below ``threshold``."""
    near_bank = _closest(bank, vectors) >= threshold if bank is not None and len(bank) else np.zeros(len(vectors), bool)
    kept: list[int] = []
    for i, vector in enumerate(vectors):
        if near_bank[i] or (kept and float(np.max(vectors[kept] @ vector)) >= threshold):
            continue
        kept.append(i)
    return kept


def _closest(bank: Bank, vectors: Vectors, block: int = 8192) -> npt.NDArray[np.float32]:
    """Each row's highest cosine with any row of ``bank``: float32 matrix products over blocks of the
    bank (numpy has no fast float16 product), so the extra memory stays one block."""
    best = np.full(len(vectors), -np.inf, dtype=np.float32)
    for start in range(0, len(bank), block):
        sims = bank[start : start + block].astype(np.float32) @ vectors.T
        best = np.maximum(best, sims.max(axis=0))
    return best


@dataclass
class SemanticDedupe:
    """Drop a response within ``threshold`` cosine of a better-scored one (same prompt, or the job's)."""

    threshold: float
    within: Literal["prompt", "job"]
    model: str
    max_kept: int
    scope: ClassVar[Literal["chunk"]] = "chunk"
    _bank: Bank = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float16), repr=False)

    def embed(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return embedder(self.model).embed_blocking(texts)

    def __call__(self, rows: list[Candidate]) -> list[Candidate]:
        if not rows:
            return []
        vectors = self.embed([c.text for c in rows])
        order = sorted(range(len(rows)), key=lambda i: (-_score(rows[i]), i))  # the best of a group stays
        keep: set[int] = set()
        if self.within == "prompt":
            groups: dict[str, list[int]] = {}
            for i in order:
                groups.setdefault(rows[i].row.id, []).append(i)
            for members in groups.values():
                keep.update(members[j] for j in leaders(vectors[members], self.threshold))
        else:
            chosen = [
                order[j] for j in leaders(vectors[order], self.threshold, self._bank if self._bank.size else None)
            ]
            keep.update(chosen)
            self._remember(vectors[sorted(chosen)])
        return [c for i, c in enumerate(rows) if i in keep]

    def _remember(self, vectors: Vectors) -> None:
        room = self.max_kept - len(self._bank)
        if room <= 0 or not len(vectors):
            return
        added = vectors[:room].astype(np.float16)
        self._bank = added if not self._bank.size else np.concatenate([self._bank, added])

    def resume(self, kept_texts: Iterable[str]) -> None:
        """Rebuild the job's state from the responses already kept (a resumed job's checkpointed rows)."""
        self._bank = np.zeros((0, 0), dtype=np.float16)
        if self.within != "job":
            return
        batch: list[str] = []
        for text in kept_texts:
            batch.append(text)
            if len(batch) == 256:
                self._remember(self.embed(batch))
                batch = []
        self._remember(self.embed(batch))


def _score(c: Candidate) -> float:
    score = c.score
    return float(score) if score is not None and np.isfinite(score) else float("-inf")


def semantic_dedupe(params: dict[str, Any]) -> Filter:
    """``semantic_dedupe`` {threshold: 0..1 (default 0.7), within: "prompt" | "job" (default "job"),
    model: an embedding model (default minilm-l6), max_kept: embeddings held for "job" (default 100000)}."""
    checked = _params(
        "semantic_dedupe",
        params,
        {
            "threshold": (float, DEFAULT_THRESHOLD),
            "within": (str, "job"),
            "model": (str, DEFAULT_MODEL),
            "max_kept": (int, DEFAULT_MAX_KEPT),
        },
    )
    _in_range("semantic_dedupe", "threshold", checked["threshold"], 0.0, 1.0, low_open=True)
    if checked["within"] not in ("prompt", "job"):
        raise _bad("semantic_dedupe", f"within: 'prompt' or 'job', got {checked['within']!r}")
    if checked["max_kept"] < 0:
        raise _bad("semantic_dedupe", f"max_kept: must be >= 0, got {checked['max_kept']!r}")
    try:
        embedder(checked["model"])
    except InvalidRequest as exc:
        raise _bad("semantic_dedupe", f"model: {exc.message} ({exc.details})") from None
    return SemanticDedupe(checked["threshold"], checked["within"], checked["model"], checked["max_kept"])


def semantic_filters(f: Callable[..., Any] | Filter | None) -> list[SemanticDedupe]:
    """The semantic filters inside a job's chunk filter (alone, in a chain, or at a global chain's head)."""
    if f is None:
        return []
    if isinstance(f, SemanticDedupe):
        return [f]
    owner = getattr(f, "__self__", None)  # a global chain's bound ``prefilter``
    parts = [*getattr(f, "filters", ()), *getattr(f, "head", ())] + ([owner] if owner is not None else [])
    return [s for part in parts for s in semantic_filters(part)]


def resume_from(f: Callable[..., Any] | Filter | None, kept_rows: Path) -> None:
    """Give each semantic filter of a (resumed) job the responses its checkpointed rows kept."""
    for semantic in semantic_filters(f):
        semantic.resume(_texts(kept_rows))


def _texts(path: Path, indices: set[int] | None = None) -> Iterable[str]:
    if not path.exists():
        return
    with path.open("rb") as rows:
        for i, line in enumerate(rows):
            if line.strip() and (indices is None or i in indices):
                yield str((json.loads(line).get("response") or {}).get("content") or "")


def diversity(f: Callable[..., Any] | Filter | None, output: Path) -> dict[str, Any] | None:
    """The diversity of a job's kept responses (None unless it ran a semantic filter): the mean
    pairwise cosine distance of up to DIVERSITY_SAMPLE of them (evenly spaced through the output),
    and how many clusters they form at the filter's threshold (greedy leaders, as the filter keeps)."""
    filters = semantic_filters(f)
    if not filters or not output.exists():
        return None
    semantic = filters[0]
    with output.open("rb") as rows:
        total = sum(1 for line in rows if line.strip())
    picked = set(np.linspace(0, total - 1, num=min(total, DIVERSITY_SAMPLE), dtype=int).tolist()) if total else set()
    vectors = semantic.embed(list(_texts(output, picked)))
    n = len(vectors)
    mean_cos = float((np.square(vectors.sum(axis=0)).sum() - n) / (n * (n - 1))) if n > 1 else 1.0
    return {
        "model": semantic.model,
        "responses": total,
        "sampled": n,
        "mean_pairwise_cosine_distance": round(1.0 - mean_cos, 4),
        "threshold": semantic.threshold,
        "clusters": len(leaders(vectors, semantic.threshold)) if n else 0,
    }
