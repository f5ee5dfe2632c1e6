"""Writing one TFRecord shard: the record schema and the label policy (no TensorFlow needed).

Record schema (``schema_version`` 1), one ``tf.train.Example`` per word:

=============  =======  ==============================================================================
key            type     meaning
=============  =======  ==============================================================================
image          bytes    the preprocessed image, raw uint8, shape (height, width, channels) in the manifest
label          int64[]  class ids of the normalised label (charset in the manifest, blank = len(charset))
label_length   int64    number of ids
text           bytes    the ground truth as the dataset wrote it (UTF-8), for reports
source_id      bytes    where the sample came from (file name, image name and box index, LMDB number)
=============  =======  ==============================================================================

Images are stored resized to the model input rather than as encoded bytes: by measurement (``make bench``)
parsing raw bytes is what keeps the reader far ahead of training, and a 32 x 100 grayscale word is 3.2 KB,
about what its JPEG takes. Storing the source's JPEG instead (still decoded once, to count corrupt images)
converted hardly faster, and would decode every image again in every epoch.

Label policy: a label is normalised (lowercased, characters outside the charset removed) and kept; the
ones that become empty or longer than ``max_label_length`` are dropped and counted (``empty_label``,
``label_too_long``), as the evaluation protocol filters them, except in a split marked ``unfiltered``
(IC15_2077, CUTE80: benchmarks defined on every word; never train on one). A split may first apply its
benchmark's subset rule to the label as written: ``alnum`` drops words with characters other than letters and
digits (``filtered_not_alnum``), ``alnum_min3`` also words under 3 characters (``filtered_short``). Data for
training also drops labels CTC cannot align in the model's time steps (length plus repeated neighbours over
``time_steps``: ``label_unalignable``). The manifest's ``labels_normalised`` counts kept labels that
normalisation changed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crnn.charset import Charset
from crnn.config import ModelConfig
from crnn.data.readers import Part, Sample
from crnn.data.tfrecord_writer import RecordWriter, bytes_feature, bytes_feature_prefix, example_of, int64_feature
from crnn.files import atomic_path, sha256_of
from crnn.preprocess import to_model_input

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_SHARD_SIZE = 10_000  # index items (lines, LMDB samples) per shard
_STORAGE_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # no space, over quota, over the file size limit


@contextlib.contextmanager
def naming_full_storage(path: Path) -> Iterator[None]:
    """A full disk fails ``write()``, ``close()`` or ``fsync()`` with an error that names no file; it is raised
    again naming ``path``, the file being written."""
    try:
        yield
    except OSError as err:
        if err.errno not in _STORAGE_FULL or err.filename is not None:
            raise
        raise OSError(err.errno, f"{err.strerror} while writing {path}") from None


@dataclass(frozen=True)
class LabelPolicy:
    filter: str | None = None  # "alnum" or "alnum_min3"
    unfiltered: bool = False
    for_training: bool = False


def ctc_alignable(text: str, time_steps: int) -> bool:
    """CTC needs a blank between repeated characters: length + repeats must fit in the time steps."""
    if 2 * len(text) - 1 <= time_steps:  # fits even if every neighbour repeats: most words, no counting
        return True
    repeats = sum(a == b for a, b in zip(text, text[1:]))
    return len(text) + repeats <= time_steps


def _filtered_out(label: str, rule: str | None) -> str | None:
    """The skip reason under a benchmark's subset rule, or None if the word belongs to the subset."""
    if rule is None:
        return None
    if not label.isascii() or not label.isalnum():
        return "filtered_not_alnum"
    if rule == "alnum_min3" and len(label) < 3:
        return "filtered_short"
    return None


def kept_label(label: str, charset: Charset, model: ModelConfig, policy: LabelPolicy) -> tuple[str | None, str]:
    """(the normalised label, "") under the label policy, or (None, the reason the sample is dropped)."""
    reason = _filtered_out(label, policy.filter)
    if reason:
        return None, reason
    text = charset.normalize(label)
    if not policy.unfiltered:
        if not text:
            return None, "empty_label"
        if len(text) > model.max_label_length:
            return None, "label_too_long"
        if policy.for_training and not ctc_alignable(text, model.time_steps):
            return None, "label_unalignable"
    return text, ""


class SampleEncoder:
    """Samples -> records of the schema, under the label policy; counts what it keeps and why it drops.

    A label's part of the record (ids, length, text) is made once per distinct label: MJSynth's 9 million
    images show 90 thousand words."""

    def __init__(self, model: ModelConfig, policy: LabelPolicy):
        self._model, self._policy, self._charset = model, policy, Charset(model.charset)
        small = len(self._charset.chars) <= 256  # then ids fit a byte each, made without a list of integers
        self._encode_ids = self._charset.encode_bytes if small else self._charset.encode
        self._image_prefix = bytes_feature_prefix("image", model.height * model.width * model.channels)
        self._labels: dict[str, tuple[bytes, bool] | str] = {}  # label -> (its features, normalised) or reason
        self.skipped: Counter = Counter()
        self.count = self.normalised = 0

    def encode(self, sample: Sample) -> bytes | None:
        """The sample's record, or None with the reason counted in ``skipped``."""
        label = self._labels.get(sample.label)
        if label is None:
            label = self._labels[sample.label] = self._label_features(sample.label)
        if isinstance(label, str):
            self.skipped[label] += 1
            return None
        features, normalised = label
        self.count += 1
        self.normalised += normalised
        return example_of((self._image_prefix, to_model_input(sample.image, self._model).tobytes(), features,
                           bytes_feature("source_id", sample.source_id.encode("utf-8"))))

    def _label_features(self, label: str) -> tuple[bytes, bool] | str:
        text, reason = kept_label(label, self._charset, self._model, self._policy)
        if text is None:
            return reason
        ids = self._encode_ids(text)
        features = b"".join((int64_feature("label", ids), int64_feature("label_length", (len(ids),)),
                             bytes_feature("text", label.encode("utf-8"))))
        return features, text != label


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.tfrecord"


def write_shard(path: Path, part: Part, model: ModelConfig, policy: LabelPolicy) -> dict[str, Any]:
    """Lists and loads ``part``, writes the kept samples to ``path`` (whole or not at all); returns the shard's
    figures: ``file``, ``count``, ``sha256``, ``listed`` (the samples its items named), ``skipped`` (reason ->
    count) and ``labels_normalised``.

    The file is not synced to disk here: a resume checks every shard's bytes against its sha256 anyway, and
    the conversion syncs all its shards at once before it writes the manifest that names them."""
    encoder = SampleEncoder(model, policy)
    entries = part.entries(encoder.skipped)
    listed = len(entries) + encoder.skipped.total()  # what listing skipped, and the entries to load
    # The writer closes (flushes) before atomic_path renames; a full disk surfaces in either, named.
    with (naming_full_storage(path), atomic_path(path, sync=False) as tmp, RecordWriter(tmp) as writer,
          part.loader(grayscale=model.channels == 1) as load):
        for entry in entries:
            sample = load(entry, encoder.skipped)
            if sample is not None and (record := encoder.encode(sample)) is not None:
                writer.write(record)
    return {"file": path.name, "count": encoder.count, "sha256": writer.sha256, "listed": listed,
            "skipped": dict(sorted(encoder.skipped.items())), "labels_normalised": encoder.normalised}


def read_manifest(data_dir: Path) -> dict[str, Any]:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{data_dir}: no {MANIFEST}; is this a converted dataset folder?")
    manifest = json.loads(path.read_text())
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {manifest.get('schema_version')!r}, "
                         f"this code reads {SCHEMA_VERSION}")
    return manifest


def manifest_sha256(data_dir: Path) -> str:
    """The data's identity for lineage: the digest of its manifest (which holds every shard's digest)."""
    return sha256_of(Path(data_dir) / MANIFEST)


def data_sha256(manifest: dict[str, Any]) -> str:
    """What the samples are, apart from how they were laid out and fetched: the digest of the manifest without
    its shard files and size and without the inputs' URLs. Two conversions of the same inputs with the same
    model input, charset and label policy agree, whatever the shard size or the mirror; the gate compares
    accuracies only between them."""
    content = {key: value for key, value in manifest.items() if key not in ("shards", "shard_size")}
    inputs = dict(content.get("inputs", {}))
    if isinstance(inputs.get("files"), dict):
        inputs["files"] = {name: {k: v for k, v in entry.items() if k != "url"}
                           for name, entry in inputs["files"].items()}
    content["inputs"] = inputs
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
