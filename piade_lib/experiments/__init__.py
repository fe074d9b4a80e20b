"""Profiles (YAML run plans), the runs they plan, and their execution.

``profiles`` parses ``configs/<name>.yaml`` into :class:`Section` s; ``plan`` turns a section into typed run
specs with their folders; ``runner`` executes them (skipping finished runs, resuming interrupted ones);
``executors`` say where they execute (this process, or Ray tasks); ``preflight`` checks a profile before
anything trains.
"""

from __future__ import annotations

from piade_lib.experiments.executors import (  # noqa: F401
    LocalExecutor,
    RayExecutor,
    RunsFailedError,
    make_executor,
)
from piade_lib.experiments.plan import (  # noqa: F401
    PlannedRun,
    baseline_kwargs,
    plan_frame,
    planned_runs,
)
from piade_lib.experiments.runner import (  # noqa: F401
    execute_planned,
    prune_resume_checkpoints,
    run_section,
    run_sections,
)
