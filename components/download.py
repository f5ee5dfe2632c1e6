from kfp import dsl
from kfp.dsl import Dataset, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def download(raw: Output[Dataset], datasets: list, mirror: str, seed: int, train_size: int, val_size: int,
             test_size: int):
    """Fetches catalog datasets (through ``mirror`` if set) or renders the ``synthetic`` ones; verified and
    safely extracted. Cached by KFP: its values are recorded beside the output (``log_data_steps`` logs them)."""
    from pathlib import Path

    from crnn import steps
    from crnn.data.synthetic import SyntheticSpec
    from crnn.tracking import STEP_RECORD, Tracking

    records = steps.download(raw.path, datasets, SyntheticSpec(seed, train_size, val_size, test_size),
                             mirror=mirror or None, tracking=Tracking(record_to=Path(raw.path) / STEP_RECORD))
    raw.metadata["datasets"] = [r["name"] for r in records]
