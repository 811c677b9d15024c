"""Training sets a job writes beside its PromptResponseScore JSONL when it asks for them
(``outputs``), and exports of any of them to Parquet, JSONL or a Hugging Face dataset.

* ``preference`` (``out.preference.jsonl``): TRL's preference format, pairs of one prompt's
  responses. Pairs are built from **every scored response of a prompt, before the filter** (a
  ``best_of_n`` filter keeps one response a prompt, which could never make a pair): the best-scored
  response is ``chosen`` and the worst ``rejected`` (``pairs: all``: every pair), kept when the
  margin (chosen score - rejected score, after the scoring function) is above ``min_margin`` and the
  two texts differ. A prompt that is one user message gives plain strings
  (``{"prompt": str, "chosen": str, "rejected": str}``); any other (a system message, several
  turns) the conversational form (``prompt``: messages, ``chosen``/``rejected``: one assistant
  message each). Each pair also carries ``id``, ``score_chosen``, ``score_rejected`` and ``margin``.
* ``sft`` (``out.sft.jsonl``): the rows the filter kept, as ``{"id", "index", "messages", "score"}``
  with the response as the last, assistant, message.

Both are written as the job runs (pairs with each chunk's checkpoint) or as it finishes (SFT rows
from the final output), so they are crash-safe like the output itself. Exports stream: memory is
bounded by one batch of rows whatever the job's size.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

from winnow.schemas.sdg import PreferenceOptions
from winnow.sdg.rows import Candidate

Output = Literal["rows", "preference", "sft"]
ExportFormat = Literal["jsonl", "parquet", "hf"]
EXPORT_BATCH_ROWS = 10_000


def preference_path(output: Path) -> Path:
    return output.with_name(output.stem + ".preference.jsonl")


def sft_path(output: Path) -> Path:
    return output.with_name(output.stem + ".sft.jsonl")


OUTPUT_PATHS: dict[str, Callable[[Path], Path]] = {
    "rows": lambda output: output,
    "preference": preference_path,
    "sft": sft_path,
}


def _turns(messages: list[dict[str, Any]], text: str) -> tuple[Any, Any]:
    """A prompt and a response as TRL takes them: strings for a lone user message, else messages."""
    if len(messages) == 1 and messages[0].get("role") == "user":
        return messages[0]["content"], text
    return messages, [{"role": "assistant", "content": text}]


def preference_pairs(candidates: list[Candidate], options: PreferenceOptions) -> list[dict[str, Any]]:
    """The preference rows of a chunk's scored responses (every response, before the filter)."""
    by_prompt: dict[int, list[Candidate]] = {}
    for candidate in candidates:
        by_prompt.setdefault(id(candidate.row), []).append(candidate)
    rows = []
    for group in by_prompt.values():
        ranked = sorted(group, key=lambda c: c.score, reverse=True)
        pairs = [(ranked[0], ranked[-1])] if options.pairs == "best_worst" else list(combinations(ranked, 2))
        for chosen, rejected in pairs:
            margin = chosen.score - rejected.score
            if margin > options.min_margin and chosen.text != rejected.text:
                prompt, chosen_turn = _turns(chosen.row.messages, chosen.text)
                rejected_turn = _turns(rejected.row.messages, rejected.text)[1]
                rows.append(
                    {
                        "id": chosen.row.id,
                        "prompt": prompt,
                        "chosen": chosen_turn,
                        "rejected": rejected_turn,
                        "score_chosen": chosen.score,
                        "score_rejected": rejected.score,
                        "margin": margin,
                    }
                )
    return rows


def jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows)


def sft_row(row: dict[str, Any]) -> dict[str, Any]:
    """A PromptResponseScore row as an SFT example: its prompt then its response, as messages."""
    response = {"role": "assistant", "content": row["response"]["content"]}
    return {"id": row["id"], "index": row["index"], "messages": [*row["prompt"], response], "score": row["score"]}


def write_sft(output: Path, attempt: str) -> None:
    """``out.sft.jsonl`` from the final output, whole or not at all (redone if a crash cuts it)."""
    target = sft_path(output)
    tmp = target.with_name(f"{target.name}.{attempt}.tmp")
    with output.open("rb") as rows, tmp.open("wb") as out:
        for line in rows:
            if line.strip():
                out.write(jsonl([sft_row(json.loads(line))]))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)


def pair_stats(path: Path) -> dict[str, Any]:
    """How many pairs a preference file holds and their mean margin (streamed)."""
    count, total = 0, 0.0
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                count += 1
                total += float(json.loads(line)["margin"])
    return {"pairs": count, "mean_margin": total / count if count else None}


def _batches(lines: Iterable[str | bytes], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for line in lines:
        if line.strip():
            batch.append(json.loads(line))
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def export(lines: Iterable[str | bytes], format: ExportFormat, to: Path) -> int:
    """Write JSONL ``lines`` (an output, streamed) to ``to`` as JSONL, a Parquet file, or a Hugging
    Face dataset folder (``save_to_disk``; needs the ``datasets`` extra), whole or not at all.
    Returns the rows written."""
    to.parent.mkdir(parents=True, exist_ok=True)
    if format == "hf":
        return _export_hf(lines, to)
    part = to.with_name(to.name + ".part")
    try:
        rows = _write_jsonl(lines, part) if format == "jsonl" else _write_parquet(lines, part)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(to)
    return rows


def _write_jsonl(lines: Iterable[str | bytes], to: Path) -> int:
    rows = 0
    with to.open("wb") as out:
        for batch in _batches(lines, EXPORT_BATCH_ROWS):
            out.write(jsonl(batch))
            rows += len(batch)
    return rows


def _write_parquet(lines: Iterable[str | bytes], to: Path) -> int:
    """One row group per batch; the first batch's schema is the file's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 0
    writer: pq.ParquetWriter | None = None
    try:
        for batch in _batches(lines, EXPORT_BATCH_ROWS):
            table = pa.Table.from_pylist(batch, schema=writer.schema if writer else None)
            writer = writer or pq.ParquetWriter(to, table.schema)
            writer.write_table(table)
            rows += len(batch)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # no rows: an empty file that still reads
        pq.write_table(pa.table({}), to)
    return rows


def _export_hf(lines: Iterable[str | bytes], to: Path) -> int:
    """Through a Parquet file (streamed) that ``datasets`` turns into Arrow in a cache of its own,
    removed after: the user's Hugging Face cache is left alone."""
    datasets = import_datasets()
    with tempfile.TemporaryDirectory(dir=to.parent, prefix=f".{to.name}.") as folder:
        parquet = Path(folder) / "rows.parquet"
        rows = export(lines, "parquet", parquet)
        dataset = datasets.Dataset.from_parquet(str(parquet), cache_dir=str(Path(folder) / "cache"))
        dataset.save_to_disk(str(to))
    return rows


def import_datasets() -> Any:
    """The ``datasets`` library, or an error that says how to install it."""
    try:
        import datasets
    except ImportError as exc:
        raise ImportError("Hugging Face datasets need the datasets extra: pip install 'winnow[datasets]'") from exc
    return datasets
