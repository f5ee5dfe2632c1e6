from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def convert(raw: Input[Dataset], data: Output[Dataset], train_sets: list, val_set: str, benchmarks: list,
            shard_size: int, tracking_uri: str, experiment: str, job_id: str):
    """The splits the run needs -> TFRecord shards and manifest.json under data/<dataset>/<split>/."""
    from crnn import steps
    from crnn.tracking import Tracking

    needed = sorted({*train_sets, *benchmarks, *([val_set] if val_set else [])})
    manifests = steps.convert(raw.path, data.path, needed, shard_size,
                              tracking=Tracking.for_pipeline(tracking_uri, experiment, job_id))
    data.metadata["num_samples"] = {key: m["num_samples"] for key, m in manifests.items()}
