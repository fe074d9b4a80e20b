"""The one lifecycle of every run, PIADE or baseline.

:func:`execute` takes a run spec (:class:`~piade_lib.engine.config.PiadeSpec` or
:class:`~piade_lib.engine.config.BaselineSpec`) and, holding the run folder's lock:

1. checks the folder: the task arguments that need no data are checked before the lock is taken (a
   refused run creates nothing); temporaries of a writer killed mid-write are removed; final weights
   that are not a whole file are set aside (the run then resumes and writes them again); a finished
   run is skipped (its metrics re-bootstrapped if asked for with another ``n_bootstrap``); a folder
   of another configuration is refused (or, with ``overwrite``, moved aside, but only once the new
   run's inputs are known good, as is a folder without a usable checkpoint);
2. validates the inputs before anything is written: the device, every train and test image (and
   mask), the data against the manifest of a run being resumed, the model (pretrained weights);
3. writes config.json and manifest.json, opens a provenance session, fits the detector (PIADE:
   resumes from the last checkpoint), scores the test and train splits and writes metrics.json.

A run that fails before it saved any progress leaves no folder behind, so the corrected command
is not refused. :func:`train_run`, :func:`run_baseline` and :func:`evaluate_run` (the ``piade
train`` / ``piade evaluate`` commands) are thin callers of it.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import Dataset

from piade_lib.engine import checkpoints, cpu_threads, files, folders, provenance
from piade_lib.engine.config import BaselineSpec, PiadeSpec, RunConfig, RunSpec, spec_from_config
from piade_lib.engine.detectors import Detector, make_detector
from piade_lib.engine.scoring import resolve_device, write_results
from piade_lib.engine.splits import Splits, load_splits, split_manifest
from piade_lib.metrics import compute_metrics
from piade_lib.model.losses import TERMS


class DataChangedError(folders.RunConfigMismatchError):
    """The data a run folder was trained on is not the data found now."""


class _StartAfresh(Exception):
    """Internal: the run folder was moved aside (``overwrite``: no usable checkpoint); run again from scratch."""


def execute(
    spec: RunSpec,
    results_root: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> Path:
    """Run ``spec`` under ``results_root`` (see the module docstring); returns its run folder.

    ``stop_after``: leave after that epoch (checkpointed) without finishing, as an interruption
    would; the next call resumes. With ``overwrite``, a folder whose checkpoints are all unusable is
    moved aside and the run starts afresh (without it, that is an error saying so)."""
    try:
        return _execute(spec, results_root, overwrite=overwrite, progress=progress, stop_after=stop_after)
    except _StartAfresh:
        return _execute(spec, results_root, overwrite=False, progress=progress, stop_after=stop_after)


def _execute(
    spec: RunSpec, results_root: str | Path, *, overwrite: bool, progress: bool, stop_after: int | None
) -> Path:
    config = spec.to_dict()
    chash = folders.config_hash(config)
    run_dir = spec.run_dir(results_root)
    _check_task_arguments(config)  # before the lock creates the folders above the run's
    with folders.locked(run_dir), cpu_threads.pinned(spec.threads):
        state = _folder_state(run_dir, config, overwrite)
        if state == "same":
            _set_aside_damaged_final(run_dir, spec)
        if state == "same" and _finished(run_dir, spec, chash):
            _refresh_bootstrap(run_dir, spec.n_bootstrap)
            return run_dir
        device = resolve_device(spec.device)
        checkpoints.seed_everything(spec.seed)
        splits = load_splits(config, progress=progress)
        if state == "same":
            _check_data(run_dir, splits, accept_changed=False)
        resuming = state == "same" and _has_progress(run_dir)
        detector = make_detector(spec, device, chash, fresh=not resuming)
        if state == "replace":
            moved = folders.move_aside(run_dir)
            warnings.warn(f"moved the previous run folder {run_dir} aside to {moved}", stacklevel=2)
        if state != "same":
            _create(run_dir, config, splits.manifest)
        try:
            _fit_and_evaluate(spec, detector, splits, run_dir, device, progress, stop_after, chash)
        except checkpoints.CheckpointError:
            if not (overwrite and resuming):
                raise
            moved = folders.move_aside(run_dir)  # no usable checkpoint, and the user asked to start afresh
            warnings.warn(f"no usable checkpoint: moved the run folder {run_dir} aside to {moved}", stacklevel=2)
            raise _StartAfresh from None
        except BaseException:
            if state != "same" and not _has_progress(run_dir):
                shutil.rmtree(run_dir, ignore_errors=True)  # nothing worth keeping: do not block the re-run
            raise
    return run_dir


def _fit_and_evaluate(
    spec: RunSpec,
    detector: Detector,
    splits: Splits,
    run_dir: Path,
    device: torch.device,
    progress: bool,
    stop_after: int | None,
    chash: str,
) -> None:
    with provenance.session(
        run_dir, device=device, seed=spec.seed, pretrained=spec.pretrained if isinstance(spec, PiadeSpec) else False
    ) as session:
        if all((run_dir / f).is_file() for f in detector.fitted_files):
            detector.load_fitted(run_dir)  # trained in an earlier session, not (fully) evaluated
        else:
            try:
                facts = detector.fit(splits, run_dir, progress=progress, stop_after=stop_after)
            finally:  # also for a session that stops (Ctrl-C, a cancelled Ray task): where it resumed from
                session.entry.update(detector.session_fields())
            if facts is None:
                session.status = f"stopped after epoch {stop_after} (stop_after)"
                return
            session.facts.update(facts)
        t0 = time.time()
        metrics = evaluate_detector(detector, splits, run_dir, spec.n_bootstrap, spec.seed, chash, progress)
        session.entry["eval_seconds"] = round(time.time() - t0, 3)
        session.facts["auc"] = metrics.get("auc")


def evaluate_detector(
    detector: Detector, splits: Splits, run_dir: Path, n_bootstrap: int, seed: int, chash: str, progress: bool
) -> dict[str, Any]:
    """Score the splits with a fitted detector and write scores.csv, train_scores.csv, roc.csv and,
    last, metrics.json (with the config hash it belongs to). Returns the metrics."""
    scored = detector.score(splits, progress=progress)
    metrics = compute_metrics(
        scored.test,
        n_bootstrap=n_bootstrap,
        seed=seed,
        terms=scored.terms,
        pixel=scored.pixel_auroc,
        train_scores=scored.train["total"].to_numpy(),
    )
    metrics.update(scored.extra or {})
    metrics["config_hash"] = chash
    write_results(run_dir, scored.test, metrics, scored.train)
    detector.after_evaluation(run_dir, metrics)
    return metrics


# ----------------------------------------------------------------------------------------------
# folder states
# ----------------------------------------------------------------------------------------------
def _folder_state(run_dir: Path, config: dict[str, Any], overwrite: bool) -> str:
    """``"absent"``, ``"same"`` (this configuration), or ``"replace"`` (another one, and ``overwrite``)."""
    try:
        return folders.inspect_run_dir(run_dir, config)
    except folders.RunConfigMismatchError:
        if overwrite:
            return "replace"
        raise


def _finished_files(spec: RunSpec) -> tuple[str, ...]:
    return (
        ("scores.csv", "metrics.json")
        if isinstance(spec, BaselineSpec)
        else ("checkpoints/" + checkpoints.FINAL, "metrics.json")
    )


def _finished(run_dir: Path, spec: RunSpec, chash: str) -> bool:
    if not folders.is_finished(run_dir, _finished_files(spec)):
        return False
    recorded = files.read_json(run_dir / "metrics.json").get("config_hash")
    if recorded is not None and recorded != chash:
        raise folders.RunConfigMismatchError(
            f"{run_dir / 'metrics.json'} belongs to configuration {recorded}, but {run_dir / 'config.json'} is "
            f"configuration {chash}: the folder mixes two runs. Move it aside (or --overwrite) and run again."
        )
    return True


def _check_task_arguments(config: dict[str, Any]) -> None:
    """The run's task arguments that need no data (protocol, its parameters, image size, seed), checked."""
    from piade_lib.data import check_task_arguments

    check_task_arguments(
        config["dataset"],
        config.get("protocol"),
        config.get("image_size"),
        config.get("seed", 0),
        **(config.get("protocol_params") or {}),
    )


def _set_aside_damaged_final(run_dir: Path, spec: RunSpec) -> None:
    """A run's final weights that are not a whole file (truncated, empty) are renamed aside, with a warning:
    the run is then unfinished, resumes from its last epoch checkpoint and writes them again."""
    if isinstance(spec, BaselineSpec):
        return
    final = run_dir / "checkpoints" / checkpoints.FINAL
    if final.is_file() and not checkpoints.is_complete(final):
        kept = checkpoints.set_aside(final)
        warnings.warn(
            f"{final} is damaged (not a complete checkpoint): kept as {kept.name}; the run resumes from its last "
            "epoch checkpoint and writes it again",
            stacklevel=3,
        )


def _has_progress(run_dir: Path) -> bool:
    """Whether the folder holds anything a re-run would use: a checkpoint, final weights or scores."""
    ckpt = run_dir / "checkpoints"
    return (ckpt.is_dir() and any(ckpt.glob("*.pt"))) or (run_dir / "scores.csv").is_file()


def _create(run_dir: Path, config: dict[str, Any], manifest: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    files.write_json(run_dir / "config.json", {**config, "config_hash": folders.config_hash(config)})
    files.write_json(run_dir / "manifest.json", manifest)


def _check_data(run_dir: Path, splits: Splits, accept_changed: bool) -> None:
    """The data found now against manifest.json: the same images (checksum, subset) or an error,
    unless ``accept_changed`` (then the manifest is rewritten to describe the data now used)."""
    path = run_dir / "manifest.json"
    if not path.is_file():
        return
    old = files.read_json(path)
    if splits.same_data_as(old):
        return
    if not accept_changed:
        raise DataChangedError(
            f"the data of {run_dir} changed since the run was trained: manifest checksum {old.get('checksum')} "
            f"(in {path}) vs {splits.manifest.get('checksum')} now. Restore the data (the manifest lists "
            "train_ids/test_ids), or start afresh with --overwrite, or (piade evaluate) pass "
            "--accept-changed-data to score the data as it is now and record it in the manifest."
        )
    files.write_json(path, splits.manifest)


def _refresh_bootstrap(run_dir: Path, n_bootstrap: int) -> None:
    metrics = files.read_json(run_dir / "metrics.json")
    if metrics.get("auc") is not None and int(metrics.get("n_bootstrap", -1)) != int(n_bootstrap):
        refresh_metrics(run_dir, n_bootstrap)


def refresh_metrics(run_dir: str | Path, n_bootstrap: int | None = None) -> dict[str, Any]:
    """Recompute metrics.json from the run's saved scores (scores.csv, train_scores.csv), e.g. with
    another number of bootstrap resamples; what only the model could tell (reconstruction checks,
    pixel AUROC, fitted parameters) is kept from the previous metrics.json."""
    run_dir = Path(run_dir)
    cfg = folders.load_config(run_dir)
    scores_path = run_dir / "scores.csv"
    if not scores_path.is_file():
        raise FileNotFoundError(
            f"{scores_path} not found: the run in {run_dir} has not been evaluated; run it "
            "to the end first (the same `piade train` command resumes it)"
        )
    old = files.read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
    scores = pd.read_csv(scores_path)
    train_path = run_dir / "train_scores.csv"
    nb = int(cfg.get("n_bootstrap", 1000) if n_bootstrap is None else n_bootstrap)
    terms = ("total",) if cfg.get("kind") == "baseline" else TERMS
    metrics = compute_metrics(
        scores,
        n_bootstrap=nb,
        seed=int(cfg.get("seed", 0)),
        terms=terms,
        pixel=old.get("pixel_auroc"),
        train_scores=pd.read_csv(train_path)["total"].to_numpy() if train_path.is_file() else None,
    )
    metrics.update({k: v for k, v in old.items() if k not in metrics})
    metrics["config_hash"] = folders.config_hash(cfg)
    write_results(run_dir, scores, metrics)
    return metrics


# ----------------------------------------------------------------------------------------------
# the entry points
# ----------------------------------------------------------------------------------------------
def train_run(
    cfg: RunConfig | PiadeSpec,
    results_root: str | Path,
    progress: bool = True,
    *,
    overwrite: bool = False,
    stop_after: int | None = None,
) -> Path:
    """Train (or resume, or skip) the PIADE run ``cfg`` under ``results_root``, then evaluate it.
    Returns the run folder."""
    return execute(cfg.resolved(), results_root, overwrite=overwrite, progress=progress, stop_after=stop_after)


def run_baseline(
    name: str,
    dataset: str,
    normal_class: str | int,
    results_root: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    **spec: Any,
) -> Path:
    """Fit baseline ``name`` on the normal train images of the task and score its test images, in
    ``<results_root>/runs/<dataset>-<protocol>/<class>/baseline-<name>/`` (config.json, manifest.json,
    scores.csv ``id,label,total``, train_scores.csv, metrics.json, provenance.json). ``spec``: the
    other arguments of :meth:`BaselineSpec.build` (protocol, seed, epochs, params, limits, ``one_class_task``
    parameters)."""
    return execute(
        BaselineSpec.build(name, dataset, normal_class, **spec), results_root, overwrite=overwrite, progress=progress
    )


def evaluate_run(
    run_dir: str | Path,
    n_bootstrap: int | None = None,
    *,
    device: str | torch.device | None = "auto",
    progress: bool = True,
    splits: Splits | tuple[Any, Dataset, Dataset] | None = None,
    accept_changed_data: bool = False,
    data_root: str | None = None,
) -> dict[str, Any]:
    """(Re)score a finished run's test and train images and write its metrics (``piade evaluate``).

    PIADE runs are scored again with ``checkpoints/final.pt``, on the data found now, which must be
    the data of manifest.json (else :class:`DataChangedError`, unless ``accept_changed_data``, which
    also rewrites the manifest). Baseline models are not kept: their metrics are recomputed from
    their saved scores. ``splits`` replaces the run's splits (e.g. a subset of the test set). ``data_root``:
    where the data is now (an execution setting: the run stays the same); once the data there passes the
    manifest check it is recorded in config.json."""
    run_dir = Path(run_dir)
    with folders.locked(run_dir):
        cfg = folders.load_config(run_dir)
        spec = spec_from_config(cfg)
        nb = int(cfg.get("n_bootstrap", 1000) if n_bootstrap is None else n_bootstrap)
        if isinstance(spec, BaselineSpec):
            return refresh_metrics(run_dir, nb)
        chash = folders.config_hash(cfg)
        dev = resolve_device(spec.device if device is None else device)
        if data_root is not None:
            cfg["data_root"] = data_root
        if splits is None:
            splits = load_splits(cfg, progress=progress)
            _check_data(run_dir, splits, accept_changed_data)
            if data_root is not None:
                files.write_json(run_dir / "config.json", {**cfg, "config_hash": chash})
        elif isinstance(splits, tuple):
            splits = Splits(splits[0], splits[1], splits[2], split_manifest(*splits))
        detector = make_detector(spec, dev, chash, fresh=False)
        detector.load_fitted(run_dir)
        with (
            cpu_threads.pinned(spec.threads),
            provenance.session(run_dir, device=dev, seed=spec.seed, pretrained=spec.pretrained) as session,
        ):
            session.status = "evaluated"
            metrics = evaluate_detector(detector, splits, run_dir, nb, spec.seed, chash, progress)
            session.facts["auc"] = metrics.get("auc")
    return metrics
