"""Parameter dtypes accepted on the command line, in recipes and in the Python API."""
from __future__ import annotations

import ml_dtypes
import numpy as np

from fvjax.errors import fail

_NAMES = {
    "float32": np.dtype(np.float32), "fp32": np.dtype(np.float32),
    "bfloat16": np.dtype(ml_dtypes.bfloat16), "bf16": np.dtype(ml_dtypes.bfloat16),
    "float16": np.dtype(np.float16), "fp16": np.dtype(np.float16),
}
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16))


def as_dtype(dtype: object, where: str = "dtype") -> np.dtype | None:
    """None stays None (keep the stored dtype); names, numpy and jax dtypes become a numpy dtype."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        if dtype.lower() in _NAMES:
            return _NAMES[dtype.lower()]
        fail(where, None, f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        fail(where, None, f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    if dt not in FLOAT_DTYPES:
        fail(where, None, f"dtype {dt} is not a parameter dtype; use float32, bfloat16 or float16")
    return dt


def name_of(dtype: np.dtype) -> str:
    return np.dtype(dtype).name  # "float32", "bfloat16", "float16"
