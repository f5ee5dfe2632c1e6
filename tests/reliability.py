"""The reliability suite's record: each fault or bad input tried, what happened, and what was lost.

Tests marked ``reliability`` take the ``reliability`` fixture and call ``record`` with what they observed (the
outcome is built from the run's own results, never written in advance). At the end of the session the records
go to ``$CRNN_RELIABILITY_OUT`` (default ``outputs/reliability/results.json``), from which
``tools/reliability_table.py`` writes the table in docs/reliability.md.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_OUT = Path("outputs") / "reliability" / "results.json"


@dataclass(frozen=True)
class Case:
    area: str  # e.g. "input", "process", "tracking", "storage", "security"
    fault: str  # what was done to the pipeline
    outcome: str  # what the pipeline did, from the test's observations
    lost: str  # what was lost: "nothing" is the goal
    test: str = ""


class Recorder:
    def __init__(self) -> None:
        self.cases: list[Case] = []

    def record(self, test: str, area: str, fault: str, outcome: str, lost: str = "nothing") -> None:
        self.cases.append(Case(area, fault, outcome, lost, test))

    def write(self) -> Path | None:
        if not self.cases:
            return None
        out = Path(os.environ.get("CRNN_RELIABILITY_OUT", DEFAULT_OUT))
        out.parent.mkdir(parents=True, exist_ok=True)
        # Under pytest -n every worker adds its own tests' rows to the one file: one at a time.
        with open(out.with_name(out.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            previous = json.loads(out.read_text()) if out.is_file() else []
            # Re-running one test replaces its rows; the others stay.
            tests = {case.test for case in self.cases}
            rows = [row for row in previous if row["test"] not in tests] + [asdict(case) for case in self.cases]
            tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(rows, indent=2) + "\n")
            tmp.replace(out)
        return out
