"""Where a model came from: the code's commit and the checksums of the data it was trained on.

The train step writes this beside the exported model; the register step copies it onto the model version,
with the benchmarks' checksums, so a registered model can be traced to its code and data.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from crnn.files import write_json

LINEAGE_FILE = "lineage.json"
COMMIT_ENV = "CRNN_GIT_COMMIT"  # set in the images at build time, where there is no .git


def git_commit() -> str:
    """``$CRNN_GIT_COMMIT``, else this checkout's HEAD (``-dirty`` with uncommitted changes), else ``unknown``."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    here = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def write_lineage(dest_dir: Path, entries: Mapping[str, str]) -> None:
    write_json(Path(dest_dir) / LINEAGE_FILE, {"git_commit": git_commit(), **entries})


def read_lineage(model_dir: Path) -> dict[str, str]:
    """The lineage beside an exported model; empty for a model exported without one."""
    path = Path(model_dir) / LINEAGE_FILE
    return {key: str(value) for key, value in json.loads(path.read_text()).items()} if path.is_file() else {}
