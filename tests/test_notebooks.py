"""The notebooks: kept clean in git, thin, and every one executes under papermill with the
``smoke`` profile (tiny data, one epoch) into a temporary results folder, producing the tables,
figures and rendered notebooks of run_all.sh."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest

from piade_lib.experiments import plan, profiles
from piade_lib.reporting import readme, tables

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_the_notebooks_are_the_ones_the_profiles_parametrise():
    assert [p.stem for p in NOTEBOOKS] == list(profiles.NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_clean_and_thin(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in code), "outputs belong in results/, not git"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code", "exactly one code cell tagged 'parameters'"
    assert nb.metadata.kernelspec.name == "piade"  # the kernel scripts/env.sh installs; run_all.sh names it too
    # thin: the notebooks call piade_lib; they define no functions or classes of their own
    for c in code:
        assert not any(line.lstrip().startswith(("def ", "class ")) for line in c.source.splitlines()), c.source
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    return tmp_path_factory.mktemp("smoke_results")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_with_the_smoke_profile(path, smoke_root, piade_kernel):
    """In order (01 -> 05): each notebook runs against the runs the previous ones wrote."""
    params = profiles.notebook_parameters("smoke", path.stem, results_root=str(smoke_root))
    out = smoke_root / "notebooks" / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(
        str(path), str(out), parameters=params, kernel_name=piade_kernel, cwd=str(ROOT), progress_bar=False
    )
    executed = nbformat.read(out, as_version=4)
    errors = [
        o
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    # ipywidgets is installed: tqdm.auto draws widgets instead of warning that it cannot
    stderr = "".join(
        o.get("text", "")
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("name") == "stderr"
    )
    assert "IProgress not found" not in stderr and "TqdmWarning" not in stderr
    images = [
        o
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert images, f"{path.name} shows no figure"


@pytest.mark.slow
def test_smoke_outputs_follow_the_schema(smoke_root):
    """What 05_paper_figures wrote (runs after the notebook tests above, in file order)."""
    if not (smoke_root / "notebooks" / "05_paper_figures.ipynb").is_file():
        pytest.skip("the notebooks did not run")
    for name in ("table2", "table3", "table4"):
        table = tables.read_table(smoke_root / "tables" / f"{name}.csv")
        tables.validate_table(table)
        assert table["paper_auc"].isna().all()  # smoke runs on stand-ins: no paper comparison
    tables.validate_figure4(tables.read_table(smoke_root / "tables" / "figure4.csv"))
    assert (smoke_root / "figures" / "figure3.png").stat().st_size > 10_000
    assert (smoke_root / "figures" / "figure4.png").stat().st_size > 10_000
    # finished runs keep their final weights, not the resume checkpoints (optimizer state, 3x larger)
    finals = list((smoke_root / "runs").glob("*/*/*-v*/checkpoints/final.pt"))
    n_piade = len(
        {
            p.run_dir
            for s in profiles.load_profile("smoke").sections.values()
            for p in plan.planned_runs(s, smoke_root)
            if p.kind == "piade"
        }
    )
    assert len(finals) == n_piade == 11 and not list((smoke_root / "runs").glob("*/*/*/checkpoints/last.pt"))
    # 06: every PIADE run's reconstruction error beside the mean image's; 07: the readings table
    recon = pd.read_csv(smoke_root / "tables" / "reconstruction_check.csv")
    assert len(recon) == 6 and recon["normal_mean_image_mse"].gt(0).all()  # figure4 lists its shared v2 run too
    readings_table = pd.read_csv(smoke_root / "tables" / "readings.csv")
    assert readings_table["reading"].tolist() == ["weight_decay", "init"] and readings_table["n_seeds"].eq(2).all()
    assert readings_table["early_step"].eq(1).all() and readings_table["diff_early"].abs().le(1).all()
    assert (smoke_root / "figures" / "readings.png").is_file() and (
        smoke_root / "figures" / "convergence_table2.png"
    ).is_file()
    text = readme.results_readme(profiles.load_profile("smoke"), smoke_root, wall_seconds=1.0)
    assert "| table2 | digits | cifar10 | yes |" in text and "figures/figure3.png" in text
    assert "recon/mean-image as is -> flipped | change at step 1 |" in text
