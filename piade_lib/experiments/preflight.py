"""Pre-flight checks of a profile, before anything trains: its preset values, its datasets and (if
asked for) the pretrained weights. Each problem is one message naming what is missing and the
command that fixes it (``piade download ...``). The command line is ``piade profile check PROFILE``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from piade_lib.experiments.profiles import (
    Profile,
    ProfileError,
    Section,
    load_profile,
    validate_presets,
)


# ---------------------------------------------------------------------------------------------
# Availability check (before any training)
# ---------------------------------------------------------------------------------------------
def check_profile(profile: str | Path | Profile, results_root: str | Path | None = None) -> list[str]:
    """Return a list of problems (empty when the profile can run): missing or damaged datasets,
    missing pretrained weights, an unknown ``$PIADE_EXECUTOR`` or ``$PIADE_CPU_ALLOCATOR``, a results
    folder (``results_root``; default ``$PIADE_RESULTS``, else the profile's) that cannot be written, or
    less free disk there than its unfinished runs' weights and checkpoints need
    (:mod:`piade_lib.experiments.disk`). An invalid
    profile (e.g. a preset value out of its valid set or range, in ``preset_overrides`` or through a flip) raises
    :class:`ProfileError` first: every section's presets are built as its runs will build them, and a device
    this machine lacks (``device: cuda`` without CUDA) is refused. Each
    problem says what is missing, where it is expected and how to fix it. Datasets are checked by
    building the one-class task the runs will build (the data package's own errors, e.g.
    DatasetNotFoundError, carry the layout, URL and checksum); for MVTec-layout datasets, whose classes
    are separate folders, every class is checked.
    """
    if isinstance(profile, Profile):  # load_profile checks the presets itself; a Profile built in code is checked here
        prof = profile
        for s in prof.sections.values():
            validate_presets(s, f"{prof.path}: sections.{s.name}")
    else:
        prof = load_profile(profile)
    _check_devices(prof)
    from piade_lib.engine import cpu_allocator
    from piade_lib.experiments.executors import check_environment

    problems: list[str] = check_environment()
    try:
        cpu_allocator.requested()
    except cpu_allocator.AllocatorSettingError as exc:
        problems.append(str(exc))
    problems += _dataset_problems(prof)
    if prof.pretrained:
        problems += _weights_problems(prof)
    from piade_lib.experiments import disk

    problem = disk.disk_problem(prof, results_root or disk.results_root(prof))
    return problems + ([problem] if problem else [])


def _check_devices(prof: Profile) -> None:
    """Raise ProfileError when a section asks for a device this machine lacks (e.g. ``cuda:1`` with one
    GPU, ``cuda`` without CUDA): its runs would fail once they start. Not checked under the Ray executor,
    whose runs may execute on other machines of the cluster."""

    from piade_lib.experiments.executors import ENV_VAR

    if (os.environ.get(ENV_VAR, "").strip() or prof.executor.kind) == "ray":
        return
    from piade_lib.engine.devices import available_devices, torch_note

    here = available_devices()
    for s in prof.sections.values():
        device = str(s.run.get("device", "auto"))
        if device not in here:
            raise ProfileError(
                f"{prof.path}: sections.{s.name}: device={device!r} is not available on this machine "
                f"(devices here: {', '.join(here)}; {torch_note()}); set device: auto (a GPU when there "
                "is one, else the CPU) or one of those in the profile"
            )


def _dataset_problems(prof: Profile) -> list[str]:
    """One problem for each (dataset, data root) of ``prof`` whose one-class task cannot be built."""
    from piade_lib.data import DATASETS, DOWNLOADABLE

    problems: list[str] = []
    checked: set[tuple] = set()
    missing: set[tuple] = set()  # (dataset, data_root) already reported
    for s in prof.sections.values():
        if (s.dataset, s.run.get("data_root")) in missing:
            continue
        names = s.class_names()
        per_folder = DATASETS[s.dataset].default_protocol == "mvtec" and not DATASETS[s.dataset].standin
        failed = _failed_classes(s, names if per_folder else names[:1], checked, f"{prof.path}: sections.{s.name}")
        if failed:
            cls, exc = failed[0]
            msg = f"[section {s.name}] dataset {s.dataset!r}, class {cls!r}: {type(exc).__name__}:\n{_indent(str(exc))}"
            if len(failed) > 1:
                msg += (
                    f"\n    The same holds for {len(failed) - 1} more class(es): {', '.join(c for c, _ in failed[1:])}"
                )
            if s.dataset in DOWNLOADABLE:
                msg += f"\n    Fetch it with: {download_command(s.dataset, s.run.get('data_root'))}"
            problems.append(msg)
            missing.add((s.dataset, s.run.get("data_root")))
    return problems


def _failed_classes(s: Section, classes: list[str], checked: set[tuple], where: str) -> list[tuple[str, Exception]]:
    """Build section ``s``'s one-class task for each of ``classes`` not yet ``checked``; return those that fail.
    A setting the data package refuses (a protocol parameter, an image size: bad input, not missing data)
    raises ProfileError naming the section (``where``)."""
    from piade_lib.data import PiadeDataError, one_class_task
    from piade_lib.data.errors import ProtocolParameterError, UnknownProtocolError, UnsupportedImageSizeError

    failed: list[tuple[str, Exception]] = []
    for cls in classes:
        key = (s.dataset, s.protocol, cls, s.run.get("data_root"), repr(s.run.get("protocol_params")))
        if key in checked:
            continue
        checked.add(key)
        try:
            one_class_task(
                s.dataset,
                cls,
                protocol=s.protocol,
                seed=int(s.run.get("seed", 0)),
                root=s.run.get("data_root"),
                image_size=s.run.get("image_size"),
                **(s.run.get("protocol_params") or {}),
            )
        except (UnknownProtocolError, UnsupportedImageSizeError, ProtocolParameterError) as exc:  # bad input
            raise ProfileError(f"{where}: {exc}") from exc
        except PiadeDataError as exc:
            failed.append((cls, exc))
        except ValueError as exc:  # e.g. a protocol parameter's value out of its range
            raise ProfileError(f"{where} (dataset {s.dataset!r}, class {cls!r}): {exc}") from exc
    return failed


def _weights_problems(prof: Profile) -> list[str]:
    """One problem for each backbone's ImageNet weights ``prof`` needs that are not cached."""
    from piade_lib.model.weights import is_cached, weights_file, weights_url
    from piade_lib.presets import get_preset

    problems: list[str] = []
    archs = sorted(
        {get_preset(p).backbone for s in prof.sections.values() if s.run.get("pretrained") for p in s.presets}
        | {"vgg11"}
    )
    for arch in archs:
        if not is_cached(arch):
            f = weights_file(arch)
            problems.append(
                f"ImageNet weights for {arch} are not cached (the profile sets pretrained: true):\n"
                f"    expected file : {f.name}\n"
                f"    in folder     : {f.parent}  (torchvision's cache; set TORCH_HOME to use another)\n"
                f"    download from : {weights_url(arch)}\n"
                f"    copy the file there from a machine with network access (or run once with network)"
            )
    return problems


def download_command(dataset: str, root: str | None = None) -> str:
    """The exact shell command that fetches ``dataset`` into the data root the runs read
    (``root``, else $PIADE_DATA, else ./data): ``piade`` when it is on the PATH, else its path in this
    environment (e.g. ``.venv/bin/piade``)."""
    import shlex
    import shutil

    from piade_lib.data import data_root

    exe = "piade"
    here = Path(sys.executable).parent / "piade"
    found = shutil.which("piade")
    if not (found and Path(found).resolve() == here.resolve()):
        exe = os.path.relpath(here) if here.is_file() else f"{shlex.quote(sys.executable)} -m piade_lib.cli"
        if here.is_file() and exe.startswith(".."):
            exe = str(here)
        exe = shlex.quote(exe) if here.is_file() else exe
    return f"{exe} download {dataset} --root {shlex.quote(str(data_root(root)))}"


def _indent(text: str, pad: str = "    ") -> str:
    return "\n".join(pad + line for line in text.splitlines())
