# Settings and helpers shared by the tpu_scripts (sourced). Export these before calling a script (or put
# them in tpu_scripts/env.local.sh, which is read first when it exists).
# shellcheck shell=bash
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=/dev/null
[ -f "$here/env.local.sh" ] && . "$here/env.local.sh"
: "${PROJECT:?set PROJECT (your GCP project id)}"
: "${ZONE:=us-east5-b}"
: "${NAME:=fvjax-tpu}"                 # TPU VM (node) name; the queued resource is ${NAME}-qr
: "${ACCEL:=v6e-8}"                   # v5litepod-8, v5p-8, v6e-8, v6e-64, ...
: "${RUNTIME:=v2-alpha-tpuv6e}"       # v2-alpha-tpuv5-lite (v5e), v2-alpha-tpuv5 (v5p), v2-alpha-tpuv6e (v6e)
: "${REPO_DIR:=fvjax}"                # where the code lives on every worker (under $HOME)
: "${BUCKET:=}"                       # optional gs:// bucket for output_dir / data
export PROJECT ZONE NAME ACCEL RUNTIME REPO_DIR BUCKET

# --dry-run anywhere on a script's command line: print every command it would run (with the names
# resolved), run none. The other arguments are left in ARGS.
DRY_RUN=0
ARGS=()
for arg in "$@"; do
  if [ "$arg" = "--dry-run" ]; then DRY_RUN=1; else ARGS+=("$arg"); fi
done

run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}
gcloud_tpu() { run gcloud compute tpus "$@" --project="$PROJECT" --zone="$ZONE"; }
on_workers() { gcloud_tpu tpu-vm ssh "$NAME" --worker="$1" --command="$2"; }
on_all_workers() { on_workers all "$1"; }
