"""Executors: where and in what order a section's planned runs execute.

An executor takes planned runs (:class:`~piade_lib.experiments.plan.PlannedRun`) and a unit of work,
``execute(p, results_root, progress=..., prune=...) -> run folder`` (the runner passes
:func:`piade_lib.experiments.runner.execute_planned`, which skips a finished run, resumes an interrupted
one from its checkpoint, else trains and evaluates it), and returns the run folders in plan order.

* :class:`LocalExecutor`: one run after another in this process (the default).
* :class:`RayExecutor`: each run is one Ray task asking for ``num_cpus_per_run`` CPUs and, when the
  cluster has GPUs, ``num_gpus_per_run`` of a GPU (0.25: four runs share a GPU); Ray schedules them
  and the results are collected as they finish. ``$RAY_ADDRESS`` (Ray's own variable) joins a running
  cluster; otherwise a local Ray runtime is started, and shut down again when the runs are done.

Both run every planned run: a run that fails is reported (its folder, its error) and the others go on;
when all are done the failures are listed and :class:`RunsFailedError` names them. One failure stops
the rest: a disk that is full, over its quota or read-only (:func:`stops_the_rest`), where every later
run would fail the same way, and only after training up to its first checkpoint (minutes each); runs
not yet started are then not started, and Ray tasks still going are cancelled (they stop as on Ctrl-C,
their last checkpoint kept). Run folders (on a
filesystem every worker sees) are the single source of truth, so skip and resume work the same
whichever executor ran a run before. :func:`make_executor` picks one: an explicit choice, else
``$PIADE_EXECUTOR`` (``local`` | ``ray``), else the profile's ``executor`` key, else local.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from piade_lib.engine.files import FULL_DISK_ERRNOS, exception_chain
from piade_lib.experiments.plan import PlannedRun
from piade_lib.experiments.profiles import EXECUTOR_KINDS, ExecutorSettings

ENV_VAR = "PIADE_EXECUTOR"

# execute(p, results_root, *, progress, prune) -> run folder
Execute = Callable[..., Path]


class ExecutorError(ValueError):
    """An executor is unknown or misconfigured."""


@dataclasses.dataclass(frozen=True)
class RunFailure:
    """A planned run that raised (or whose worker died), with its error."""

    run: PlannedRun
    error: str  # "<ExceptionType>: <message>"
    traceback: str = ""
    stops_the_rest: bool = False  # the disk cannot take more (stops_the_rest): later runs would fail alike

    @property
    def label(self) -> str:
        return f"{self.run.section} {_dataset(self.run)}/{self.run.normal_class} {self.run.variant}"

    def line(self) -> str:
        """One line: which run, its folder, the start of its error."""
        return f"{self.label} (run folder {self.run.run_dir}): {_short(self.error)}"


def _short(text: str, limit: int = 240) -> str:
    """The first line of an error message, cut at ``limit`` characters (the full text is in the summary)."""
    first = text.strip().splitlines()[0] if text.strip() else "(no message)"
    return first if len(first) <= limit else first[: limit - 1] + "…"


class RunsFailedError(RuntimeError):
    """Some planned runs failed; the others ran to the end, unless a failure stopped them (``stopped``:
    the runs not run or cancelled because of it). ``failures`` holds the failures."""

    def __init__(self, failures: Sequence[RunFailure], n_runs: int, stopped: Sequence[PlannedRun] = ()) -> None:
        self.failures = list(failures)
        self.n_runs = n_runs
        self.stopped = list(stopped)
        lines = "\n".join(f"  - {f.line()}" for f in self.failures)
        others = _stopped_text(self.failures, self.stopped) if self.stopped else "the others finished"
        super().__init__(f"{len(self.failures)} of {n_runs} run(s) failed ({others}):\n{lines}")


# errors of the disk the runs write to that every later run would meet too
_DISK_ERRNOS = FULL_DISK_ERRNOS | {errno.EROFS}


def stops_the_rest(exc: BaseException | None) -> bool:
    """Whether a run's error is a disk that cannot take more (full, over quota, read-only): an OSError of
    that kind anywhere in its chain of causes."""
    return any(isinstance(e, OSError) and e.errno in _DISK_ERRNOS for e in exception_chain(exc))


def _stopped_text(failures: Sequence[RunFailure], stopped: Sequence[PlannedRun]) -> str:
    first = next((f for f in failures if f.stops_the_rest), failures[0])
    return (
        f"{len(stopped)} other run(s) stopped or not started after {first.label} met a disk that cannot take more: "
        "they would fail the same way"
    )


def _dataset(p: PlannedRun) -> str:
    return p.spec.dataset


def _timed(execute: Execute, p: PlannedRun, results_root: str, progress: bool, prune: bool) -> tuple[Path, float]:
    """The unit of work of both executors (a Ray task runs this): the run folder and its seconds."""
    t0 = time.time()
    run_dir = execute(p, results_root, progress=progress, prune=prune)
    return Path(run_dir), time.time() - t0


class Executor:
    """Runs planned runs; subclasses say where (:meth:`_execute`)."""

    kind = "?"

    def describe(self) -> str:
        """One line: where the runs execute."""
        return self.kind

    def run(
        self,
        plan: Sequence[PlannedRun],
        results_root: str | Path,
        execute: Execute,
        *,
        progress: bool = False,
        prune: bool = True,
        verbose: bool = True,
        bar: bool = True,
        desc: str = "runs",
    ) -> list[Path]:
        """Execute every run of ``plan`` through ``execute``; return their folders in plan order.

        A run folder planned twice (sections may share runs) is executed once. ``verbose`` prints one
        line per run as it finishes (``[section i/n] dataset/class variant: 12 s`` or ``skipped
        (finished before)``); ``bar`` counts finished runs (tqdm.auto: a widget in Jupyter).
        Raises :class:`RunsFailedError` after all runs are done when any failed."""
        from tqdm.auto import tqdm

        unique: list[PlannedRun] = []
        first: dict[str, int] = {}  # run folder -> its index in unique
        for p in plan:
            if str(p.run_dir) not in first:
                first[str(p.run_dir)] = len(unique)
                unique.append(p)
        # numbering within each section, as the log lines show it
        sizes: dict[str, int] = {}
        position: list[int] = []
        for p in unique:
            sizes[p.section] = sizes.get(p.section, 0) + 1
            position.append(sizes[p.section])
        finished_before = [p.is_finished() for p in unique]
        if verbose and unique:
            print(
                f"[{desc}] {len(unique)} run(s), {sum(finished_before)} finished before; {self.describe()}", flush=True
            )

        done: list[Path | None] = [None] * len(unique)
        failures: dict[int, RunFailure] = {}
        counter = tqdm(total=len(unique), desc=f"{desc}: runs", unit="run", disable=not bar)

        def report(i: int, run_dir: Path | None, seconds: float | None, failure: RunFailure | None) -> bool:
            """Record run ``i``'s end; returns whether to go on with the others (see :func:`stops_the_rest`)."""
            p = unique[i]
            head = f"[{p.section} {position[i]}/{sizes[p.section]}] {_dataset(p)}/{p.normal_class} {p.variant}"
            if failure is not None:
                failures[i] = failure
                note = f"FAILED: {_short(failure.error)} (run folder {p.run_dir})"
                if failure.stops_the_rest:
                    note += "; no further run is started: they would fail the same way"
            else:
                done[i] = run_dir
                note = "skipped (finished before)" if finished_before[i] else f"{seconds:.0f} s"
            if verbose:
                print(f"{head}: {note}", flush=True)
            counter.update()
            return not any(f.stops_the_rest for f in failures.values())

        try:
            self._execute(
                unique,
                Path(results_root),
                execute,
                progress=progress,
                prune=prune,
                verbose=verbose,
                finished_before=finished_before,
                report=report,
            )
        finally:
            counter.close()
        if failures:
            ordered = [failures[i] for i in sorted(failures)]
            stopped = [p for i, p in enumerate(unique) if done[i] is None and i not in failures]
            if verbose:
                print(_summary(ordered, len(unique), stopped), flush=True)
            raise RunsFailedError(ordered, len(unique), stopped)
        return [done[first[str(p.run_dir)]] for p in plan]  # type: ignore[misc]

    def _execute(
        self,
        runs: list[PlannedRun],
        results_root: Path,
        execute: Execute,
        *,
        progress: bool,
        prune: bool,
        verbose: bool,
        finished_before: list[bool],
        report: Callable[[int, Path | None, float | None, RunFailure | None], bool],
    ) -> None:
        """Execute ``runs`` and call ``report(i, run_dir, seconds, None)`` or ``report(i, None, None,
        failure)`` once for each, as it finishes; when ``report`` returns False, start no further run and
        cancel those going on."""
        raise NotImplementedError


def _run_here(
    i: int,
    p: PlannedRun,
    results_root: Path,
    execute: Execute,
    progress: bool,
    prune: bool,
    report: Callable[..., bool],
) -> bool:
    """Execute one run in this process and report it (a failure is reported, not raised); returns what
    ``report`` returns: whether to go on."""
    try:
        run_dir, seconds = _timed(execute, p, str(results_root), progress, prune)
    except Exception as exc:  # noqa: BLE001 -- reported; KeyboardInterrupt still stops everything
        return report(i, None, None, RunFailure(p, _error_text(exc), traceback.format_exc(), stops_the_rest(exc)))
    return report(i, run_dir, seconds, None)


def _summary(failures: list[RunFailure], n_runs: int, stopped: Sequence[PlannedRun] = ()) -> str:
    others = _stopped_text(failures, stopped) if stopped else "the others finished"
    lines = [f"{len(failures)} of {n_runs} run(s) FAILED; {others}:"]
    lines += [f"  - {f.line()}" for f in failures]
    f = failures[0]
    lines.append(f"The first failure in full ({f.label}):")
    detail = f.traceback.rstrip() or f.error
    lines += ["    " + line for line in detail.splitlines()]
    lines.append("Fix the cause and run again: finished runs are skipped, interrupted ones resumed.")
    return "\n".join(lines)


class LocalExecutor(Executor):
    """One run after another in this process (what ``run_section`` always did)."""

    kind = "local"

    def describe(self) -> str:
        return "executor: local (one after another in this process)"

    def _execute(self, runs, results_root, execute, *, progress, prune, verbose, finished_before, report) -> None:
        for i, p in enumerate(runs):
            if not _run_here(i, p, results_root, execute, progress, prune, report):
                return


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class RayExecutor(Executor):
    """Each planned run is one Ray task calling ``execute`` (the engine's skip / resume / train).

    ``num_gpus_per_run`` (a share such as 0.25, or whole GPUs) is asked for when the cluster has GPUs
    and the run's device is not ``cpu``; Ray then sets the task's ``CUDA_VISIBLE_DEVICES``, and a task
    that holds a GPU gets a fresh worker process (``max_calls=1``: CUDA state is per process).
    ``num_cpus_per_run`` is also the run's number of intra-op threads (Ray sets ``OMP_NUM_THREADS``),
    unless the run pins ``threads`` (engine/cpu_threads.py): its task then asks for that many CPUs, if more.
    ``max_retries``: Ray re-runs a task whose worker died (killed, node lost) that many times; the
    retry resumes from the run's last checkpoint. An exception raised by a run is not retried. A run
    finished before is handed to ``execute`` in this process (the engine's skip returns at once), so
    re-running a finished section starts no Ray runtime.

    ``address``: a running cluster's address (default ``$RAY_ADDRESS``); without one a local Ray
    runtime is started and shut down after the runs. If this process already called ``ray.init``,
    that runtime is used and left running. ``log_to_driver``: forward the workers' output (engine
    warnings, progress bars) to this process; off by default, the workers' output stays in Ray's log
    folder (``<ray temp dir>/session_latest/logs/worker-*``); failures are reported either way.
    """

    kind = "ray"

    def __init__(
        self,
        num_gpus_per_run: float = 0.25,
        num_cpus_per_run: float = 1,
        max_retries: int = 3,
        address: str | None = None,
        log_to_driver: bool = False,
    ) -> None:
        self.num_gpus_per_run = float(num_gpus_per_run)
        self.num_cpus_per_run = float(num_cpus_per_run)
        self.max_retries = int(max_retries)
        self.address = address
        self.log_to_driver = log_to_driver

    @classmethod
    def from_settings(cls, settings: ExecutorSettings, **kwargs: Any) -> RayExecutor:
        return cls(
            num_gpus_per_run=settings.num_gpus_per_run,
            num_cpus_per_run=settings.num_cpus_per_run,
            max_retries=settings.max_retries,
            **kwargs,
        )

    def describe(self) -> str:
        return "executor: ray (one task per run, in parallel)"

    # ---- the Ray runtime -----------------------------------------------------------------------
    def _connect(self) -> tuple[bool, str]:
        """Join or start a Ray runtime; returns (whether this call started it, where it is)."""
        import logging

        import ray

        if ray.is_initialized():
            return False, "the runtime this process joined before"
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        # Ray's own INFO/WARNING lines (start-up, token authentication) stay out of a notebook's output;
        # they are in Ray's log folder
        quiet: dict[str, Any] = {"log_to_driver": self.log_to_driver, "logging_level": logging.ERROR}
        if address:
            try:
                ray.init(address=address, **quiet)
            except ConnectionError as exc:
                raise ConnectionError(
                    f"could not join the Ray cluster at {address} ($RAY_ADDRESS): {exc}. Is it running (`ray status`)? "
                    "If it uses Ray's token authentication (on by default for `ray start` when ~/.ray/auth_token "
                    "exists), set RAY_AUTH_MODE=token for this process too, or use RAY_ADDRESS=auto on a node of the "
                    "cluster. Unset RAY_ADDRESS to start a local Ray runtime instead."
                ) from exc
            return True, f"cluster at {address}"
        ray.init(address="local", include_dashboard=False, **quiet)
        return True, "local runtime started for these runs"

    def _env_vars(self) -> dict[str, str]:
        """What a worker needs to find what this process finds: the data root (``$PIADE_DATA``, else
        ./data of this process's working directory) and the weights cache, as absolute paths."""
        from piade_lib.data import data_root

        env = {"PIADE_DATA": str(Path(data_root()).expanduser().resolve())}
        if os.environ.get("TORCH_HOME"):
            env["TORCH_HOME"] = str(Path(os.environ["TORCH_HOME"]).expanduser().resolve())
        return env

    def _execute(self, runs, results_root, execute, *, progress, prune, verbose, finished_before, report) -> None:
        import ray

        # a run finished before returns at once: the engine's skip runs here, without a task (and without
        # starting Ray at all when every run is finished)
        for i, p in enumerate(runs):
            if finished_before[i] and not _run_here(i, p, results_root, execute, progress, prune, report):
                return
        todo = [i for i in range(len(runs)) if not finished_before[i]]
        if not todo:
            return
        started, where = self._connect()
        try:
            root = results_root.expanduser().resolve()  # workers may start elsewhere: absolute paths
            pending = self._submit(
                ray, runs, todo, root, execute, progress=progress, prune=prune, verbose=verbose, where=where
            )
            _collect(ray, pending, runs, root, results_root, report)
        finally:
            if started:
                ray.shutdown()

    def _submit(
        self,
        ray: Any,
        runs: list[PlannedRun],
        todo: list[int],
        root: Path,
        execute: Execute,
        *,
        progress: bool,
        prune: bool,
        verbose: bool,
        where: str,
    ) -> dict[Any, int]:
        """Start one Ray task for each run in ``todo``; return the task references -> run positions."""
        resources = ray.cluster_resources()
        gpus_in_cluster = float(resources.get("GPU", 0))
        use_gpus = self.num_gpus_per_run if gpus_in_cluster > 0 else 0.0
        cpus = {i: self.cpus_for(runs[i]) for i in todo}
        if verbose:
            print(
                f"[ray] {where}: {resources.get('CPU', 0):g} CPU, {gpus_in_cluster:g} GPU; each run asks for "
                f"{self.num_cpus_per_run:g} CPU"
                + (f" and {use_gpus:g} GPU" if use_gpus else "")
                + "".join(
                    f"; runs pinned to {t} threads ask for {c:g} CPU"
                    for t, c in sorted({(runs[i].spec.threads, cpus[i]) for i in todo if runs[i].spec.threads})
                ),
                flush=True,
            )
        env = {"env_vars": self._env_vars()}
        base = {"num_cpus": self.num_cpus_per_run, "max_retries": self.max_retries, "runtime_env": env}
        on_cpu = ray.remote(**base)(_timed)
        on_gpu = ray.remote(**base, num_gpus=use_gpus, max_calls=1)(_timed) if use_gpus else on_cpu
        largest_node = max(
            (float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=0.0
        )
        for i in todo:  # before any task starts: such a task would wait for ever
            if cpus[i] > largest_node:
                raise ValueError(
                    f"run {runs[i].run_dir} pins threads={runs[i].spec.threads}, more CPUs than any node of the Ray "
                    f"cluster has ({largest_node:g}); lower the profile's threads or join a cluster with larger nodes"
                )
        pending: dict[Any, int] = {}
        for i in todo:
            p = runs[i]
            fn = on_gpu if use_gpus and str(p.spec.device) != "cpu" else on_cpu
            if cpus[i] != self.num_cpus_per_run:
                fn = fn.options(num_cpus=cpus[i])
            pending[fn.remote(execute, _absolute_paths(p), str(root), progress, prune)] = i
        return pending

    def cpus_for(self, p: PlannedRun) -> float:
        """The CPUs a run's task asks for: ``num_cpus_per_run``, or the run's pinned ``threads`` when more
        (engine/cpu_threads.py), so that pinned threads never share a core with another run's."""
        return max(self.num_cpus_per_run, float(p.spec.threads or 0))


def _collect(
    ray: Any,
    pending: dict[Any, int],
    runs: list[PlannedRun],
    root: Path,
    results_root: Path,
    report: Callable[[int, Path | None, float | None, RunFailure | None], bool],
) -> None:
    """Report each of the ``pending`` Ray tasks as it finishes; cancel those left when interrupted or when
    ``report`` says not to go on."""
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    run_dir, seconds = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 -- reported, the other runs go on
                    go_on = report(i, None, None, _ray_failure(runs[i], exc))
                else:
                    go_on = report(i, _as_given(run_dir, root, results_root), seconds, None)
                if not go_on:
                    _cancel(ray, pending)
                    return
    except BaseException:  # interrupted (KeyboardInterrupt): do not leave runs going on a cluster
        _cancel(ray, pending)
        raise


def _cancel(ray: Any, pending: dict[Any, int]) -> None:
    """Cancel the Ray tasks of ``pending``: those not started never start, those going on stop as on Ctrl-C
    (a KeyboardInterrupt in the worker; the run keeps its last checkpoint)."""
    for ref in pending:
        try:
            ray.cancel(ref)
        except Exception:  # noqa: BLE001 -- best effort
            pass


def _absolute_paths(p: PlannedRun) -> PlannedRun:
    """``p`` with a relative ``data_root`` made absolute (an execution setting: not part of the run's
    identity), for a worker whose working directory is not this process's."""
    root = p.spec.data_root
    if root is None or Path(root).expanduser().is_absolute():
        return p
    spec = dataclasses.replace(p.spec, data_root=str(Path(root).expanduser().resolve()))
    return dataclasses.replace(p, spec=spec)


def _as_given(run_dir: Path, root: Path, results_root: Path) -> Path:
    """The worker's (absolute) run folder under the results root as the caller wrote it."""
    try:
        return results_root / Path(run_dir).relative_to(root)
    except ValueError:
        return Path(run_dir)


def _ray_failure(p: PlannedRun, exc: BaseException) -> RunFailure:
    import ray

    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
        error = _error_text(cause) if cause is not None else f"{exc.cause_cls.__name__}: (see traceback)"
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # without the terminal colours
        return RunFailure(p, error, text, stops_the_rest(cause))
    # the worker died (killed, out of memory, node lost) or the task was cancelled
    return RunFailure(p, _error_text(exc), "")


def make_executor(choice: Executor | str | None = None, settings: ExecutorSettings | None = None) -> Executor:
    """The executor to use: ``choice`` (an Executor, or ``"local"`` / ``"ray"``) when given, else
    ``$PIADE_EXECUTOR`` when set, else ``settings.kind`` (the profile's ``executor`` key), else local.
    A Ray executor takes its resource requests from ``settings``."""
    if isinstance(choice, Executor):
        return choice
    settings = settings or ExecutorSettings()
    env = os.environ.get(ENV_VAR, "").strip()
    kind = choice if choice is not None else (env or settings.kind)
    where = "executor=" if choice is not None else (f"${ENV_VAR}" if env else "the profile's executor.kind")
    if kind not in EXECUTOR_KINDS:
        raise ExecutorError(f"{where}: unknown executor {kind!r}; valid: {', '.join(EXECUTOR_KINDS)}")
    if kind == "ray":
        return RayExecutor.from_settings(settings)
    return LocalExecutor()


def check_environment() -> list[str]:
    """Problems with ``$PIADE_EXECUTOR`` (for the pre-flight check): an unknown value, or Ray missing."""
    env = os.environ.get(ENV_VAR, "").strip()
    if not env:
        return []
    if env not in EXECUTOR_KINDS:
        return [f"${ENV_VAR}={env!r}: unknown executor; valid: {', '.join(EXECUTOR_KINDS)} (or leave it unset)"]
    if env == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            return [
                f"${ENV_VAR}=ray but Ray cannot be imported ({exc}); install the project's environment "
                "(scripts/env.sh) or unset it"
            ]
    return []
