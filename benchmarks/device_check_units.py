"""The measurements of benchmarks/device_check.py, one function per unit; each runs in its own process (the
driver starts it), prints its figures with `figure(...)` and nothing else on stdout.

Weights are random at full size (nothing is downloaded): fvjax roles are the built-in preset's architecture
initialised under jit, Diffusers models are built from the same config with torch's own random init. Only
speed and memory are compared, so the two sides need not hold the same numbers.
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FULL_DIT = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
FULL_TEACHER = "Wan-AI/Wan2.1-T2V-14B-Diffusers"
GIB = 1024 ** 3

# Dense bf16 peak per device (scale_out.md §7; NVIDIA's larger figures count 2:4 sparsity). Matched against
# jax's device_kind, e.g. "NVIDIA H200".
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0,
                    "A800": 312.0, "L40S": 362.0, "L4": 121.0, "TPU v5p": 459.0, "TPU v5 lite": 197.0,
                    "TPU v6 lite": 918.0, "TPU v4": 275.0}


@dataclasses.dataclass(frozen=True)
class Sizes:
    dit: str                        # the student's (and by default the teacher's) preset
    teacher_14b: str                # the big teacher's preset
    video: tuple[int, int, int]     # frames, height, width: training steps and generation
    memory_video: tuple[int, int, int]   # the no-remat DiT memory check (8,190 tokens at full size)
    vae: str
    text_len: int
    dmd_steps: tuple[float, ...]
    iters: int


FULL = Sizes(FULL_DIT, FULL_TEACHER, (81, 480, 832), (81, 240, 416), FULL_DIT, 512, (1000.0, 757.0, 522.0), 3)
SMOKE = Sizes("tiny", "tiny-teacher", (5, 32, 32), (5, 32, 32), "tiny", 16, (1000.0, 757.0, 522.0), 1)


def figure(unit: str, name: str, value, unit_of: str = "", **context) -> None:
    """One figure line for the driver: FIGURE {json}."""
    if isinstance(value, float):
        value = round(value, 4)
    print("FIGURE " + json.dumps(dict(unit=unit, figure=name, value=value, of=unit_of, **context)), flush=True)


def device_kind() -> str:
    import jax

    return jax.devices()[0].device_kind


def peak_tflops() -> float | None:
    kind = device_kind()
    matches = [name for name in PEAK_BF16_TFLOPS if name.lower() in kind.lower()]
    return PEAK_BF16_TFLOPS[max(matches, key=len)] if matches else None


def jax_peak_gib() -> tuple[float, str]:
    """The device's peak bytes in use, or the process's peak RSS where the device keeps no statistics (CPU)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / GIB, "device peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, "host peak RSS"


def torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_peak_gib() -> tuple[float, str]:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / GIB, "device peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, "host peak RSS"


def sync_torch() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, iters: int) -> tuple[float, float]:
    """(first call seconds, median of `iters` later calls)."""
    began = time.perf_counter()
    fn()
    first = time.perf_counter() - began
    times = []
    for _ in range(iters):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return first, statistics.median(times)


def latent_of(video: tuple[int, int, int]) -> tuple[int, int, int, int]:
    frames, height, width = video
    return (16, (frames - 1) // 4 + 1, height // 8, width // 8)


def tokens_of(video) -> int:
    _, f, h, w = latent_of(video)
    return f * (h // 2) * (w // 2)


def gib_of(tree) -> float:
    import jax

    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree)) / GIB


# ---------------------------------------------------------------------------------------------------
# Training steps through the trainer's own runtime (roles, optimizer, method update)

def _alias_preset(name: str) -> str:
    """Recipes take slash-free preset names as random-init roles; the full-size configs are keyed by hub ids,
    so give them a slash-free alias in this process."""
    from fvjax.families.wan.config import PRESETS

    alias = name.replace("/", "--")
    PRESETS.setdefault(alias, PRESETS[name])
    return alias


def _recipe(sizes: Sizes, method: str, remat: str, teacher: str | None = None):
    import yaml

    from fvjax.recipe import parse_recipe

    frames, height, width = sizes.video
    student = _alias_preset(sizes.dit)
    models = {"student": {"family": "wan", "path": student, "trainable": True}}
    method_config = {"pred_type": "velocity"}
    if method == "dmd2":
        models["teacher"] = {"family": "wan", "path": _alias_preset(teacher or sizes.dit), "trainable": False}
        models["critic"] = {"family": "wan", "path": student, "trainable": True}
        # Every step a generator step (the heavier one): student rollout + critic + teacher cond/uncond.
        method_config = {"rollout_mode": "simulate", "dmd_denoising_steps": list(sizes.dmd_steps),
                         "generator_update_interval": 1, "real_score_guidance_scale": 3.5}
    training = dict(num_gpus=1, data_path="unused", output_dir=tempfile.mkdtemp(prefix="device_check_"),
                    train_batch_size=1, num_latent_t=latent_of(sizes.video)[1], num_height=height, num_width=width,
                    num_frames=frames, seed=1000, max_train_steps=100, learning_rate=1e-5, max_grad_norm=1.0,
                    mixed_precision="bf16", enable_gradient_checkpointing_type="full" if remat != "none" else None)
    raw = {"recipe": {"family": "wan", "method": method}, "models": models, "training": training,
           "pipeline_config": {"flow_shift": 8.0}, "method_config": method_config}
    return parse_recipe(yaml.safe_dump(raw, sort_keys=False), "device_check", device_count=1)


def _random_batch(abstract: dict) -> dict:
    import jax
    import jax.numpy as jnp

    out = {}
    for i, (name, spec) in enumerate(sorted(abstract.items())):
        if jnp.issubdtype(spec.dtype, jnp.integer):
            value = jnp.ones(spec.shape, spec.dtype)
        else:
            value = jax.random.normal(jax.random.key(i), spec.shape, spec.dtype)
        out[name] = jax.device_put(value, spec.sharding)
    return out


def training_step(unit: str, sizes: Sizes, method: str, remat: str, teacher: str | None = None) -> None:
    """Compile the method's update for one device, run it, print step time, MFU and peak memory."""
    import jax
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec

    from fvjax.families.registry import get_family
    from fvjax.sharding.logical import use_rules
    from fvjax.sharding.mesh import make_mesh
    from fvjax.sharding.rules import rules_for
    from fvjax.training.aot import abstract_batch, step_flops
    from fvjax.training.loop import batch_sharding, make_update
    from fvjax.training.roles import add_frozen_extras, build_runtime, compute_dtype

    recipe = _recipe(sizes, method, remat, teacher)
    family = get_family("wan")
    mesh = make_mesh(recipe.mesh, jax.devices()[:1], where="device_check")
    _, rules = rules_for(recipe.mesh)
    with use_rules(mesh, rules):
        runtime = build_runtime(recipe, mesh, rules)
        add_frozen_extras(recipe, runtime)
        # The recipe names only none/full/ops; other fvjax policies replace the trainable roles' graphdefs.
        for name, model in list(runtime.models.items()):
            if model.trainable:
                abstract = family.abstract_model(model.config, jax.tree.leaves(runtime.states[name].params)[0].dtype,
                                                 dtype=compute_dtype(recipe.training.mixed_precision),
                                                 remat_policy=remat)
                runtime.models[name] = dataclasses.replace(model, graphdef=nnx.graphdef(abstract))
        batch = _random_batch(abstract_batch(recipe, runtime, mesh))
        update = jax.jit(make_update(recipe, runtime),
                         in_shardings=(runtime.state_shardings, runtime.frozen_shardings, batch_sharding(mesh), None),
                         out_shardings=(runtime.state_shardings, None), donate_argnums=(0,))
        key = jax.device_put(jax.random.key(0), NamedSharding(mesh, PartitionSpec()))
        began = time.perf_counter()
        compiled = update.lower(runtime.states, runtime.frozen, batch, key).compile()
        compile_s = time.perf_counter() - began
    states = runtime.states

    def step():
        nonlocal states
        states, metrics = compiled(states, runtime.frozen, batch, key)
        jax.block_until_ready(metrics)

    first, median = timed(step, sizes.iters)
    flops = step_flops(recipe, runtime)
    peak = peak_tflops()
    context = dict(tokens=tokens_of(sizes.video), remat=remat, device=device_kind(), compile_s=round(compile_s, 1))
    figure(unit, "step time", median, "s", first_call_s=round(first, 1), **context)
    figure(unit, "model TFLOP/s", flops / median / 1e12, "TFLOP/s", step_tflop=round(flops / 1e12, 1))
    figure(unit, "MFU", flops / median / (peak * 1e12) if peak else None, "of peak",
           peak_tflops=peak, note="analytic FLOPs (Family.forward_flops x the method's count) / time / peak")
    memory = compiled.memory_analysis()
    value, what = jax_peak_gib()
    figure(unit, "peak memory", value, "GiB", kind=what,
           temp_gib=round(memory.temp_size_in_bytes / GIB, 2) if memory is not None else None,
           state_gib=round(gib_of((runtime.states, runtime.frozen)), 2))


# ---------------------------------------------------------------------------------------------------
# Few-step generation: DMD sampler (no CFG) + VAE decode

def _fvjax_transformer(preset: str, dtype):
    import jax
    from flax import nnx

    from fvjax.families.registry import get_family
    from fvjax.families.wan.config import PRESETS
    from fvjax.models.params import params_of
    from fvjax.weights.loading import LoadedTransformer

    family, config = get_family("wan"), PRESETS[preset]
    params = jax.jit(lambda: params_of(family.build_model(config, rngs=nnx.Rngs(0), param_dtype=dtype, dtype=dtype)))()
    return LoadedTransformer(family, config, family.model_from_params(config, params, param_dtype=dtype, dtype=dtype))


def _fvjax_vae(preset: str, dtype):
    import jax
    import jax.numpy as jnp

    from fvjax.families.wan.tiny_pipeline import random_params
    from fvjax.families.wan.vae.config import VAE_PRESETS
    from fvjax.families.wan.vae.model import abstract_vae_params, vae_from_params

    config = VAE_PRESETS[preset]
    params = random_params(abstract_vae_params(config), seed=1)  # numpy: no jitted NNX init to compile
    return vae_from_params(config, jax.tree.map(lambda a: jnp.asarray(a, dtype), params), param_dtype=dtype,
                           dtype=dtype)


def generate_fvjax(unit: str, sizes: Sizes) -> None:
    import jax
    import jax.numpy as jnp

    from fvjax.families.wan.vae.latents import denormalize_latents
    from fvjax.inference.sampling import SamplerSpec, denoise, initial_noise
    from fvjax.inference.text_to_video import VideoDecoder

    model = _fvjax_transformer(sizes.dit, jnp.bfloat16)
    decoder = VideoDecoder(_fvjax_vae(sizes.vae, jnp.float32), lambda vae, z: vae.decode(denormalize_latents(z, vae.config)))
    spec = SamplerSpec(kind="dmd", denoising_steps=sizes.dmd_steps, shift=8.0)
    noise = initial_noise(0, 1, latent_of(sizes.video))
    text = jax.random.normal(jax.random.key(1), (1, sizes.text_len, model.config.text_dim), jnp.bfloat16)

    def latents():
        return jax.block_until_ready(denoise(model.apply, model.state, noise, text, spec))

    def video():
        return decoder(latents())

    first_denoise, denoise_s = timed(latents, sizes.iters)
    first_video, video_s = timed(video, sizes.iters)
    frames = video().shape
    context = dict(steps=len(sizes.dmd_steps), video=list(sizes.video), device=device_kind())
    figure(unit, "end-to-end", video_s, "s", note="text embeddings -> uint8 frames on the host",
           first_call_s=round(first_video + first_denoise, 1), frames=list(frames), **context)
    figure(unit, "denoise", denoise_s, "s", **context)
    value, what = jax_peak_gib()
    figure(unit, "peak memory", value, "GiB", kind=what)


def _diffusers_configs(sizes: Sizes) -> tuple[dict, dict]:
    from fvjax.families.wan.config import PRESETS
    from fvjax.families.wan.vae.config import VAE_PRESETS

    dit = {k: v for k, v in PRESETS[sizes.dit].to_diffusers_config().items() if not k.startswith("_")}
    vae = {k: v for k, v in VAE_PRESETS[sizes.vae].to_diffusers_config().items() if not k.startswith("_")}
    return dit, vae


def generate_diffusers(unit: str, sizes: Sizes) -> None:
    import torch
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    device = torch_device()
    dit_cfg, vae_cfg = _diffusers_configs(sizes)
    torch.manual_seed(0)
    with device:
        transformer = WanTransformer3DModel(**dit_cfg).to(torch.bfloat16).eval()
        vae = AutoencoderKLWan(**vae_cfg).eval()
    # Prompt embeddings given: no tokenizer or text encoder (fvjax's figure excludes UMT5 too). Euler with the
    # same number of DiT calls as the DMD chain; the scheduler's own arithmetic is negligible either way.
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=8.0))
    pipe.set_progress_bar_config(disable=True)
    embeds = torch.randn(1, sizes.text_len, dit_cfg["text_dim"], dtype=torch.bfloat16, device=device)
    frames, height, width = sizes.video

    def run(output_type):
        def call():
            with torch.no_grad():
                out = pipe(prompt_embeds=embeds, guidance_scale=1.0, num_inference_steps=len(sizes.dmd_steps),
                           num_frames=frames, height=height, width=width, output_type=output_type).frames
            sync_torch()
            return out
        return call

    _, denoise_s = timed(run("latent"), sizes.iters)
    _, video_s = timed(run("np"), sizes.iters)
    context = dict(steps=len(sizes.dmd_steps), video=list(sizes.video), device=str(device))
    figure(unit, "end-to-end", video_s, "s", note="prompt embeddings -> float frames on the host", **context)
    figure(unit, "denoise", denoise_s, "s", **context)
    value, what = torch_peak_gib()
    figure(unit, "peak memory", value, "GiB", kind=what)


# ---------------------------------------------------------------------------------------------------
# VAE decode memory

def vae_decode_fvjax(unit: str, sizes: Sizes, dtype_name: str = "float32", xla_flags: str = "") -> None:
    """The eager chunked decode (what bench_vae_decode measured at 41 GiB): the chunk programs' compiled
    memory first (compiling alone: autotuning workspaces show in the peak here), then the decode.
    `xla_flags` are added to XLA_FLAGS before JAX starts (e.g. without GPU autotuning)."""
    if xla_flags:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, str(REPO / "benchmarks"))
    from vae_decode_memory import chunk_memory

    dtype = jnp.dtype(dtype_name)
    vae = _fvjax_vae(sizes.vae, dtype)
    z = np.random.default_rng(0).standard_normal((1,) + latent_of(sizes.video), dtype=np.float32)
    for name, analysis in chunk_memory(vae, z.shape).items():
        figure(unit, f"{name} program", analysis["temp_gib"], "GiB temporaries", **analysis)
    after_compile, what = jax_peak_gib()
    first, median = timed(lambda: vae.decode(z).block_until_ready(), sizes.iters)
    value, what = jax_peak_gib()
    figure(unit, "decode", median, "s", first_call_s=round(first, 1), dtype=dtype_name, device=device_kind())
    figure(unit, "peak memory", value, "GiB", kind=what, peak_after_compiling_only_gib=round(after_compile, 2),
           weights_gib=round(gib_of(vae), 3), dtype=dtype_name, xla_flags=xla_flags)


def vae_decode_diffusers(unit: str, sizes: Sizes) -> None:
    import torch
    from diffusers import AutoencoderKLWan

    device = torch_device()
    _, vae_cfg = _diffusers_configs(sizes)
    torch.manual_seed(0)
    with device:
        vae = AutoencoderKLWan(**vae_cfg).eval()
    z = torch.randn((1,) + latent_of(sizes.video), device=device)

    def decode():
        with torch.no_grad():
            vae.decode(z)
        sync_torch()

    first, median = timed(decode, sizes.iters)
    value, what = torch_peak_gib()
    figure(unit, "decode", median, "s", first_call_s=round(first, 1), device=str(device))
    figure(unit, "peak memory", value, "GiB", kind=what)


# ---------------------------------------------------------------------------------------------------
# DiT forward+backward memory without remat (and with the policy that saves what PyTorch saves)

def dit_memory_fvjax(unit: str, sizes: Sizes, remat: str) -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from fvjax.families.wan.transformer import abstract_model

    model = _fvjax_transformer(sizes.dit, jnp.bfloat16)
    graphdef = nnx.graphdef(abstract_model(model.config, jnp.bfloat16, dtype=jnp.bfloat16, remat_policy=remat))
    params = model.state
    x = jax.random.normal(jax.random.key(0), (1,) + latent_of(sizes.memory_video), jnp.bfloat16)
    t = jnp.array([500.0], jnp.float32)
    text = jax.random.normal(jax.random.key(1), (1, sizes.text_len, model.config.text_dim), jnp.bfloat16)

    def loss(state):
        return jnp.mean(jnp.square(nnx.merge(graphdef, state)(x, t, text).astype(jnp.float32)))

    compiled = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
    first, median = timed(lambda: jax.block_until_ready(compiled(params)), sizes.iters)
    memory = compiled.memory_analysis()
    value, what = jax_peak_gib()
    weights = gib_of(params)
    figure(unit, "fwd+bwd", median, "s", tokens=tokens_of(sizes.memory_video), remat=remat, device=device_kind())
    figure(unit, "activation memory", value - 2 * weights, "GiB", kind=f"{what} - params - grads",
           peak_gib=round(value, 2), params_gib=round(weights, 2),
           temp_gib=round(memory.temp_size_in_bytes / GIB, 2) if memory is not None else None)


def dit_memory_pytorch(unit: str, sizes: Sizes) -> None:
    import torch
    from diffusers import WanTransformer3DModel

    device = torch_device()
    dit_cfg, _ = _diffusers_configs(sizes)
    torch.manual_seed(0)
    with device:
        model = WanTransformer3DModel(**dit_cfg).to(torch.bfloat16).train()
    x = torch.randn((1,) + latent_of(sizes.memory_video), dtype=torch.bfloat16, device=device)
    t = torch.tensor([500.0], device=device)
    text = torch.randn(1, sizes.text_len, dit_cfg["text_dim"], dtype=torch.bfloat16, device=device)

    def step():
        model.zero_grad(set_to_none=True)
        model(x, t, text, return_dict=False)[0].float().square().mean().backward()
        sync_torch()

    first, median = timed(step, sizes.iters)
    value, what = torch_peak_gib()
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / GIB
    figure(unit, "fwd+bwd", median, "s", tokens=tokens_of(sizes.memory_video), device=str(device))
    figure(unit, "activation memory", value - 2 * weights, "GiB", kind=f"{what} - params - grads",
           peak_gib=round(value, 2), params_gib=round(weights, 2))
