#!/usr/bin/env bash
# Wan2.1-T2V-1.3B (Diffusers) -> fvjax weights dir (orbax params + config.json + manifest).
#
#   bash convert/wan2.1_t2v_1.3b_to_fvjax.sh [DST] [DTYPE]
#
# SRC may be a local pipeline dir, a transformer dir, or the hub id below if it is in the local HF cache
# (fvjax never downloads; fetch it first where there is network:
#   hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers --include model_index.json 'transformer/*').
# Needs about one copy of the output in RAM: 5.7 GB (float32) or 2.9 GB (bfloat16).
set -euo pipefail
SRC="${SRC:-Wan-AI/Wan2.1-T2V-1.3B-Diffusers}"
DST="${1:-weights/wan2.1-t2v-1.3b-fvjax}"
DTYPE="${2:-float32}"   # float32 (trainable master weights) or bfloat16 (frozen teacher / inference)
python -m fvjax.convert diffusers-to-fvjax --src "$SRC" --dst "$DST" --dtype "$DTYPE"
