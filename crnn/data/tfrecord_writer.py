"""``tf.train.Example`` records in TFRecord files, written without importing TensorFlow.

Conversion workers start in a fraction of a second this way instead of paying TensorFlow's import in every
process. The bytes are the standard formats (tests parse them back with TensorFlow):

- TFRecord framing: uint64 length, masked crc32c of the length, the data, masked crc32c of the data;
- ``Example`` protobuf wire format: ``features`` (field 1) -> map entries (field 1) of key (1) and
  ``Feature`` (2), a ``Feature`` holding ``bytes_list`` (1) or ``int64_list`` (3, packed).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import google_crc32c


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


_ONE_BYTE = [bytes((i,)) for i in range(128)]


def _varint(value: int) -> bytes:
    if value < 128:
        return _ONE_BYTE[value]
    out = bytearray()
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte(s), the payload's length, the payload."""
    return tag + _varint(len(payload)) + payload


_FIELD_1, _FIELD_2, _FIELD_3 = b"\x0a", b"\x12", b"\x1a"  # field numbers 1-3, wire type 2


@lru_cache(maxsize=4096)
def _entry_prefix(key: str, kind: bytes, length: int) -> bytes:
    """Everything of a map entry ``key -> Feature`` that comes before a payload of ``length`` bytes (a bytes
    value of ``bytes_list``, or the packed varints of ``int64_list``). Cached: a dataset's records have few
    distinct shapes, so encoding costs a few dictionary look-ups per feature."""
    key_field = _delimited(_FIELD_1, key.encode())
    list_length = 1 + len(_varint(length)) + length  # BytesList / Int64List: field 1, length, payload
    feature_length = 1 + len(_varint(list_length)) + list_length  # Feature: the list in field `kind`
    entry_length = len(key_field) + 1 + len(_varint(feature_length)) + feature_length
    return (_FIELD_1 + _varint(entry_length) + key_field + _FIELD_2 + _varint(feature_length)
            + kind + _varint(list_length) + _FIELD_1 + _varint(length))


def _packed(values: Sequence[int]) -> bytes:
    if not isinstance(values, (list, tuple, bytes)):  # bytes() would read an array's buffer, or make N zero bytes
        values = [int(v) for v in values]
    try:
        packed = bytes(values)
        if packed.isascii():
            return packed  # every value below 128: one byte per varint, as class ids always are
    except ValueError:  # a value outside 0-255
        pass
    if any(v < 0 for v in values):
        raise ValueError("only non-negative int64 values are encoded")
    return b"".join(_varint(v) for v in values)


def bytes_feature(key: str, value: bytes) -> bytes:
    """The map entry ``key -> Feature(bytes_list=[value])`` of an ``Example``."""
    return bytes_feature_prefix(key, len(value)) + value


def int64_feature(key: str, values: Sequence[int]) -> bytes:
    """The map entry ``key -> Feature(int64_list=values)`` of an ``Example`` (non-negative values)."""
    packed = _packed(values)
    return _entry_prefix(key, _FIELD_3, len(packed)) + packed


def bytes_feature_prefix(key: str, length: int) -> bytes:
    """What ``bytes_feature(key, value)`` puts before a ``value`` of ``length`` bytes: for values of one size,
    as images resized to the model input are, the prefix is made once and the value appended as it comes."""
    return _entry_prefix(key, _FIELD_1, length)


def example_of(entries: Sequence[bytes]) -> bytes:
    """A serialized ``tf.train.Example`` from its map entries (``bytes_feature``, ``int64_feature``), in order.
    (One join: the image's kilobytes are copied once.)"""
    return b"".join((_FIELD_1, _varint(sum(map(len, entries))), *entries))


def encode_example(features: Mapping[str, bytes | Sequence[int]]) -> bytes:
    """A serialized ``tf.train.Example``; bytes values become ``bytes_list``, integer lists ``int64_list``."""
    return example_of([bytes_feature(key, value) if isinstance(value, bytes) else int64_feature(key, value)
                       for key, value in features.items()])


class RecordWriter:
    """Writes records to a TFRecord file, and keeps the file's sha256 as it goes.

    Records are framed in memory and written, and hashed, 64 KiB at a time: one write and one hash update per
    record would cost more than building the record, and larger writes were slower (page cache)."""

    _FLUSH_BYTES = 64 << 10

    def __init__(self, path: Path):
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 (closed by close() / the context manager)
        self._digest = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._headers: dict[int, bytes] = {}  # record length -> its framing header; records have few lengths

    def write(self, record: bytes) -> None:
        size = len(record)
        header = self._headers.get(size)
        if header is None:
            length = struct.pack("<Q", size)
            header = self._headers[size] = length + _masked_crc(length)
        self._pending += (header, record, _masked_crc(record))
        self._pending_bytes += size + 16
        if self._pending_bytes >= self._FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        self._digest.update(data)
        view = memoryview(data)
        while view:  # an unbuffered write may write less than asked
            view = view[self._file.write(view):]

    @property
    def sha256(self) -> str:
        """The digest of everything written so far (flushed first)."""
        self._flush()
        return self._digest.hexdigest()

    def close(self) -> None:
        try:
            self._flush()
        finally:
            self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
