"""Diffusers `AutoencoderKLWan` state-dict keys <-> fvjax VAE parameter paths, with layout transforms.

One `VAETensorKey` per Diffusers tensor, in Diffusers' `state_dict()` order (module registration order:
in a mid block the attention comes before the residual blocks). fvjax paths mirror the Diffusers names
(list indices are ints, as in the NNX pure dict), except: `weight` -> `kernel`, the Sequential index of
`resample.1` is dropped, and `gamma` stays `gamma`.

Transforms (torch -> fvjax): 3-D conv OIDHW -> DHWIO; 2-D conv OIHW -> HWIO; 1x1(x1) conv
(O, I, 1, ..) -> matmul kernel (I, O); RMS-norm gamma (C, 1, 1[, 1]) -> (C,).
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from fvjax.families.wan.vae.config import WanVAEConfig
from fvjax.models.params import flatten, nest

COPY, CONV3D, CONV2D, POINTWISE, GAMMA = "copy", "conv3d", "conv2d", "pointwise", "gamma"

Path = tuple  # of str and int parts


@dataclasses.dataclass(frozen=True)
class VAETensorKey:
    diffusers_key: str
    path: Path
    torch_shape: tuple[int, ...]
    fvjax_shape: tuple[int, ...]
    transform: str = COPY

    def to_fvjax(self, arr: np.ndarray) -> np.ndarray:
        """Diffusers layout -> fvjax layout (a view where numpy allows)."""
        if self.transform == CONV3D:
            return arr.transpose(2, 3, 4, 1, 0)
        if self.transform == CONV2D:
            return arr.transpose(2, 3, 1, 0)
        if self.transform == POINTWISE:
            return arr.reshape(arr.shape[0], arr.shape[1]).T
        if self.transform == GAMMA:
            return arr.reshape(-1)
        return arr

    def to_diffusers(self, arr: np.ndarray) -> np.ndarray:
        """fvjax layout -> Diffusers layout, C-contiguous."""
        if self.transform == CONV3D:
            return np.ascontiguousarray(arr.transpose(4, 3, 0, 1, 2))
        if self.transform == CONV2D:
            return np.ascontiguousarray(arr.transpose(3, 2, 0, 1))
        if self.transform == POINTWISE:
            return np.ascontiguousarray(arr.T).reshape(self.torch_shape)
        return np.ascontiguousarray(arr).reshape(self.torch_shape)

    @property
    def dotted_path(self) -> str:
        return "/".join(str(p) for p in self.path)


def _conv3d(key: str, path: Path, cin: int, cout: int, k: tuple[int, int, int]) -> Iterator[VAETensorKey]:
    yield VAETensorKey(f"{key}.weight", path + ("kernel",), (cout, cin, *k), (*k, cin, cout), CONV3D)
    yield VAETensorKey(f"{key}.bias", path + ("bias",), (cout,), (cout,))


def _pointwise(key: str, path: Path, cin: int, cout: int, spatial_dims: int) -> Iterator[VAETensorKey]:
    yield VAETensorKey(f"{key}.weight", path + ("kernel",), (cout, cin) + (1,) * spatial_dims, (cin, cout),
                       POINTWISE)
    yield VAETensorKey(f"{key}.bias", path + ("bias",), (cout,), (cout,))


def _gamma(key: str, path: Path, dim: int, images: bool) -> VAETensorKey:
    return VAETensorKey(f"{key}.gamma", path + ("gamma",), (dim,) + (1,) * (2 if images else 3), (dim,), GAMMA)


def _residual(key: str, path: Path, cin: int, cout: int) -> Iterator[VAETensorKey]:
    yield _gamma(f"{key}.norm1", path + ("norm1",), cin, images=False)
    yield from _conv3d(f"{key}.conv1", path + ("conv1",), cin, cout, (3, 3, 3))
    yield _gamma(f"{key}.norm2", path + ("norm2",), cout, images=False)
    yield from _conv3d(f"{key}.conv2", path + ("conv2",), cout, cout, (3, 3, 3))
    if cin != cout:
        yield from _pointwise(f"{key}.conv_shortcut", path + ("conv_shortcut",), cin, cout, 3)


def _resample(key: str, path: Path, dim: int, mode: str) -> Iterator[VAETensorKey]:
    cout = dim // 2 if mode.startswith("up") else dim
    yield VAETensorKey(f"{key}.resample.1.weight", path + ("resample", "kernel"), (cout, dim, 3, 3),
                       (3, 3, dim, cout), CONV2D)
    yield VAETensorKey(f"{key}.resample.1.bias", path + ("resample", "bias"), (cout,), (cout,))
    if mode == "downsample3d":
        yield from _conv3d(f"{key}.time_conv", path + ("time_conv",), dim, dim, (3, 1, 1))
    elif mode == "upsample3d":
        yield from _conv3d(f"{key}.time_conv", path + ("time_conv",), dim, 2 * dim, (3, 1, 1))


def _mid(key: str, path: Path, dim: int) -> Iterator[VAETensorKey]:
    a, ap = f"{key}.attentions.0", path + ("attentions", 0)
    yield _gamma(f"{a}.norm", ap + ("norm",), dim, images=True)
    yield from _pointwise(f"{a}.to_qkv", ap + ("to_qkv",), dim, 3 * dim, 2)
    yield from _pointwise(f"{a}.proj", ap + ("proj",), dim, dim, 2)
    for i in range(2):
        yield from _residual(f"{key}.resnets.{i}", path + ("resnets", i), dim, dim)


def _encoder(config: WanVAEConfig) -> Iterator[VAETensorKey]:
    dims = config.encoder_dims
    yield from _conv3d("encoder.conv_in", ("encoder", "conv_in"), config.in_channels, dims[0], (3, 3, 3))
    index = 0
    last = len(config.dim_mult) - 1
    for level, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        for _ in range(config.num_res_blocks):
            yield from _residual(f"encoder.down_blocks.{index}", ("encoder", "down_blocks", index), cin, cout)
            cin, index = cout, index + 1
        if level != last:
            mode = "downsample3d" if config.temperal_downsample[level] else "downsample2d"
            yield from _resample(f"encoder.down_blocks.{index}", ("encoder", "down_blocks", index), cout, mode)
            index += 1
    yield from _mid("encoder.mid_block", ("encoder", "mid_block"), dims[-1])
    yield _gamma("encoder.norm_out", ("encoder", "norm_out"), dims[-1], images=False)
    yield from _conv3d("encoder.conv_out", ("encoder", "conv_out"), dims[-1], 2 * config.z_dim, (3, 3, 3))


def _decoder(config: WanVAEConfig) -> Iterator[VAETensorKey]:
    dims = config.decoder_dims
    yield from _conv3d("decoder.conv_in", ("decoder", "conv_in"), config.z_dim, dims[0], (3, 3, 3))
    yield from _mid("decoder.mid_block", ("decoder", "mid_block"), dims[0])
    last = len(config.dim_mult) - 1
    for level, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        if level > 0:
            cin //= 2
        key, path = f"decoder.up_blocks.{level}", ("decoder", "up_blocks", level)
        for i in range(config.num_res_blocks + 1):
            yield from _residual(f"{key}.resnets.{i}", path + ("resnets", i), cin if i == 0 else cout, cout)
        if level != last:
            mode = "upsample3d" if config.temperal_upsample[level] else "upsample2d"
            yield from _resample(f"{key}.upsamplers.0", path + ("upsamplers", 0), cout, mode)
    yield _gamma("decoder.norm_out", ("decoder", "norm_out"), dims[-1], images=False)
    yield from _conv3d("decoder.conv_out", ("decoder", "conv_out"), dims[-1], config.out_channels, (3, 3, 3))


def vae_tensor_keys(config: WanVAEConfig) -> list[VAETensorKey]:
    """Every Diffusers key of the Wan2.1 VAE for `config`, in Diffusers' state_dict order."""
    z = config.z_dim
    keys = list(_encoder(config))
    keys += _pointwise("quant_conv", ("quant_conv",), 2 * z, 2 * z, 3)
    keys += _pointwise("post_quant_conv", ("post_quant_conv",), z, z, 3)
    keys += _decoder(config)
    return keys


def vae_params_to_diffusers(config: WanVAEConfig, params: dict) -> dict[str, np.ndarray]:
    """fvjax pure-dict params -> {Diffusers key: numpy array} (Diffusers layouts, state_dict order)."""
    flat = flatten(params)
    return {k.diffusers_key: k.to_diffusers(np.asarray(flat[k.path])) for k in vae_tensor_keys(config)}


def vae_params_from_diffusers(config: WanVAEConfig, tensors: dict[str, np.ndarray]) -> dict:
    """{Diffusers key: array} (e.g. a torch state_dict as numpy) -> fvjax pure-dict params (numpy)."""
    return nest({k.path: np.ascontiguousarray(k.to_fvjax(np.asarray(tensors[k.diffusers_key])))
                 for k in vae_tensor_keys(config)})
