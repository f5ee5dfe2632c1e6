from kfp import dsl
from kfp.dsl import Dataset, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def download(raw: Output[Dataset], data_root: str, datasets: list, mirror: str, seed: int, train_size: int,
             val_size: int, test_size: int):
    """Fetches catalog datasets (through ``mirror`` if set) or renders the ``synthetic`` ones, verified and
    safely extracted, into their folder under ``data_root``; ``raw`` holds the reference, not the data."""
    from crnn import pipeline_data
    from crnn.data.synthetic import SyntheticSpec

    names = pipeline_data.download(data_root, raw.path, datasets, SyntheticSpec(seed, train_size, val_size, test_size),
                                   mirror=mirror or None)
    raw.metadata["datasets"] = names
