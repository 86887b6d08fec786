"""The platform the code being traced will run on, for the choices that depend on it (attention
kernel, CPU-laid-out backward passes, XLA options).

That is the platform of the mesh's devices when sharding rules are active (`fvjax.sharding.use_rules`),
not the host's: a CPU host compiling ahead of time for TPU devices traces TPU code (splash attention,
plain matmuls). Without an active mesh it is JAX's default backend."""
from __future__ import annotations

import jax

from fvjax.sharding.logical import active_rules


def mesh_platform(mesh) -> str | None:
    """The platform of a concrete mesh's devices ("cpu", "gpu", "tpu"), None for an abstract mesh."""
    if not isinstance(mesh, jax.sharding.Mesh) or not mesh.devices.size:
        return None
    return mesh.devices.flat[0].platform


def target_platform() -> str:
    active = active_rules()
    platform = mesh_platform(active[0]) if active is not None else None
    return platform or jax.default_backend()
