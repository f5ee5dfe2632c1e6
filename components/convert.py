"""Conversion components: the small splits in one task; the training sets fanned out over slices of shards.
The shards stay under ``data_root``; the artifacts hold references."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def convert(raw: Input[Dataset], data: Output[Dataset], data_root: str, val_set: str, benchmarks: list,
            shard_size: int):
    """The validation split and the benchmarks -> TFRecord shards and a manifest per split."""
    from crnn import pipeline_data

    needed = sorted({*benchmarks, *([val_set] if val_set else [])})
    data.metadata["num_samples"] = pipeline_data.convert(raw.path, data_root, data.path, needed, shard_size)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def plan_slices(raw: Input[Dataset], data_root: str, train_sets: list, shard_size: int, slices: int) -> list:
    """Cuts the training sets' shards into ``slices`` contiguous ranges, one per conversion task."""
    from crnn import pipeline_data

    return pipeline_data.plan_slices(raw.path, data_root, train_sets, shard_size, slices)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def convert_slice(raw: Input[Dataset], part: dict, shard_size: int):
    """Writes one slice's shards into the folder its plan names."""
    from crnn import pipeline_data

    pipeline_data.convert_slice(raw.path, part, shard_size)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def merge_slices(raw: Input[Dataset], plan: list, train_data: Output[Dataset], data_root: str, train_sets: list,
                 shard_size: int):
    """The slices' shards gathered into the training sets' folders, each with its manifest."""
    from crnn import pipeline_data

    train_data.metadata["num_samples"] = pipeline_data.merge_slices(raw.path, plan, data_root, train_data.path,
                                                                    train_sets, shard_size)
