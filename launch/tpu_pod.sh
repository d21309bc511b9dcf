#!/usr/bin/env bash
# TPU VM pod slice: the same command on every worker at once, over gcloud ssh; each worker's
# process joins the run through jax.distributed.initialize, which detects the pod
# (dnc_jax/parallel.py), and loads only its own chips' rows of each global batch.
#
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [-- EXTRA FLAGS...]
#
#   launch/tpu_pod.sh my-v4-32 us-central2-b configs/sop.py /mnt/shared/runs/sop \
#       -- --config.data.root=/mnt/shared/sop
#   launch/tpu_pod.sh --dry-run my-v4-32 us-central2-b configs/sop.py /mnt/shared/runs/sop
#                                            # or DRY_RUN=1: print the gcloud command only
#
# Every worker needs the repository at REMOTE_DIR (default: dnc_jax, in the home folder) with
# its .venv holding jax[tpu]; CONFIG is relative to REMOTE_DIR. WORKDIR, the data and
# data.cache_dir must be on a filesystem every worker sees (NFS / Filestore, or a gcsfuse
# mount). PROJECT sets gcloud's --project (default: gcloud's configured project); PYTHON the
# interpreter on the workers (default: .venv/bin/python).
set -euo pipefail

usage() { sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
# Prints a command so that a shell reads it back as the same words ('...' only where needed).
quote() {
  local word out=()
  for word in "$@"; do
    if [[ -n $word && $word != *[!A-Za-z0-9_./:=,@%+-]* ]]; then out+=("$word")
    else out+=("'${word//\'/\'\\\'\'}'"); fi
  done
  printf '%s' "${out[*]}"
}
show() { quote "$@"; echo; }

dry_run=${DRY_RUN:-0}
positional=()
extra=()
while (($#)); do
  case $1 in
    --dry-run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) positional+=("$1") ;;
  esac
  shift
done
if ((${#positional[@]} != 4)); then
  usage >&2
  exit 2
fi
tpu_name=${positional[0]}
zone=${positional[1]}
config=${positional[2]}
workdir=${positional[3]}
remote_dir=${REMOTE_DIR:-dnc_jax}

# What each worker runs, quoted once for its login shell.
remote_command="cd $(quote "$remote_dir") && $(quote "${PYTHON:-.venv/bin/python}" -m dnc_jax.main \
  "--config=$config" "--workdir=$workdir" ${extra[@]+"${extra[@]}"})"

cmd=(gcloud compute tpus tpu-vm ssh "$tpu_name" "--zone=$zone" --worker=all)
if [[ -n ${PROJECT:-} ]]; then cmd+=("--project=$PROJECT"); fi
cmd+=("--command=$remote_command")

if [[ $dry_run != 0 ]]; then
  show "${cmd[@]}"
  exit 0
fi
exec "${cmd[@]}"
