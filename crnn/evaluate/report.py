"""The evaluate step's outputs: ``report.json`` and a plain-text table like the reference's test_result.txt."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crnn.data.files import atomic_path, write_json
from crnn.data.tfrecord import read_manifest
from crnn.evaluate.benchmark import BenchmarkResult

REPORT_FILE = "report.json"
TABLE_FILE = "test_result.txt"


def benchmark_entry(result: BenchmarkResult, data_dir: Path) -> dict[str, Any]:
    manifest = read_manifest(data_dir)
    skipped = sum(manifest["skipped"].values())
    return {
        "accuracy": result.score.accuracy,
        "ned": result.score.ned,
        "correct": result.score.correct,
        "num_samples": result.score.num_samples,
        "num_samples_listed": result.score.num_samples + skipped,  # in the dataset's index, before skips
        "skipped": manifest["skipped"],
        "images_per_sec": result.images_per_sec,
    }


def summarise(benchmarks: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The report: per-benchmark entries, the unweighted mean (``average``) and the sample-weighted total."""
    total = sum(entry["num_samples"] for entry in benchmarks.values())
    return {
        "benchmarks": dict(benchmarks),
        "average": sum(e["accuracy"] for e in benchmarks.values()) / len(benchmarks) if benchmarks else 0.0,
        "weighted_average": sum(e["correct"] for e in benchmarks.values()) / total if total else 0.0,
        "num_samples": total,
    }


def format_table(report: Mapping[str, Any]) -> str:
    lines = [f"{'benchmark':<12} {'samples':>8} {'accuracy %':>11} {'NED':>7}"]
    for name, entry in report["benchmarks"].items():
        lines.append(f"{name:<12} {entry['num_samples']:>8} {100 * entry['accuracy']:>11.2f} {entry['ned']:>7.4f}")
    lines.append(f"{'average':<12} {'':>8} {100 * report['average']:>11.2f}")
    lines.append(f"{'weighted':<12} {report['num_samples']:>8} {100 * report['weighted_average']:>11.2f}")
    return "\n".join(lines) + "\n"


def read_report(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / REPORT_FILE).read_text())


def write_report(report: Mapping[str, Any], out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    write_json(out_dir / REPORT_FILE, report)
    with atomic_path(out_dir / TABLE_FILE) as tmp:
        tmp.write_text(format_table(report))
    return out_dir / REPORT_FILE
