from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def convert(raw: Input[Dataset], data: Output[Dataset], shard_size: int, tracking_uri: str, experiment: str,
            job_id: str):
    """Every split of every dataset -> TFRecord shards and manifest.json under data/<dataset>/<split>/."""
    from crnn import steps
    from crnn.tracking import Tracking

    tracking = Tracking(tracking_uri or None, pipeline_run_id=job_id, experiment=experiment)
    manifests = steps.convert(raw.path, data.path, shard_size, tracking)
    data.metadata["num_samples"] = {key: m["num_samples"] for key, m in manifests.items()}
