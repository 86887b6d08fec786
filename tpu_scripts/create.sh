#!/usr/bin/env bash
# Create a TPU VM / pod slice through a queued resource and wait until it is ACTIVE.
#   PROJECT=my-proj ACCEL=v6e-8 RUNTIME=v2-alpha-tpuv6e tpu_scripts/create.sh [--spot]
# TPU7x (Ironwood) is not served by the Cloud TPU API: use GKE / XPK for it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
extra=()
[ "${1:-}" = "--spot" ] && extra+=(--spot)
gcloud_tpu queued-resources create "${NAME}-qr" --node-id="$NAME" \
  --accelerator-type="$ACCEL" --runtime-version="$RUNTIME" "${extra[@]}"
echo "waiting for ${NAME}-qr to become ACTIVE ..."
while true; do
  state=$(gcloud_tpu queued-resources describe "${NAME}-qr" --format='value(state.state)')
  echo "  $(date +%T) $state"
  case "$state" in
    ACTIVE) break ;;
    FAILED|SUSPENDED) echo "queued resource ended in $state" >&2; exit 1 ;;
  esac
  sleep 30
done
