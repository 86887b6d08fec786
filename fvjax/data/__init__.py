"""Training data: preprocessed latents + text embeddings from fvjax's format or FastVideo's parquet.

See pipeline.py (order, processes, CFG dropout, resume), fvjax_format.py and parquet_format.py (layouts).
"""
from fvjax.data.batches import DataConfig, DataIterator, TrainData
from fvjax.data.sample import RawSample
from fvjax.data.sources import detect_format, open_source

__all__ = ["DataConfig", "DataIterator", "TrainData", "RawSample", "detect_format", "open_source"]
