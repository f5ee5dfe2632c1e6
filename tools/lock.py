"""``make lock``: a ``pip freeze --all`` of the virtualenv, split into the runtime pins and the development pins.

``requirements.lock`` holds what the project's own dependencies pull in: what the images install.
``requirements-dev.lock`` holds the rest (test runners, linters, moto...), which only ``make setup`` installs.
The split follows the installed packages' metadata, so run it in the virtualenv the freeze came from.

``make lock-ascend``: ``python -m tools.lock --ascend BASE FULL``, from two ``pip install --dry-run --report``
reports made on Python 3.9 (in the bullseye base): BASE of TensorFlow 2.6.5 as Ascend installs it, FULL of that
with what the library needs besides. ``images/requirements-ascend-base.txt`` gets BASE's pins (the stand-in
base), ``images/requirements-ascend.txt`` FULL's pins that BASE lacks or pins otherwise (the ascend image).
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from crnn.files import atomic_path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_LOCK, DEV_LOCK = ROOT / "requirements.lock", ROOT / "requirements-dev.lock"
ASCEND_BASE_REQUIREMENTS = ROOT / "images" / "requirements-ascend-base.txt"
ASCEND_REQUIREMENTS = ROOT / "images" / "requirements-ascend.txt"
# Pinned where they are installed (make setup, the Dockerfiles): each environment needs them before any lock.
INSTALLER = {"pip", "setuptools"}


def closure(requirements: Iterable[str]) -> set[str]:
    """Every distribution these requirements pull in (their names canonicalised), per the installed metadata,
    extras followed."""
    seen: set[tuple[str, frozenset]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = importlib.metadata.distribution(requirement.name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            child = Requirement(text)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in {"", *requirement.extras}):
                todo.append(child)
    return {name for name, _ in seen}


def runtime_requirements() -> list[str]:
    """The project's own dependencies, as pyproject.toml declares them."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def pinned_name(line: str) -> str:
    return canonicalize_name(line.split("==")[0])


def split(frozen: list[str], runtime: set[str]) -> tuple[list[str], list[str]]:
    """The frozen pins needed at run time, and the others."""
    pins = [line.strip() for line in frozen
            if line.strip() and not line.startswith("#") and pinned_name(line) not in INSTALLER]
    return [p for p in pins if pinned_name(p) in runtime], [p for p in pins if pinned_name(p) not in runtime]


def report_pins(report: Path) -> list[str]:
    """``name==version`` of every distribution a ``pip install --report`` would install, sorted by name."""
    installs = json.loads(report.read_text())["install"]
    return sorted((f"{i['metadata']['name']}=={i['metadata']['version']}" for i in installs), key=str.lower)


def ascend_locks(base: list[str], full: list[str]) -> tuple[list[str], list[str]]:
    """(the stand-in base's pins, what the ascend image adds to a base holding them)."""
    return base, [pin for pin in full if pin not in set(base)]


def _comments(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("#")]


def _write(dest: Path, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    print(f"{dest.relative_to(ROOT)}: written")


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--ascend":
        locks = ascend_locks(report_pins(Path(argv[1])), report_pins(Path(argv[2])))
        for dest, pins in zip((ASCEND_BASE_REQUIREMENTS, ASCEND_REQUIREMENTS), locks, strict=True):
            _write(dest, "\n".join([*_comments(dest), *pins]) + "\n")
        return 0
    if len(argv) != 1:
        print("usage: python -m tools.lock FROZEN   (the output of pip freeze)\n"
              "       python -m tools.lock --ascend BASE_REPORT FULL_REPORT", file=sys.stderr)
        return 2
    runtime, dev = split(Path(argv[0]).read_text().splitlines(), closure(runtime_requirements()))
    for dest, text in ((RUNTIME_LOCK, "\n".join(runtime) + "\n"), (DEV_LOCK, "\n".join(dev) + "\n")):
        _write(dest, text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
