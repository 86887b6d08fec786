#!/usr/bin/env bash
# Delete the queued resource and its TPU VMs.
#   PROJECT=my-proj tpu_scripts/teardown.sh [--dry-run]
set -euo pipefail
. "$(dirname "$0")/env.sh"
gcloud_tpu queued-resources delete "${NAME}-qr" --force --async
