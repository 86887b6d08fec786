"""Inference-time schedulers (wan_architecture.md §4, fastvideo_distillation.md §8).

- `flow_match_euler(N, shift)`: Diffusers' FlowMatchEulerDiscreteScheduler tables + Euler step;
- `unipc_multistep(N, shift)`: Diffusers' UniPCMultistepScheduler in Wan's config (the WanPipeline default);
- `sample(model_fn, x_T, scheduler, ...)`: WanPipeline's ODE loop with classifier-free guidance;
- `few_step_sample`: DMD's few-step SDE sampler (x0 prediction, re-noise to the next listed timestep,
  conditional only), whose chain DMD2's rollouts share (few_step.py);
- flow_matching.py: shifted sigmas, timestep densities, noising and the flow-matching loss.

A scheduler is a pytree of precomputed float32 tables with `timesteps` [N], `sigmas` [N + 1],
`init_state(sample)` and a pure `step(state, index, velocity, sample) -> (next_sample, state)`.
"""
from fvjax.schedulers.few_step import NoiseLevels, few_step_sample
from fvjax.schedulers.flow_euler import FlowMatchEuler, flow_match_euler
from fvjax.schedulers.sampling import guided_velocity, sample
from fvjax.schedulers.unipc import UniPCMultistep, UniPCState, step_orders, unipc_multistep

__all__ = ["FlowMatchEuler", "flow_match_euler", "UniPCMultistep", "UniPCState", "step_orders", "unipc_multistep",
           "sample", "guided_velocity", "few_step_sample", "NoiseLevels"]
