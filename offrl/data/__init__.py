"""The data layer: the Dataset type, name resolution and the readers (generated, Minari, D4RL)."""
from offrl.data.dataset import Dataset, DatasetSpec, from_arrays
from offrl.data.resolve import resolve

__all__ = ["Dataset", "DatasetSpec", "from_arrays", "resolve"]
