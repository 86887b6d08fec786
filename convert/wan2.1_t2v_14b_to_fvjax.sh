#!/usr/bin/env bash
# Wan2.1-T2V-14B (Diffusers) -> fvjax weights dir (orbax params + config.json + manifest).
#
#   bash convert/wan2.1_t2v_14b_to_fvjax.sh [DST] [DTYPE]
#
# SRC: local pipeline/transformer dir or the cached hub id (fetch first where there is network:
#   hf download Wan-AI/Wan2.1-T2V-14B-Diffusers --include model_index.json 'transformer/*').
# Needs about one copy of the output in RAM: 57 GB (float32) or 29 GB (bfloat16), plus ~0.3 GB.
# The 14B teacher of a DMD2 run is frozen: bfloat16 halves its memory and disk.
set -euo pipefail
SRC="${SRC:-Wan-AI/Wan2.1-T2V-14B-Diffusers}"
DST="${1:-weights/wan2.1-t2v-14b-fvjax}"
DTYPE="${2:-bfloat16}"
python -m fvjax.convert diffusers-to-fvjax --src "$SRC" --dst "$DST" --dtype "$DTYPE"
