"""Generate a video from a text prompt with a Wan2.1 model (Diffusers pipeline or fvjax training output).

    python -m fvjax.generate --model PATH --prompt TEXT --out video.mp4
        [--negative-prompt TEXT] [--base-pipeline PATH] [--num-frames 81 --height 480 --width 832]
        [--sampler unipc|euler|dmd] [--steps 50] [--guidance-scale 5.0] [--shift S]
        [--denoising-steps 1000,757,522 [--warp-denoising-step]] [--seed 0] [--fps 16] [--dtype ...]
        [--lora FILE [--lora-scale 1.0]]

PATH: a Diffusers Wan pipeline directory or a hub id in the local HF cache (transformer, VAE and text
encoder all come from it), or a transformer alone — an fvjax weights directory such as a training run's
`<output_dir>/student` or `student_ema`, a Diffusers transformer directory — together with
--base-pipeline, the Diffusers pipeline that provides vae/, text_encoder/ and tokenizer/.
--lora: a Diffusers/PEFT Wan LoRA (a training run's `<output_dir>/student_lora`, or one made elsewhere),
merged into the transformer's weights at --lora-scale before sampling.
prompt -> UMT5 -> jitted sampling loop (WanPipeline's, or DMD's few-step chain) -> VAE decode -> H.264 MP4.

A causal student (config.json of FastVideo's CausalWanTransformer3DModel, e.g. a Self-Forcing run's
student_ema) streams: chunk by chunk against its KV cache with the few-step chain (default: FastVideo's
[1000,750,500,250] warped onto shift 5), each chunk decoded as it lands; it prints the first-chunk latency
and frames per second. Longer than 21 latent frames needs a rolling window: --local-attn-size W
[--sink-size S] (FastVideo's pipeline.dit_config), unless the student was trained with one.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fvjax.errors import ArgumentParser, cli_entry, fail

PROG = "python -m fvjax.generate"
SAMPLERS = ("unipc", "euler", "dmd")
DTYPES = ("float32", "bfloat16")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, allow_abbrev=False, description=__doc__.split("\n\n")[0],
                     epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="Diffusers pipeline dir / hub id, or a transformer (fvjax weights dir, Diffusers "
                             "transformer dir) with --base-pipeline")
    parser.add_argument("--base-pipeline", metavar="PATH", default=None,
                        help="Diffusers pipeline dir / hub id for the VAE, text encoder and tokenizer "
                             "(default: --model when it is a pipeline)")
    parser.add_argument("--prompt", required=True, help="the text prompt")
    parser.add_argument("--negative-prompt", default=None,
                        help="for classifier-free guidance (default: Wan's default negative prompt; "
                             "unused by the dmd sampler and when --guidance-scale <= 1)")
    parser.add_argument("--out", required=True, metavar="FILE.mp4", help="the video to write")
    parser.add_argument("--num-frames", type=int, default=81, help="1 + 4k frames (default 81)")
    parser.add_argument("--height", type=int, default=480, help="a multiple of 16 (default 480)")
    parser.add_argument("--width", type=int, default=832, help="a multiple of 16 (default 832)")
    parser.add_argument("--sampler", choices=SAMPLERS, default=None,
                        help="unipc (WanPipeline's default), euler (FlowMatchEulerDiscrete), dmd (few-step "
                             "chain of DMD2 students: conditional only, re-noised between steps); causal students "
                             "always stream with the few-step chain")
    parser.add_argument("--steps", type=int, default=50, help="ODE steps for unipc / euler (default 50)")
    parser.add_argument("--guidance-scale", type=float, default=5.0,
                        help="CFG scale for unipc / euler; <= 1 turns guidance off (default 5.0)")
    parser.add_argument("--shift", type=float, default=None,
                        help="flow shift (default: the pipeline's scheduler_config.json flow_shift, else the "
                             "family's default: 3.0 for Wan; for dmd the family's few-step default, 8.0 for Wan)")
    parser.add_argument("--denoising-steps", default=None, metavar="T1,T2,...",
                        help="dmd: the student's timesteps, noisiest first (method_config.dmd_denoising_steps)")
    parser.add_argument("--warp-denoising-step", action="store_true",
                        help="dmd: warp the listed timesteps onto the shifted schedule, as training with "
                             "warp_denoising_step: true did")
    parser.add_argument("--local-attn-size", type=int, default=None, metavar="W",
                        help="causal students: attention window in latent frames (a rolling KV cache; -1 = global)")
    parser.add_argument("--sink-size", type=int, default=None, metavar="S",
                        help="causal students: first latent frames kept in the window for good")
    parser.add_argument("--context-noise", type=float, default=0.0,
                        help="causal students: timestep of the context pass that writes each chunk's cache "
                             "(method_config.context_noise; default 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default 0)")
    parser.add_argument("--fps", type=float, default=16.0, help="frame rate of the MP4 (default 16)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="parameter and compute dtype of the transformer (default float32)")
    parser.add_argument("--lora", metavar="FILE", default=None,
                        help="Diffusers/PEFT LoRA .safetensors (or a dir holding pytorch_lora_weights.safetensors)")
    parser.add_argument("--lora-scale", type=float, default=1.0, help="multiplies the LoRA delta (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _positive(value: int, flag: str) -> int:
    if value < 1:
        fail("command line", flag, f"must be >= 1, got {value}")
    return value


def check_video_args(args: argparse.Namespace) -> None:
    if args.num_frames < 1 or (args.num_frames - 1) % 4:
        fail("command line", "--num-frames", f"{args.num_frames} is not 1 + 4k (the VAE compresses time by 4 "
             "after the first frame): use e.g. 77 or 81")
    for flag, value in (("--height", args.height), ("--width", args.width)):
        if value < 16 or value % 16:
            fail("command line", flag, f"{value} is not a positive multiple of 16 (VAE stride 8 x patch 2)")
    _positive(args.steps, "--steps")
    if not args.out.endswith(".mp4"):
        fail("command line", "--out", f"{args.out!r}: the output is an MP4 file; give a name ending in .mp4")
    if not args.fps > 0:
        fail("command line", "--fps", f"must be positive, got {args.fps}")


def denoising_steps(args: argparse.Namespace, shift: float) -> tuple[float, ...]:
    if args.sampler != "dmd":
        if args.denoising_steps is not None or args.warp_denoising_step:
            fail("command line", "--denoising-steps", "only the dmd sampler takes a timestep list")
        return ()
    if not args.denoising_steps:
        fail("command line", "--denoising-steps", "the dmd sampler needs the student's timestep list, e.g. "
             "1000,850,700,550,350,275,200,125 (the recipe's method_config.dmd_denoising_steps)")
    try:
        steps = [int(item) for item in args.denoising_steps.split(",")]
    except ValueError:
        fail("command line", "--denoising-steps", f"{args.denoising_steps!r}: expected comma-separated integers")
    if any(not 0 < s <= 1000 for s in steps) or any(a <= b for a, b in zip(steps, steps[1:])):
        fail("command line", "--denoising-steps", f"{steps}: timesteps must lie in 1..1000, noisiest first, "
             "strictly decreasing")
    if not args.warp_denoising_step:
        return tuple(float(s) for s in steps)
    from fvjax.schedulers.few_step import warp_timesteps

    return tuple(float(s) for s in warp_timesteps(steps, shift))


def pipeline_root(path: str, where: str) -> Path | None:
    """The pipeline directory `path` names (resolving a hub id through the local cache), or None when it
    is a transformer only."""
    from fvjax.weights import paths

    given = paths.existing_dir(path, where, "model_index.json 'transformer/*' 'vae/*' 'text_encoder/*' 'tokenizer/*'")
    if (given / "model_index.json").is_file() or ((given / "vae").is_dir() and (given / "text_encoder").is_dir()):
        return given
    return None


def scheduler_shift(root: Path | None) -> float | None:
    config = root / "scheduler" / "scheduler_config.json" if root else None
    if config is None or not config.is_file():
        return None
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("flow_shift")
    except (OSError, json.JSONDecodeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_video_args(args)
    from fvjax.cpu_tuning import retain_freed_host_memory
    retain_freed_host_memory()   # before JAX starts its CPU client (see fvjax/cpu_tuning.py)
    # Heavy imports only after the arguments parsed, so --help and argument errors are instant.
    import jax.numpy as jnp

    from fvjax.inference.sampling import SamplerSpec
    from fvjax.inference.text_to_video import Components, VideoRequest, generate_videos
    from fvjax.io.video import write_mp4
    from fvjax.weights.loading import family_at, load_transformer

    model_root = pipeline_root(args.model, "--model")
    base = args.base_pipeline or (str(model_root) if model_root else None)
    if base is None:
        fail("command line", "--base-pipeline", f"{args.model} is a transformer only; pass --base-pipeline with "
             "the Diffusers Wan pipeline (dir or hub id) that provides vae/, text_encoder/ and tokenizer/")
    base_root = pipeline_root(base, "--base-pipeline")
    if base_root is None:
        fail("command line", "--base-pipeline", f"{base}: not a Diffusers pipeline (no model_index.json, or no "
             "vae/ and text_encoder/ folders)")
    family = family_at(args.model, "--model")
    if family.name == "wan_causal":
        return stream(args, family, base_root)
    for flag, value in (("--local-attn-size", args.local_attn_size), ("--sink-size", args.sink_size)):
        if value is not None:
            fail("command line", flag, "applies to causal students only")
    args.sampler = args.sampler or "unipc"
    if args.shift is not None:
        shift = args.shift
    elif args.sampler == "dmd":
        shift = family.defaults.few_step_flow_shift
    else:
        shift = scheduler_shift(base_root) or family.defaults.flow_shift
    spec = SamplerSpec(kind=args.sampler, num_steps=args.steps, guidance_scale=args.guidance_scale, shift=shift,
                       denoising_steps=denoising_steps(args, shift))

    transformer = load_transformer(args.model, jnp.dtype(args.dtype))
    if args.lora:
        from fvjax.lora.loading import transformer_with_lora
        transformer = transformer_with_lora(transformer, args.lora, args.lora_scale)
    components = Components.load(str(base_root), family, where="--base-pipeline" if args.base_pipeline else "--model")
    if components.prompt_encoder.config.d_model != transformer.config.text_dim:
        fail("command line", "--base-pipeline", f"its text encoder makes {components.prompt_encoder.config.d_model}-"
             f"dim embeddings but the transformer expects text_dim {transformer.config.text_dim}")
    negative = args.negative_prompt if args.negative_prompt is not None else family.defaults.negative_prompt
    request = VideoRequest(num_frames=args.num_frames, height=args.height, width=args.width, seed=args.seed)
    frames = generate_videos(transformer.apply, transformer.state, transformer.config.in_channels, components,
                             [args.prompt], spec, request, negative_prompt=negative, progress=not args.no_progress)
    write_mp4(frames[0], args.out, fps=args.fps)
    print(f"wrote {args.out} ({frames.shape[1]} frames, {frames.shape[3]}x{frames.shape[2]}, {args.fps:g} fps)")
    return 0


def stream(args: argparse.Namespace, family, base_root: Path) -> int:
    """A causal student: streaming generation (fvjax/inference/streaming.py)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from fvjax.inference.sampling import initial_noise, latent_shape
    from fvjax.inference.streaming import DEFAULT_SHIFT, DEFAULT_STEPS, StreamSpec, check_stream_length, stream_video, \
        warm_up
    from fvjax.io.video import write_mp4
    from fvjax.weights.loading import load_params

    if args.sampler not in (None, "dmd"):
        fail("command line", "--sampler", f"{args.model} is a causal student: it streams with its few-step chain "
             "(the dmd sampler); remove --sampler")
    if args.lora:
        fail("command line", "--lora", "is not supported for causal students yet")
    args.sampler = "dmd"
    shift = args.shift if args.shift is not None else DEFAULT_SHIFT
    from fvjax.methods.self_forcing.schedule import warp_steps   # Self-Forcing's grid (spec §3)
    if args.denoising_steps is None:
        steps = tuple(float(t) for t in warp_steps(DEFAULT_STEPS, shift))
    else:
        warp, args.warp_denoising_step = args.warp_denoising_step, False
        steps = denoising_steps(args, shift)
        steps = tuple(float(t) for t in warp_steps([int(t) for t in steps], shift)) if warp else steps
    if not 0 <= args.context_noise <= 1000:
        fail("command line", "--context-noise", f"must lie in [0, 1000], got {args.context_noise}")
    spec = StreamSpec(denoising_steps=steps, shift=shift, context_noise=args.context_noise)

    dtype = jnp.dtype(args.dtype)
    config, params = load_params(args.model, dtype, family=family, where="--model")
    window = {k: v for k, v in (("local_attn_size", args.local_attn_size), ("sink_size", args.sink_size))
              if v is not None}
    if window:
        config = family.with_arch(config, window, "command line", "--local-attn-size")
    graphdef, state = nnx.split(family.model_from_params(config, params, param_dtype=dtype, dtype=dtype))

    where = "--base-pipeline" if args.base_pipeline else "--model"
    prompt_encoder = family.load_prompt_encoder(str(base_root), where=where)
    if prompt_encoder.config.d_model != config.text_dim:
        fail("command line", "--base-pipeline", f"its text encoder makes {prompt_encoder.config.d_model}-dim "
             f"embeddings but the transformer expects text_dim {config.text_dim}")
    decoder = family.load_stream_decoder(str(base_root), where=where)
    shape = latent_shape(args.num_frames, args.height, args.width, config.in_channels,
                         family.defaults.temporal_compression, family.defaults.spatial_compression)
    check_stream_length(config, shape[1])
    context = jnp.asarray(prompt_encoder.encode([args.prompt]))
    noise = initial_noise(args.seed, 1, shape)
    compile_s = warm_up(graphdef, state, config, context, noise.shape, decoder, spec)
    frames, timing = stream_video(graphdef, state, config, context, noise, decoder, spec,
                                  key=jax.random.fold_in(jax.random.key(args.seed), 1))
    write_mp4(frames[0], args.out, fps=args.fps)
    window_text = "global attention" if config.local_attn_size == -1 else \
        f"window {config.local_attn_size} latent frames, {config.sink_size} sink"
    print(f"streamed {frames.shape[1]} frames ({shape[1]} latent frames, blocks of {config.num_frames_per_block}, "
          f"{len(steps)} steps, {window_text}): first-chunk latency {timing.first_chunk_latency:.3f} s, "
          f"{timing.fps:.1f} frames/s (compile and warm-up {compile_s:.1f} s, not counted)")
    print(f"wrote {args.out} ({frames.shape[1]} frames, {frames.shape[3]}x{frames.shape[2]}, {args.fps:g} fps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
