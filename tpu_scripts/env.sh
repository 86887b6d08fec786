# Settings shared by the tpu_scripts. Copy to env.local.sh and edit, or export these before calling.
# shellcheck shell=bash
: "${PROJECT:?set PROJECT (your GCP project id)}"
: "${ZONE:=us-east5-b}"
: "${NAME:=fvjax-tpu}"                 # TPU VM (node) name; the queued resource is ${NAME}-qr
: "${ACCEL:=v6e-8}"                   # v5litepod-8, v5p-8, v6e-8, v6e-64, ...
: "${RUNTIME:=v2-alpha-tpuv6e}"       # v2-alpha-tpuv5-lite (v5e), v2-alpha-tpuv5 (v5p), v2-alpha-tpuv6e (v6e)
: "${REPO_DIR:=fvjax}"                # where the code lives on every worker (under $HOME)
: "${BUCKET:=}"                       # optional gs:// bucket for output_dir / data
export PROJECT ZONE NAME ACCEL RUNTIME REPO_DIR BUCKET
gcloud_tpu() { gcloud compute tpus "$@" --project="$PROJECT" --zone="$ZONE"; }
on_all_workers() { gcloud_tpu tpu-vm ssh "$NAME" --worker=all --command="$1"; }
