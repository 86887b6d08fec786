#!/usr/bin/env bash
# Copy this checkout to every worker and install fvjax with the TPU extra in a venv there.
#   PROJECT=my-proj tpu_scripts/setup.sh [--dry-run]
set -euo pipefail
. "$(dirname "$0")/env.sh"
top=$(cd "$(dirname "$0")/.." && pwd)
tarball=$(mktemp -d)/fvjax.tar.gz
run git -C "$top" archive --format=tar.gz -o "$tarball" HEAD
gcloud_tpu tpu-vm scp "$tarball" "$NAME:~/fvjax.tar.gz" --worker=all
on_all_workers "set -e; rm -rf ~/$REPO_DIR; mkdir -p ~/$REPO_DIR; tar xzf ~/fvjax.tar.gz -C ~/$REPO_DIR;
  cd ~/$REPO_DIR; python3 -m venv .venv; . .venv/bin/activate; pip install -q -U pip; pip install -q -e '.[tpu]';
  python -c 'import jax; print(jax.process_index(), jax.device_count(), jax.devices()[0].device_kind)'"
