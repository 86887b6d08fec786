#!/usr/bin/env bash
# Run a shell command in the fvjax checkout (venv active) on every worker, or on one with --worker=N.
#   PROJECT=my-proj tpu_scripts/run.sh [--worker=N] 'python -m fvjax.convert diffusers-to-fvjax ...' [--dry-run]
set -euo pipefail
. "$(dirname "$0")/env.sh"
worker=all
command=()
for arg in "${ARGS[@]}"; do
  case "$arg" in
    --worker=*) worker=${arg#--worker=} ;;
    *) command+=("$arg") ;;
  esac
done
[ "${#command[@]}" -ge 1 ] || { echo "usage: run.sh [--worker=N] COMMAND [--dry-run]" >&2; exit 2; }
on_workers "$worker" "set -e; cd ~/$REPO_DIR; . .venv/bin/activate; ${command[*]}"
