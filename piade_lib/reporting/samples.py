"""What the data looks like: split counts per class and sample images of a section's task (notebook 01)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from piade_lib.experiments.profiles import Profile, Section


# ---------------------------------------------------------------------------------------------
# data summaries and sample grids (notebook 01)
# ---------------------------------------------------------------------------------------------
def _task(run_kwargs: dict[str, Any]):
    from piade_lib.engine.config import RunConfig
    from piade_lib.engine.splits import task_from_config

    return task_from_config(RunConfig(**run_kwargs).resolved().to_dict())


def split_counts(section: Section) -> pd.DataFrame:
    """Per class of a section: train / test-normal / test-anomalous counts after limits, and notes."""
    rows = []
    seen = set()
    for kw in section.run_configs():
        if kw["normal_class"] in seen:
            continue
        seen.add(kw["normal_class"])
        task, train, test = _task(kw)
        all_labels = task.manifest["test_labels"]
        labels = [all_labels[i] for i in getattr(test, "indices", range(len(all_labels)))]
        rows.append(
            {
                "section": section.name,
                "dataset": section.dataset,
                "protocol": task.protocol,
                "class": kw["normal_class"],
                "n_train": len(train),
                "n_test_normal": labels.count(0),
                "n_test_anomalous": labels.count(1),
                "image_size": task.image_size,
                "masks": task.has_masks,
                "stand-in": task.manifest.get("standin"),
            }
        )
    return pd.DataFrame(rows)


def distinct_datasets(profile: Profile, names: Iterable[str]) -> list[Section]:
    """The first section of each (dataset, protocol) among ``names`` (for one sample grid each)."""
    out: dict[tuple, Section] = {}
    for n in names:
        s = profile.sections[n]
        out.setdefault((s.dataset, s.protocol), s)
    return list(out.values())


def dataset_note(section: Section) -> str:
    """The data package's note on a section's dataset and protocol (stand-in or not, protocol)."""
    task, _, _ = _task(section.run_configs()[0])
    return str(task.manifest.get("note", ""))


def _to_img(t) -> np.ndarray:
    a = t.detach().float().cpu().clamp(0, 1).numpy()
    return np.transpose(a, (1, 2, 0))


def plot_samples(section: Section, n: int = 6, normal_class: str | None = None):
    """A grid: normal train images, normal test images, anomalous test images (+ their masks when the
    dataset has them) of one class of a section. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    kws = section.run_configs()
    kw = next((k for k in kws if k["normal_class"] == normal_class), kws[0]) if normal_class else kws[0]
    task, train, test = _task(kw)
    normals = [test[i] for i in range(len(test)) if test[i]["label"] == 0][:n]
    anomalies = [test[i] for i in range(len(test)) if test[i]["label"] == 1][:n]
    rows = [
        ("train (normal)", [train[i]["image"] for i in range(min(n, len(train)))]),
        ("test normal", [it["image"] for it in normals]),
        ("test anomalous", [it["image"] for it in anomalies]),
    ]
    if task.has_masks:
        rows.append(("defect masks", [it["mask"].repeat(3, 1, 1) for it in anomalies]))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.7 * len(rows)), squeeze=False)
    for r, (title, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(imgs):
                ax.imshow(_to_img(imgs[c]), interpolation="nearest")
        axes[r, 0].set_title(title, fontsize=9, loc="left")
    fig.suptitle(f"{section.name}: {section.dataset} / normal class {kw['normal_class']!r}", fontsize=10)
    fig.tight_layout()
    return fig
