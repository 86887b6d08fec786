"""Multi-process start-up: call `jax.distributed.initialize` before anything touches devices, when needed."""
from __future__ import annotations

import os

import jax


def is_multiprocess_environment() -> bool:
    """True on a multi-host TPU slice, a multi-task SLURM job, or with explicit JAX_* coordinator variables."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    # A TPU VM of a multi-host slice lists every worker's hostname, comma-separated.
    if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
        return True
    return int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1


def maybe_initialize() -> None:
    """Initialise jax.distributed once, from the environment, when this is one process of many."""
    if not is_multiprocess_environment() or jax.distributed.is_initialized():
        return
    from fvjax.cpu_tuning import jax_will_use_cpu

    if jax_will_use_cpu():
        # Processes on CPUs (tests, CPU clusters) exchange collectives through gloo; JAX's default CPU
        # client has no cross-process collectives.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if address:
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    else:
        jax.distributed.initialize()  # Cloud TPU and SLURM are detected by JAX itself.
