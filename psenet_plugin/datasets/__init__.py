from .embedded import EMBEDDED_DATASETS, prepare_dataset
from .checks import check_datasets_prepared
from .split import HeldOutSplit

__all__ = ['EMBEDDED_DATASETS', 'prepare_dataset', 'check_datasets_prepared',
           'HeldOutSplit']
