#!/usr/bin/env bash
# Create a TPU VM / pod slice through a queued resource and wait until it is ACTIVE.
#   PROJECT=my-proj ACCEL=v6e-8 RUNTIME=v2-alpha-tpuv6e tpu_scripts/create.sh [--spot] [--dry-run]
# TPU7x (Ironwood) is not served by the Cloud TPU API: use GKE / XPK for it.
set -euo pipefail
. "$(dirname "$0")/env.sh"
extra=()
for arg in "${ARGS[@]}"; do
  case "$arg" in
    --spot) extra+=(--spot) ;;
    *) echo "create.sh: unknown argument $arg (use --spot, --dry-run)" >&2; exit 2 ;;
  esac
done
gcloud_tpu queued-resources create "${NAME}-qr" --node-id="$NAME" \
  --accelerator-type="$ACCEL" --runtime-version="$RUNTIME" "${extra[@]}"
echo "waiting for ${NAME}-qr to become ACTIVE ..."
while true; do
  state=$(gcloud_tpu queued-resources describe "${NAME}-qr" --format='value(state.state)')
  [ "$DRY_RUN" = 1 ] && { echo "$state"; break; }
  echo "  $(date +%T) $state"
  case "$state" in
    ACTIVE) break ;;
    FAILED|SUSPENDED) echo "queued resource ended in $state" >&2; exit 1 ;;
  esac
  sleep "${POLL_SECONDS:-30}"
done
