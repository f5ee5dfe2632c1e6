"""The tiny pipeline, run once in a process of its own as the pipeline tests check it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

SCRIPT = ("import json, sys; from kfp import local; from pipelines.local_run import run_locally; "
          "summary = run_locally(sys.argv[1], tracking_uri=sys.argv[2], runner={runner}, preset='tiny', steps=6, "
          "train_size=64, val_size=8, test_size=10, data_root=sys.argv[4] or None); "
          "json.dump(summary, open(sys.argv[3], 'w'))")


def run_tiny_pipeline(out: Path, tracking_uri: str, env: Mapping[str, str], runner: str = "None",
                      timeout: float = 900, data_root: Path | None = None, setup: str = "") -> dict:
    """Runs it into ``out`` with its whole output in ``out/pipeline.log``; returns its summary. ``runner``: a
    kfp.local runner as Python source (``None``: run_locally's own); ``data_root``: default ``out/datasets``;
    ``setup``: Python statements run first."""
    script = f"{setup}; {SCRIPT.format(runner=runner)}" if setup else SCRIPT.format(runner=runner)
    with open(out / "pipeline.log", "wb") as log:
        done = subprocess.run([sys.executable, "-c", script, str(out), tracking_uri, str(out / "summary.json"),
                               str(data_root or "")],
                              stdout=log, stderr=subprocess.STDOUT, env=dict(env), timeout=timeout)
    assert done.returncode == 0, (out / "pipeline.log").read_text()[-5000:]
    return json.loads((out / "summary.json").read_text())
