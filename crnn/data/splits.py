"""Split keys, ``<dataset>/<split>``: how a run names the data it trains and evaluates on."""

from __future__ import annotations

SYNTHETIC = "synthetic"
DEFAULT_TRAIN_SETS = ("mjsynth/train",)
DEFAULT_VAL_SET = "mjsynth/val"
HELDOUT_BENCHMARK = "HeldOut"  # the synthetic source's generalisation benchmark (crnn.data.synthetic)
DEFAULT_BENCHMARKS = ("IIIT5K/test", "SVT/test", "IC13/test", f"{HELDOUT_BENCHMARK}/test")


def benchmark_name(key: str) -> str:
    """How a benchmark split is reported: ``IIIT5K/test`` -> IIIT5K, ``IC13/test_857`` -> IC13_857,
    ``lmdb-evaluation/SVTP`` -> SVTP (the LMDB release names its splits after the benchmarks)."""
    dataset, _, split = key.partition("/")
    if split in ("", "test"):
        return dataset
    return dataset + split[4:] if split.startswith("test_") else split
