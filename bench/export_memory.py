"""Peak RSS of exporting a job's preference pairs, 100k rows against 1M rows (each export in its
own process), to Parquet and to JSONL: an export streams in batches, so the peak must not grow with
the rows. Target: ratio <= 1.2.

    python bench/export_memory.py [--rows 1000000] [--format parquet]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def write_pairs(path: Path, rows: int) -> None:
    """``rows`` preference pairs shaped as a job writes them (plain prompts, two arithmetic answers)."""
    with path.open("w") as out:
        for i in range(rows):
            a, b = i % 97, i % 89
            pair = {
                "id": f"add-{i:07d}",
                "prompt": f"What is {a}+{b}?",
                "chosen": str(a + b),
                "rejected": str(a + b + 1 + i % 7),
                "score_chosen": 1.0,
                "score_rejected": 0.0,
                "margin": 1.0,
            }
            out.write(json.dumps(pair) + "\n")


def child(source: str, format: str, target: str) -> None:
    from winnow.sdg.outputs import export

    started = time.perf_counter()
    with open(source, "rb") as lines:
        rows = export(lines, format, Path(target))  # type: ignore[arg-type]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps({"rows": rows, "peak_rss_mb": round(peak_mb, 1), "seconds": round(time.perf_counter() - started, 2)})
    )


def measure(folder: Path, rows: int, format: str) -> dict[str, float]:
    source = folder / f"pairs-{rows}.jsonl"
    write_pairs(source, rows)
    target = folder / f"export-{rows}.{format}"
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(source), format, str(target)],
        capture_output=True,
        text=True,
        check=True,
    )
    source.unlink()
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--format", default="parquet", choices=["parquet", "jsonl"])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as folder:
        small = measure(Path(folder), args.rows // 10, args.format)
        large = measure(Path(folder), args.rows, args.format)
    print(
        f"{args.format}: {small['rows']:,} rows peak {small['peak_rss_mb']} MB in {small['seconds']} s; "
        f"{large['rows']:,} rows peak {large['peak_rss_mb']} MB in {large['seconds']} s"
    )
    print(f"peak RSS ratio {large['peak_rss_mb'] / small['peak_rss_mb']:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
