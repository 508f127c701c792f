"""Face datasets: readers for CelebA, LFW and image tables, splits, scarce labels, validation.

``open_dataset(path)`` picks the reader from the layout at ``path``; every reader returns a
:class:`FaceDataset` whose labels carry a mask (a missing label is never a negative).
"""

from mtfap.data.celeba import read_celeba
from mtfap.data.dataset import SPLITS, FaceDataset
from mtfap.data.generic import read_table_dataset
from mtfap.data.images import ImageSource
from mtfap.data.layout import detect_layout, open_dataset
from mtfap.data.lfw import read_lfw, read_lfw_pairs
from mtfap.data.splits import (
    identity_disjoint_split,
    least_frequent_attributes,
    scarce_labels,
)
from mtfap.data.validate import CheckReport, check_dataset, check_images
from mtfap.errors import DataError, ProblemLog

__all__ = [
    "FaceDataset", "ImageSource", "DataError", "ProblemLog", "SPLITS",
    "read_celeba", "read_lfw", "read_lfw_pairs", "read_table_dataset",
    "open_dataset", "detect_layout", "identity_disjoint_split", "scarce_labels",
    "least_frequent_attributes", "check_images", "check_dataset", "CheckReport",
]
