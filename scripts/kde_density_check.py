"""Score a profile's KDE baseline runs with the exact Gaussian density and with scikit-learn's tree.

Usage (from the repository root, after ``./run_all.sh PROFILE``)::

    PIADE_DATA=../shared/data .venv/bin/python scripts/kde_density_check.py convergence

For every KDE run folder of the profile it rebuilds the run's own splits from its config.json (whatever
density the folder was made with), fits the KDE baseline both ways on the same PCA features
(piade_lib/engine/baselines.py), and measures, side by side in this process:

* the AUROC of each, each with the bandwidth its own cross-validation picked;
* at one bandwidth (the exact density's), how far the tree's log densities are from the exact ones
  (largest difference, share of test images off by more than 1e-6);
* how far the tree's log densities move when the train features move by one part in 1e12 (the
  rounding a change of code or thread count makes), against the exact density's move;
* the seconds each fit (PCA, bandwidth search, final fit) took.

Writes ``<results root>/diagnostics/kde_density.csv`` (one row per run), ``kde_density.png`` (tree
against exact log density of every test image) and ``kde_density.json`` (the rows' summary, the
command, the commit, the lock and the package versions). Reads run folders only; nothing in them is
changed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KernelDensity
from tqdm.auto import tqdm

from piade_lib.engine import files, folders, provenance
from piade_lib.engine.baselines import ExactGaussianKDE, KDEBaseline, dataset_arrays, image_features
from piade_lib.engine.splits import load_splits
from piade_lib.experiments.plan import profile_runs
from piade_lib.experiments.profiles import ProfileError, load_profile
from piade_lib.reporting.figures import save_figure

PERTURBATION = 1e-12  # relative, on the train features


def compare_run(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """One KDE run folder: the summary row and the per-test-image log densities."""
    config = folders.load_config(run_dir)
    params = {k: v for k, v in (config.get("params") or {}).items() if k != "density"}
    splits = load_splits(config, validate=False)
    train_x, _, _ = dataset_arrays(splits.train)
    test_x, test_y, _ = dataset_arrays(splits.test)
    labels = (test_y != 0).astype(int)
    fitted, seconds = {}, {}
    for density in ("exact", "tree"):
        t0 = time.perf_counter()
        fitted[density] = KDEBaseline(seed=int(config["seed"]), density=density, **params).fit(train_x)
        seconds[density] = time.perf_counter() - t0
    exact = fitted["exact"]
    z_train = exact.features.transform(image_features(train_x, exact.feature_size))
    z_test = exact.features.transform(image_features(test_x, exact.feature_size))
    h = float(exact.kde.bandwidth)
    logp_exact = exact.kde.score_samples(z_test)
    logp_tree = KernelDensity(bandwidth=h).fit(z_train).score_samples(z_test)
    noise = np.random.default_rng(0).standard_normal(z_train.shape)
    z_moved = z_train * (1.0 + PERTURBATION * noise)
    moved_tree = KernelDensity(bandwidth=h).fit(z_moved).score_samples(z_test)
    moved_exact = ExactGaussianKDE(h).fit(z_moved).score_samples(z_test)
    err = np.abs(logp_tree - logp_exact)
    metrics = files.read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
    row = {
        "run": str(run_dir),
        "density_of_folder": (config.get("params") or {}).get("density", "tree"),
        "auc_of_folder": metrics.get("auc"),
        "auc_exact": roc_auc_score(labels, -logp_exact),  # exact.score(test_x), without scoring again
        "auc_tree": roc_auc_score(labels, fitted["tree"].score(test_x)),
        "auc_tree_at_exact_bandwidth": roc_auc_score(labels, -logp_tree),
        "bandwidth_exact": h,
        "bandwidth_tree": float(fitted["tree"].kde.bandwidth),
        "pca_components": int(z_train.shape[1]),
        "n_test": int(len(labels)),
        "max_abs_logp_tree_minus_exact": float(err.max()),
        "share_test_off_by_1e-6": float((err > 1e-6 * np.maximum(1.0, np.abs(logp_exact))).mean()),
        "max_abs_logp_move_tree": float(np.abs(moved_tree - logp_tree).max()),
        "max_abs_logp_move_exact": float(np.abs(moved_exact - logp_exact).max()),
        "fit_seconds_exact": round(seconds["exact"], 2),
        "fit_seconds_tree": round(seconds["tree"], 2),
    }
    points = pd.DataFrame({"run": str(run_dir), "label": labels, "logp_exact": logp_exact, "logp_tree": logp_tree})
    return row, points


def plot(points: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 5.6))
    for label, name, marker in ((1, "anomalous", "x"), (0, "normal", "o")):  # the few normal ones on top
        g = points[points["label"] == label]
        ax.scatter(-g["logp_exact"], -g["logp_tree"], s=10, marker=marker, alpha=0.6, label=f"{name} test images")
    lo, hi = (-points[["logp_exact", "logp_tree"]]).min().min(), (-points[["logp_exact", "logp_tree"]]).max().max()
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.set(
        xscale="symlog",
        yscale="symlog",
        xlabel="-log density, exact (every kernel in log space)",
        ylabel="-log density, scikit-learn KernelDensity (tree)",
        title="KDE baseline: the same features and bandwidth, two evaluations",
    )
    ax.legend()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("profile", help="a profile name or YAML file whose KDE runs have finished")
    ap.add_argument("--results-root", default=None, help="results folder (default: the profile's)")
    args = ap.parse_args(argv)
    try:
        prof = load_profile(args.profile)
    except ProfileError as exc:
        print(f"kde_density_check: error: {exc}", file=sys.stderr)
        return 2
    root = Path(args.results_root or prof.results_root)
    plan = profile_runs(prof, root, lambda p: p.kind == "baseline" and p.spec.baseline == "kde")
    if not plan:
        print(f"kde_density_check: error: profile {prof.name} plans no KDE baseline runs", file=sys.stderr)
        return 2
    missing = [p.run_dir for p in plan if not (p.run_dir / "config.json").is_file()]
    if missing:
        print(
            f"kde_density_check: error: {len(missing)} of the {len(plan)} KDE runs of profile {prof.name} have no "
            f"run folder (first: {missing[0]}); run ./run_all.sh {prof.name} first",
            file=sys.stderr,
        )
        return 2
    t0, code = time.time(), provenance.code_provenance()
    rows, points = [], []
    for p in tqdm(plan, desc="KDE exact vs tree", unit="run"):
        try:
            row, pts = compare_run(p.run_dir)
        except Exception as exc:  # noqa: BLE001 -- one line naming the run (missing data, a damaged folder, ...)
            print(f"kde_density_check: error: {p.run_dir}: {exc}; nothing was written", file=sys.stderr)
            return 1
        rows.append({"section": p.section, "normal_class": p.normal_class, "seed": p.seed, **row})
        points.append(pts)
    frame = pd.DataFrame(rows)
    out = root / "diagnostics"
    out.mkdir(parents=True, exist_ok=True)
    files.write_csv(out / "kde_density.csv", frame)
    plot(pd.concat(points, ignore_index=True), out / "kde_density.png")
    summary = {
        "runs": len(frame),
        "mean_auc_exact": float(frame["auc_exact"].mean()),
        "mean_auc_tree": float(frame["auc_tree"].mean()),
        "mean_auc_tree_at_exact_bandwidth": float(frame["auc_tree_at_exact_bandwidth"].mean()),
        "largest_abs_logp_tree_minus_exact": float(frame["max_abs_logp_tree_minus_exact"].max()),
        "mean_share_test_off": float(frame["share_test_off_by_1e-6"].mean()),
        "largest_logp_move_tree": float(frame["max_abs_logp_move_tree"].max()),
        "largest_logp_move_exact": float(frame["max_abs_logp_move_exact"].max()),
    }
    record = {
        "what": "KDE baseline runs scored with the exact Gaussian density and with scikit-learn's tree (KernelDensity)",
        "profile": prof.name,
        "command": ["scripts/kde_density_check.py", *(argv if argv is not None else sys.argv[1:])],
        "args": provenance.recorded_args(args),
        "perturbation": PERTURBATION,
        "seconds": round(time.time() - t0, 1),
        **code,
        "summary": summary,
    }
    files.write_json(out / "kde_density.json", record)
    cols = ["normal_class", "seed", "auc_of_folder", "auc_exact", "auc_tree", "auc_tree_at_exact_bandwidth"]
    cols += ["max_abs_logp_tree_minus_exact", "share_test_off_by_1e-6", "max_abs_logp_move_tree"]
    with pd.option_context("display.width", 220, "display.float_format", "{:.3g}".format):
        print(frame[cols].to_string(index=False))
    print(", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
    print(f"wrote kde_density.csv, .png and .json in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
