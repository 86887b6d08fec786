#!/usr/bin/env bash
# Follow the training log of one worker (default 0, the one that writes metrics).
#   PROJECT=my-proj tpu_scripts/logs.sh [WORKER] [--dry-run]
set -euo pipefail
. "$(dirname "$0")/env.sh"
worker=${ARGS[0]:-0}
on_workers "$worker" "tail -n 100 -f ~/fvjax-train.log"
