#!/usr/bin/env bash
# A trained student (an fvjax weights dir: config.json + fvjax_manifest.json + params/) -> a Diffusers
# transformer dir that diffusers.WanTransformer3DModel.from_pretrained loads.
#
#   bash convert/student_to_diffusers.sh SRC_FVJAX_DIR DST [DTYPE]
#
# To use it in a full pipeline, put DST as the transformer/ folder of a copy of the base Wan2.1
# Diffusers pipeline (same VAE, text encoder and scheduler):
#   cp -r <Wan2.1-T2V-1.3B-Diffusers> my-student && rm -r my-student/transformer && mv DST my-student/transformer
set -euo pipefail
SRC="${1:?usage: $0 SRC_FVJAX_DIR DST [float32|bfloat16]}"
DST="${2:?usage: $0 SRC_FVJAX_DIR DST [float32|bfloat16]}"
DTYPE="${3:-}"
python -m fvjax.convert fvjax-to-diffusers --src "$SRC" --dst "$DST" ${DTYPE:+--dtype "$DTYPE"} --max-shard-size 10GB
