"""Datasets for training: built-in demo generators and users' CSV/Parquet tables, with lineage digests."""

from training.datasets.dataset import Dataset, DatasetError, DatasetSpec
from training.datasets.loading import load_dataset

__all__ = ["Dataset", "DatasetError", "DatasetSpec", "load_dataset"]
