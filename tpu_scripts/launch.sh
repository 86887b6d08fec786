#!/usr/bin/env bash
# Run one recipe on every worker of the slice (multi-host: every process runs the same program;
# fvjax.train calls jax.distributed.initialize() itself when it finds a multi-host TPU VM).
#   PROJECT=my-proj tpu_scripts/launch.sh RECIPE.yaml [train flags, e.g. --resume-from-checkpoint latest] [--dry-run]
# Logs: ~/fvjax-train.log on each worker (tpu_scripts/logs.sh follows one); the run survives a dropped
# ssh session (nohup).
set -euo pipefail
. "$(dirname "$0")/env.sh"
[ "${#ARGS[@]}" -ge 1 ] || { echo "usage: launch.sh RECIPE.yaml [train flags...] [--dry-run]" >&2; exit 2; }
config=${ARGS[0]}
flags=$(printf ' %q' "${ARGS[@]:1}")
[ "${#ARGS[@]}" -ge 2 ] || flags=""
# Flags that overlap collectives with compute for FSDP training (MaxText / MaxDiffusion use the same set).
libtpu_args="--xla_tpu_enable_async_collective_fusion=true --xla_tpu_enable_async_collective_fusion_fuse_all_gather=true \
--xla_tpu_enable_async_collective_fusion_multiple_steps=true --xla_tpu_overlap_compute_collective_tc=true \
--xla_enable_async_all_gather=true --xla_tpu_enable_async_all_to_all=true"
on_all_workers "set -e; cd ~/$REPO_DIR;
  sudo rm -f /tmp/libtpu_lockfile; sudo lsof -t /dev/vfio/* 2>/dev/null | xargs -r sudo kill -9 || true;
  . .venv/bin/activate; export LIBTPU_INIT_ARGS='$libtpu_args';
  nohup python -m fvjax.train --config '$config'$flags > ~/fvjax-train.log 2>&1 &
  echo started on \$(hostname)"
echo "follow worker 0: tpu_scripts/logs.sh 0"
