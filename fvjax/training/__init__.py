"""Training: roles -> sharded train states, the optimizer, checkpoints, metrics, validation videos, and
the one impure loop (`loop.py`)."""
