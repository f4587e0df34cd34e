"""MNIST-style datasets: the catalogue, a strict IDX reader, checksums, verified downloads, on-device tensors.

Imports flow catalogue <- idx <- integrity <- download, tensors; this module only gathers the public names.
"""

from .catalogue import DATASETS, DataFile, DatasetInfo, get_dataset_info, resolve_root
from .download import download, download_file
from .idx import MAX_PAYLOAD_BYTES, read_idx, read_idx_bytes, write_idx
from .integrity import Checked, check_file, checksum_status, load_raw, load_splits, locate, verify
from .tensors import SCALINGS, DataIter, Dataset, Split, as_split, batch_size_of, load_dataset, scale_images, to_input

__all__ = [
    "DATASETS", "MAX_PAYLOAD_BYTES", "SCALINGS", "Checked", "DataFile", "DataIter", "Dataset", "DatasetInfo", "Split",
    "as_split", "batch_size_of", "check_file", "checksum_status", "download", "download_file", "get_dataset_info",
    "load_dataset", "load_raw", "load_splits", "locate", "read_idx", "read_idx_bytes", "resolve_root",
    "scale_images", "to_input", "verify", "write_idx",
]  # fmt: skip
