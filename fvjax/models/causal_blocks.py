"""How a causal video model splits latent frames into blocks. Two layouts, both FastVideo's:

- the full-sequence block-causal mask (KD / ODE init, diffusion forcing: `remainder_first=False`) counts
  blocks from frame 0, so a short block comes last (20 frames, 3 per block -> 3, 3, 3, 3, 3, 3, 2);
- the Self-Forcing rollout and streaming (`remainder_first=True`) put the remainder in the first chunk
  (20, 3 -> 5, 3, 3, 3, 3, 3), so every later chunk has the trained size.

They agree whenever the frame count is a multiple of the block size (21 latent frames in blocks of 3).
"""
from __future__ import annotations


def block_sizes(num_frames: int, frames_per_block: int, remainder_first: bool = True) -> tuple[int, ...]:
    """Latent frames per causal block (21, 3 -> 3 x 7; 2, 3 -> 2)."""
    if num_frames < 1 or frames_per_block < 1:
        raise ValueError(f"block_sizes needs num_frames >= 1 and frames_per_block >= 1; got {num_frames}, "
                         f"{frames_per_block}")
    if not remainder_first:
        full, rest = divmod(num_frames, frames_per_block)
        return (frames_per_block,) * full + ((rest,) if rest else ())
    count = max(1, num_frames // frames_per_block)
    first = num_frames - (count - 1) * frames_per_block
    return (first,) + (frames_per_block,) * (count - 1)


def block_bounds(num_frames: int, frames_per_block: int,
                 remainder_first: bool = True) -> tuple[tuple[int, int], ...]:
    """(start, end) latent frames of each block."""
    bounds, start = [], 0
    for size in block_sizes(num_frames, frames_per_block, remainder_first):
        bounds.append((start, start + size))
        start += size
    return tuple(bounds)
