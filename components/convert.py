"""Conversion components: the small splits in one task; the training sets fanned out over slices of shards."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def convert(raw: Input[Dataset], data: Output[Dataset], val_set: str, benchmarks: list, shard_size: int):
    """The validation split and the benchmarks -> TFRecord shards and manifest.json under data/<key>/ (cached:
    its values are recorded beside them)."""
    from pathlib import Path

    from crnn import steps
    from crnn.tracking import STEP_RECORD, Tracking

    needed = sorted({*benchmarks, *([val_set] if val_set else [])})
    manifests = steps.convert(raw.path, data.path, needed, shard_size,
                              tracking=Tracking(record_to=Path(data.path) / STEP_RECORD))
    data.metadata["num_samples"] = {key: m["num_samples"] for key, m in manifests.items()}


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def plan_slices(raw: Input[Dataset], train_sets: list, shard_size: int, slices: int) -> list:
    """Cuts the training sets' shards into ``slices`` contiguous ranges, one per conversion task."""
    from crnn.data.convert import plan_slices as plan

    return plan(raw.path, train_sets, shard_size, slices)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def convert_slice(raw: Input[Dataset], part: Output[Dataset], ranges: dict, shard_size: int):
    """Writes one slice's shards (and their figures) for the merge step."""
    from crnn.data.convert import convert_slice as convert_one
    from crnn.data.convert import default_workers

    convert_one(raw.path, part.path, ranges["ranges"], shard_size, workers=default_workers())


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def merge_slices(raw: Input[Dataset], parts: Input[list[Dataset]], train_data: Output[Dataset], train_sets: list,
                 shard_size: int):
    """The slices' shards gathered under train_data/<key>/ with each split's manifest (cached: its values are
    recorded beside them)."""
    from pathlib import Path

    from crnn import steps
    from crnn.tracking import STEP_RECORD, Tracking

    manifests = steps.merge_converted(raw.path, [p.path for p in parts], train_data.path, train_sets, shard_size,
                                      tracking=Tracking(record_to=Path(train_data.path) / STEP_RECORD))
    train_data.metadata["num_samples"] = {key: m["num_samples"] for key, m in manifests.items()}
