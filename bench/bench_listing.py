"""What a conversion does in one process before its workers start, against listing the index, at MJSynth's size.

A conversion's converting process opens the index (finds where every line starts and digests it, in one
read), plans the shards and hands each worker a part (a few numbers); the workers list their own lines.
Listing every line is the work that would otherwise sit in that one process, ahead of every worker (as it did
before shards were cut by index lines). Both are measured in this run on a generated MJSynth annotation
file; the figure is their ratio. Nothing here reads an image.

Usage: python bench/bench_listing.py [--lines 9000000] [--out outputs/bench]
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
import time
from collections import Counter
from pathlib import Path

from crnn.config import ModelConfig
from crnn.data.convert import _inputs, _plan, shard_ranges
from crnn.data.readers import open_source
from crnn.data.shards import DEFAULT_SHARD_SIZE, LabelPolicy


def write_annotation(path: Path, lines: int) -> None:
    """MJSynth's ``annotation_train.txt`` form, with its folder depth and word lengths."""
    with open(path, "w") as stream:
        for i in range(lines):
            stream.write(f"./{i // 3000 + 1}/{i % 7 + 1}/{i % 1000}_Slinking{i % 97}_{i}.jpg {i}\n")


def serial_seconds(index: Path, shard_size: int) -> tuple[float, int]:
    """(seconds, shards): what the converting process does before its workers start."""
    started = time.perf_counter()
    source = open_source("mjsynth", index)
    _plan(source, ModelConfig(), LabelPolicy(), shard_size, _inputs(source, None))
    parts = [pickle.dumps(source.part(items)) for items in shard_ranges(source.items, shard_size)]
    return time.perf_counter() - started, len(parts)


def listing_seconds(index: Path) -> tuple[float, int]:
    """(seconds, entries): listing every line in one process."""
    started = time.perf_counter()
    entries = open_source("mjsynth", index).entries(Counter())
    return time.perf_counter() - started, len(entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=9_000_000, help="MJSynth's training set has 8.9 million")
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-listing-") as work:
        index = Path(work) / "annotation_train.txt"
        write_annotation(index, args.lines)
        serial, shards = min(serial_seconds(index, args.shard_size) for _ in range(3))
        listing, entries = listing_seconds(index)
    assert entries == args.lines, (entries, args.lines)
    figures = {"lines": args.lines, "shards": shards, "serial_seconds": serial, "listing_seconds": listing,
               "listing_vs_serial": listing / serial}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "listing.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n{args.lines} index lines, {shards} shards of {args.shard_size}")
    print(f"{'before the workers start (open and digest, plan, parts), s':<58} {serial:>8.2f}")
    print(f"{'listing every line in one process, s':<58} {listing:>8.2f}")
    print(f"{'  listing / before the workers start':<58} {listing / serial:>7.0f}x")
    print(f"\nwritten to {args.out / 'listing.json'}")


if __name__ == "__main__":
    main()
