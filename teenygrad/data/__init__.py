"""Data loading (torch.utils.data names): datasets, a prefetching DataLoader, and datasets read from installed packages."""
from teenygrad.data.dataset import ConcatDataset, Dataset, Subset, TensorDataset, random_split
from teenygrad.data.datasets import MNIST, DatasetNotFoundError, Digits, FashionMNIST
from teenygrad.data.loader import DataLoader, default_collate

__all__ = ["ConcatDataset", "DataLoader", "Dataset", "DatasetNotFoundError", "Digits", "FashionMNIST", "MNIST", "Subset",
           "TensorDataset", "default_collate", "random_split"]
