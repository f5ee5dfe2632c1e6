"""The evaluate step's outputs: ``report.json``, a plain-text table like the reference's test_result.txt, and
for each benchmark a picture of sample predictions and a table of its most frequent errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crnn.charset import Charset
from crnn.data.shards import data_sha256, manifest_sha256, read_manifest
from crnn.evaluate.errors import character_edits, format_errors, word_errors
from crnn.evaluate.samples import render_samples
from crnn.files import atomic_path, write_json

if TYPE_CHECKING:  # the report is written where TensorFlow need not load
    from crnn.evaluate.benchmark import BenchmarkResult

REPORT_FILE = "report.json"
TABLE_FILE = "test_result.txt"


@dataclass(frozen=True)
class ErrorTables:
    """The most frequent errors of one benchmark, worked out once for the report and the review file."""

    words: list[tuple[str, str, int]]  # (ground truth, prediction, count)
    edits: list[tuple[str, str, int]]  # (expected, read, count)

    @classmethod
    def of(cls, result: BenchmarkResult, charset: Charset, top: int = 20) -> ErrorTables:
        pairs = [(charset.normalize(p.ground_truth), charset.normalize(p.prediction)) for p in result.predictions]
        return cls(word_errors(pairs, top), character_edits(pairs, top))


def benchmark_entry(result: BenchmarkResult, data_dir: Path, errors: ErrorTables,
                    top: int = 10) -> dict[str, Any]:
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
        "manifest_sha256": manifest_sha256(data_dir),
        # A synthetic stand-in wears the real benchmark's name: every place showing its score says so.
        "synthetic": bool(manifest.get("inputs", {}).get("synthetic", False)),
        "data_sha256": data_sha256(manifest),  # what the gate compares (``crnn.registry.gate``)
        "frequent_errors": [{"ground_truth": gt, "prediction": pred, "count": count}
                            for gt, pred, count in errors.words[:top]],
        "character_edits": [{"expected": expected, "read": read, "count": count}
                            for expected, read, count in errors.edits[:top]],
    }


def write_review_files(name: str, result: BenchmarkResult, errors: ErrorTables, out_dir: Path) -> list[Path]:
    """``samples-<name>.png`` (predictions right and wrong beside their ground truth) and ``errors-<name>.txt``
    (the most frequent word errors and character edits), for people reviewing the run."""
    errors_file = Path(out_dir) / f"errors-{name}.txt"
    with atomic_path(errors_file) as tmp:
        tmp.write_text(format_errors(name, errors.words, errors.edits))
    written = [errors_file]
    if result.examples:
        score = f"{100 * result.score.accuracy:.2f} % of {result.score.num_samples}"
        written.append(render_samples([(e.image, e.ground_truth, e.prediction, e.correct) for e in result.examples],
                                      f"{name}: {score} read right", Path(out_dir) / f"samples-{name}.png"))
    return written


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
    """``listed``: samples in the benchmark's index; ``evaluated``: those left after the protocol's filter."""
    lines = [f"{'benchmark':<12} {'listed':>7} {'evaluated':>9} {'accuracy %':>11} {'NED':>7} {'images/s':>9}"]
    for name, entry in report["benchmarks"].items():
        lines.append(f"{name:<12} {entry.get('num_samples_listed', entry['num_samples']):>7} "
                     f"{entry['num_samples']:>9} {100 * entry['accuracy']:>11.2f} {entry.get('ned', 0):>7.4f} "
                     f"{entry.get('images_per_sec', 0):>9.0f}")
    lines.append(f"{'average':<12} {'':>7} {'':>9} {100 * report['average']:>11.2f}   (unweighted mean)")
    lines.append(f"{'weighted':<12} {'':>7} {report['num_samples']:>9} {100 * report['weighted_average']:>11.2f}"
                 "   (all samples together)")
    return "\n".join(lines) + "\n"


def read_report(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / REPORT_FILE).read_text())


def write_report(report: Mapping[str, Any], out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    write_json(out_dir / REPORT_FILE, report)
    with atomic_path(out_dir / TABLE_FILE) as tmp:
        tmp.write_text(format_table(report))
    return out_dir / REPORT_FILE
