"""``make lock``: a ``pip freeze`` of the virtualenv, split into the runtime pins and the development pins.

``requirements.lock`` holds what the project's own dependencies pull in: what the images install.
``requirements-dev.lock`` holds the rest (test runners, linters, moto...), which only ``make setup`` installs.
The split follows the installed packages' metadata, so run it in the virtualenv the freeze came from.
"""

from __future__ import annotations

import importlib.metadata
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from crnn.files import atomic_path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_LOCK, DEV_LOCK = ROOT / "requirements.lock", ROOT / "requirements-dev.lock"


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
    pins = [line.strip() for line in frozen if line.strip() and not line.startswith("#")]
    return [p for p in pins if pinned_name(p) in runtime], [p for p in pins if pinned_name(p) not in runtime]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tools.lock FROZEN   (the output of pip freeze)", file=sys.stderr)
        return 2
    runtime, dev = split(Path(argv[0]).read_text().splitlines(), closure(runtime_requirements()))
    for dest, pins in ((RUNTIME_LOCK, runtime), (DEV_LOCK, dev)):
        with atomic_path(dest) as tmp:
            tmp.write_text("\n".join(pins) + "\n")
        print(f"{dest.name}: {len(pins)} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
