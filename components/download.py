from kfp import dsl
from kfp.dsl import Dataset, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def download(raw: Output[Dataset], seed: int, train_size: int, val_size: int, test_size: int,
             tracking_uri: str, experiment: str, job_id: str):
    """Renders the synthetic datasets into a mirror, fetches them (sha256-verified) and extracts them."""
    from crnn import steps
    from crnn.data.synthetic import SyntheticSpec
    from crnn.tracking import Tracking

    tracking = Tracking(tracking_uri or None, pipeline_run_id=job_id, experiment=experiment)
    datasets = steps.download(raw.path, SyntheticSpec(seed, train_size, val_size, test_size), tracking)
    raw.metadata["datasets"] = [d["name"] for d in datasets]
