"""The lock file's identity, for provenance.

``locks/requirements.lock`` pins every distribution the project installs (scripts/env.sh installs
from it by default). :func:`lock_info` says which lock a run was made under (its SHA-256) and
whether the running environment holds exactly the pinned versions.
"""

from __future__ import annotations

import hashlib
import re
from importlib import metadata
from pathlib import Path

LOCK_FILE = "locks/requirements.lock"  # relative to the repository root
MAX_MISMATCHES = 10  # mismatches listed in full; n_mismatches counts all of them

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;\\#]+)\s*(?:;\s*([^\\#]*))?")


def repo_root() -> Path:
    """The folder holding this checkout's pyproject.toml (for an installed wheel: site-packages)."""
    return Path(__file__).resolve().parents[2]


def normalize(name: str) -> str:
    """PEP 503 name normalisation: 'Typing_Extensions' -> 'typing-extensions'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: str | Path) -> dict[str, str]:
    """{normalised name: version} of every ``name==version`` line of a requirements file whose
    environment marker (if any) holds here; hashes, comments and option lines are skipped."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        match = _PIN.match(line.strip())
        if not match:
            continue
        name, version, marker = match.groups()
        if marker and marker.strip() and not _marker_holds(marker.strip()):
            continue
        pins[normalize(name)] = version
    return pins


def installed_versions() -> dict[str, str]:
    """{normalised name: version} of the distributions importable here (the first one on sys.path wins)."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            found.setdefault(normalize(name), dist.version)
    return found


def _marker_holds(marker: str) -> bool:
    try:
        from packaging.markers import Marker
    except ImportError:  # cannot evaluate: count the pin
        return True
    try:
        return Marker(marker).evaluate()
    except Exception:
        return True


def _version_matches(locked: str, installed: str) -> bool:
    """PEP 440 ``==locked``: '2.14.1' matches '2.14.1' and a local build such as '2.14.1+cu130'."""
    try:
        from packaging.specifiers import SpecifierSet

        return SpecifierSet(f"=={locked}").contains(installed, prereleases=True)
    except Exception:  # packaging missing or a non-PEP 440 version: compare the public versions as text
        return installed == locked or ("+" not in locked and installed.split("+", 1)[0] == locked)


def lock_info(path: str | Path | None = None, root: str | Path | None = None) -> dict:
    """The lock file's identity and whether this environment matches it.

    Returns ``file`` (the lock's path relative to the repository root), ``sha256`` (of its bytes),
    ``n_pinned``, ``installed_matches`` (every pinned distribution is installed at exactly its
    pinned version), ``mismatches`` (at most MAX_MISMATCHES lines "name: locked X, installed Y")
    and ``n_mismatches``. Every value is None when the lock file is not there (e.g. piade_lib
    installed as a wheel, away from the repository).
    """
    root = Path(root) if root is not None else repo_root()
    lock = Path(path) if path is not None else root / LOCK_FILE
    info = dict.fromkeys(("file", "sha256", "n_pinned", "installed_matches", "mismatches", "n_mismatches"))
    if not lock.is_file():
        return info
    try:
        info["file"] = lock.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        info["file"] = str(lock)
    info["sha256"] = hashlib.sha256(lock.read_bytes()).hexdigest()
    pins = read_pins(lock)
    installed = installed_versions()
    mismatches = [
        f"{name}: locked {version}, installed {installed.get(name, 'none')}"
        for name, version in sorted(pins.items())
        if name not in installed or not _version_matches(version, installed[name])
    ]
    info.update(
        n_pinned=len(pins),
        installed_matches=not mismatches,
        mismatches=mismatches[:MAX_MISMATCHES],
        n_mismatches=len(mismatches),
    )
    return info
