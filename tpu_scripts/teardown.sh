#!/usr/bin/env bash
# Delete the queued resource and its TPU VMs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
gcloud_tpu queued-resources delete "${NAME}-qr" --force --async
