from kfp import dsl
from kfp.dsl import Dataset, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def download(raw: Output[Dataset], datasets: list, mirror: str, seed: int, train_size: int, val_size: int,
             test_size: int, tracking_uri: str, experiment: str, job_id: str):
    """Fetches catalog datasets (through ``mirror`` if set) or renders the ``synthetic`` ones; verified and
    safely extracted."""
    from crnn import steps
    from crnn.data.synthetic import SyntheticSpec
    from crnn.tracking import Tracking

    records = steps.download(raw.path, datasets, SyntheticSpec(seed, train_size, val_size, test_size),
                             mirror=mirror or None, tracking=Tracking.for_pipeline(tracking_uri, experiment, job_id))
    raw.metadata["datasets"] = [r["name"] for r in records]
