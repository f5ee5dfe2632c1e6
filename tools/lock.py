"""``make lock``: a ``pip freeze --all`` of the virtualenv, split into the runtime pins and the development pins.

``requirements.lock`` holds what the project's own dependencies pull in: what the images install.
``requirements-dev.lock`` holds the rest (test runners, linters, moto...), which only ``make setup`` installs.
``images/requirements-ascend.txt`` is the runtime lock less its TensorFlow-bound lines (see its header).
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
ASCEND_REQUIREMENTS = ROOT / "images" / "requirements-ascend.txt"
TF_BOUND_LINE = "# TF-bound: "
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


def tf_bound(locked: set[str]) -> set[str]:
    """The locked distributions that only tensorflow or keras need, of what the project needs at run time: an
    Ascend image brings its own TensorFlow with its own dependencies, which these pins would replace."""
    roots = runtime_requirements()
    by_tf = [r for r in roots if canonicalize_name(Requirement(r).name) in ("tensorflow", "keras")]
    return (closure(by_tf) - closure([r for r in roots if r not in by_tf])) & locked


def ascend_requirements(runtime: list[str], header: list[str]) -> str:
    """``images/requirements-ascend.txt``: its explanatory ``header`` lines, the TF-bound names, the other pins."""
    bound = tf_bound({pinned_name(p) for p in runtime})
    kept = [line for line in header if not line.startswith(TF_BOUND_LINE)]
    pins = [p for p in runtime if pinned_name(p) not in bound]
    return "\n".join([*kept, TF_BOUND_LINE + " ".join(sorted(bound)), *pins]) + "\n"


def _comments(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("#")]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tools.lock FROZEN   (the output of pip freeze)", file=sys.stderr)
        return 2
    runtime, dev = split(Path(argv[0]).read_text().splitlines(), closure(runtime_requirements()))
    ascend = ascend_requirements(runtime, _comments(ASCEND_REQUIREMENTS))
    for dest, text in ((RUNTIME_LOCK, "\n".join(runtime) + "\n"), (DEV_LOCK, "\n".join(dev) + "\n"),
                       (ASCEND_REQUIREMENTS, ascend)):
        with atomic_path(dest) as tmp:
            tmp.write_text(text)
        print(f"{dest.relative_to(ROOT)}: written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
