"""Streaming generation with a causal student (fvjax/inference/streaming.py, `python -m fvjax.generate`):
a causal student's weights dir (as training writes <output_dir>/student) is recognised with no flag and
streams chunk by chunk, longer than its training length with the rolling window, printing first-chunk
latency and frames per second; chunk-by-chunk VAE decoding equals decoding the whole latent; the global
cache's limit is one line naming local_attn_size; the streamed latents equal a reference built from the
model's own modes (full block-causal forwards on the same chain)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fvjax.families.registry import get_family
from fvjax.families.wan.causal import CausalWanConfig
from fvjax.generate import main
from fvjax.io.video import read_video
from fvjax.weights.fvjax_dir import write_fvjax_dir
from fvjax.weights.loading import load_params
from tiny_pipeline import write_tiny_wan_pipeline

CAUSAL = get_family("wan_causal")
SIZE = ["--height", "32", "--width", "48"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return write_tiny_wan_pipeline(tmp_path_factory.mktemp("streaming") / "pipeline")


def causal_student(pipeline, directory, **causal):
    """The pipeline's transformer weights as a causal student's fvjax dir (what a Self-Forcing run writes)."""
    config, params = load_params(pipeline, "float32")
    config = CausalWanConfig.from_wan(config, **causal)
    write_fvjax_dir(directory, CAUSAL, config, jax.tree.map(np.asarray, params))
    return directory


def test_streams_longer_than_the_training_length_with_a_rolling_window(pipeline, tmp_path, capsys):
    # trained on 3 latent frames (9 pixel frames); a 4-frame window with 1 sink streams 9 latent frames
    student = causal_student(pipeline, tmp_path / "student_ema", num_frames_per_block=1, local_attn_size=4,
                             sink_size=1)
    out = tmp_path / "stream.mp4"
    assert main(["--model", str(student), "--base-pipeline", str(pipeline), "--prompt", "a red cat runs",
                 "--num-frames", "33", *SIZE, "--seed", "3", "--out", str(out)]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (33, 32, 48, 3) and fps == 16
    printed = capsys.readouterr().out
    assert "streamed 33 frames (9 latent frames, blocks of 1, 4 steps, window 4 latent frames, 1 sink)" in printed
    assert "first-chunk latency" in printed and "frames/s" in printed


def test_a_global_cache_that_would_overflow_is_one_line(pipeline, tmp_path, capsys):
    student = causal_student(pipeline, tmp_path / "student", num_frames_per_block=3)
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(student), "--base-pipeline", str(pipeline), "--prompt", "x", "--num-frames", "89",
              *SIZE, "--out", str(tmp_path / "v.mp4")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "overflow the global KV cache" in err[0] and "--local-attn-size" in err[0]
    # the same student with a window given on the command line streams it (blocks of 3: remainder first)
    out = tmp_path / "long.mp4"
    assert main(["--model", str(student), "--base-pipeline", str(pipeline), "--prompt", "x", "--num-frames", "89",
                 *SIZE, "--local-attn-size", "6", "--sink-size", "1", "--out", str(out)]) == 0
    assert read_video(out)[0].shape[0] == 89


def test_chunk_by_chunk_vae_decode_equals_the_whole_decode(pipeline):
    from fvjax.families.wan.vae.latents import denormalize_latents
    from fvjax.inference.streaming import StreamingDecoder
    from fvjax.io.video import video_to_uint8

    vae = CAUSAL.load_vae(str(pipeline))
    z = jax.random.normal(jax.random.key(0), (1, 16, 6, 4, 6))
    whole = np.asarray(vae.decode(denormalize_latents(z, vae.config)))
    decoder = StreamingDecoder(vae, denormalize_latents)
    pieces, video_pieces, caches = [], [], None
    for start, end in ((0, 3), (3, 4), (4, 6)):       # remainder-first chunks, then one and two frames
        video, caches = vae.decode_frames(denormalize_latents(z[:, :, start:end], vae.config), caches)
        video_pieces.append(np.asarray(video))
        pieces.append(decoder.decode(z[:, :, start:end]))
    streamed = np.concatenate(video_pieces, axis=2)
    assert streamed.shape == whole.shape == (1, 3, 21, 32, 48)
    np.testing.assert_allclose(streamed, whole, atol=1e-6)
    # the decoder's jitted per-frame programs fuse the latent de-normalisation: float rounding, <= 1 level
    streamed_uint8 = np.concatenate(pieces, axis=1)[0].astype(int)
    assert streamed_uint8.shape == (21, 32, 48, 3)
    assert np.abs(streamed_uint8 - video_to_uint8(whole[0]).astype(int)).max() <= 1


def test_streamed_latents_follow_the_chain_on_the_block_causal_model(pipeline):
    """Reference: the same SDE chain per chunk with the full block-causal forward on [previous clean
    chunks | current noisy chunk] (t = 0 for the context frames) — equal to the KV-cache stream. (A frame
    count the blocks divide: the full-sequence mask counts blocks from frame 0, the stream puts a
    remainder first.)"""
    from fvjax.families.wan.causal import block_bounds
    from fvjax.inference.streaming import StreamSpec, stream_video_latents
    from fvjax.methods.self_forcing.schedule import SelfForcingLevels

    config, params = load_params(pipeline, "float32")
    config = CausalWanConfig.from_wan(config, num_frames_per_block=2)
    graphdef, state = nnx.split(CAUSAL.model_from_params(config, params))
    model = nnx.merge(graphdef, state)
    noise = jax.random.normal(jax.random.key(1), (1, 16, 6, 4, 6))
    context = jax.random.normal(jax.random.key(2), (1, 8, config.text_dim))
    spec = StreamSpec()
    key = jax.random.key(3)
    streamed = stream_video_latents(graphdef, state, config, context, noise, spec, key=key)

    levels, steps = SelfForcingLevels(spec.shift), spec.denoising_steps
    clean = jnp.zeros((1, 16, 0, 4, 6))
    for index, (start, end) in enumerate(block_bounds(6, 2)):
        chunk_key = jax.random.fold_in(key, index)
        x = noise[:, :, start:end]
        for k, t in enumerate(steps):
            frames = jnp.concatenate([clean, x], axis=2)
            ts = jnp.concatenate([jnp.zeros((1, start)), jnp.full((1, end - start), t)], axis=1)
            x0 = levels.x0_from_velocity(x, model(frames, ts, context)[:, :, start:end], jnp.float32(t))
            if k + 1 < len(steps):
                x = levels.add_noise(x0, jax.random.normal(jax.random.fold_in(chunk_key, k), x.shape), steps[k + 1])
        clean = jnp.concatenate([clean, x0], axis=2)
    scale = float(jnp.abs(clean).max())
    assert float(jnp.abs(streamed - clean).max()) <= 1e-4 * scale


def test_full_size_chunk_step_compiles_with_the_cache_donated():
    """The 1.3B streaming step at 480x832 (3-frame chunk against a 21-frame bf16 cache), compiled from
    abstract shapes (nothing allocated): the 6.04 GB cache is an argument and the output aliases it (donated,
    updated in place)."""
    from fvjax.families.wan.causal import CausalWanTransformer, abstract_cache
    from fvjax.families.wan.causal.config import PRESETS
    from fvjax.inference.streaming import StreamSpec, chunk_step

    config = PRESETS["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"]
    model = nnx.eval_shape(lambda: CausalWanTransformer(config, rngs=nnx.Rngs(0), param_dtype=jnp.bfloat16,
                                                        dtype=jnp.bfloat16))
    graphdef, state = nnx.split(model)
    cache = abstract_cache(config, 1, 21, (60, 104), jnp.bfloat16)
    compiled = chunk_step.lower(graphdef, state, cache, jax.ShapeDtypeStruct((1, 16, 3, 60, 104), jnp.float32),
                                jax.ShapeDtypeStruct((1, 512, 4096), jnp.bfloat16), jax.ShapeDtypeStruct((), jnp.int32),
                                jax.random.key(0), StreamSpec()).compile()
    memory = compiled.memory_analysis()
    assert memory.alias_size_in_bytes >= cache.nbytes - 4096 > 6.0e9
