"""What one atomic, fsynced write of ``history.csv`` costs on a filesystem: the write the trainer used to
make after every epoch, and now makes with each checkpoint only.

    python benchmarks/bench_history_write.py                       # in a temporary folder here
    python benchmarks/bench_history_write.py --dir /shared/results --epochs 400

It writes the history of a run of ``--epochs`` epochs the way the run folder's ``history.csv`` is written
(``piade_lib.engine.files.write_csv``: temporary file, fsync, rename, fsync of the folder), once per epoch
with the rows so far, and reports the median and total time. Compare the median with an epoch's
training time: a COIL-100 epoch is one batch of 57 images (about 26 ms on an H100 with CUDA graphs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from piade_lib.engine import files  # noqa: E402
from piade_lib.engine.provenance import code_provenance  # noqa: E402


def measure(folder: Path, epochs: int) -> list[float]:
    """Seconds of each of ``epochs`` writes of a growing history.csv in ``folder``."""
    rows, times = [], []
    for epoch in range(1, epochs + 1):
        rows.append({"epoch": epoch, "step": epoch, "mse": 0.01, "perceptual": 0.2, "ssim_loss": 0.3, "total": 0.5})
        t0 = time.perf_counter()
        files.write_csv(folder / "history.csv", pd.DataFrame(rows))
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=".", help="the filesystem to measure: a temporary folder is made in it")
    ap.add_argument("--epochs", type=int, default=400, help="writes (one per epoch; Table 1: 400 epochs)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    base = Path(args.dir)
    if not base.is_dir():
        raise SystemExit(f"--dir {base}: not a folder; give an existing folder on the filesystem to measure")
    if args.epochs < 1:
        raise SystemExit(f"--epochs must be >= 1, got {args.epochs}")
    folder = Path(tempfile.mkdtemp(prefix=".bench-history-", dir=base))
    try:
        times = measure(folder, args.epochs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out = {
        "epochs": args.epochs,
        "median_ms": round(statistics.median(times) * 1e3, 3),
        "last_ms": round(times[-1] * 1e3, 3),
        "total_s": round(sum(times), 3),
        "code": code_provenance(),
    }
    print(
        f"history.csv, {args.epochs} writes: median {out['median_ms']:.2f} ms, last (all rows) "
        f"{out['last_ms']:.2f} ms, total {out['total_s']:.2f} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
