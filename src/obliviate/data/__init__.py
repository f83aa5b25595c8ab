"""Data: offline loaders, deterministic splits, forget requests, device-resident batching."""
from .dataset import ArrayData, DataBundle, concat, to_float
from .pipeline import Batch, BatchStream, augment_batch, autocast, predict
from .request import ForgetRequest, ForgetSplit, Forgotten
from .sources import SOURCES, cache_dir, cached_source
from .splits import DataSpec, dataset_names, default_augment, load_data

__all__ = ["ArrayData", "DataBundle", "concat", "to_float", "Batch", "BatchStream", "augment_batch", "autocast",
           "predict", "ForgetRequest", "ForgetSplit", "Forgotten", "SOURCES", "cache_dir", "cached_source", "DataSpec",
           "dataset_names", "default_augment", "load_data"]
