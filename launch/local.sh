#!/usr/bin/env bash
# One host, every local GPU (or TPU chip): one process sees all of them and the run's mesh
# spans them; nothing to set per device count (data.batch_size must divide by it).
#
#   launch/local.sh CONFIG [WORKDIR] [-- EXTRA FLAGS...]
#
#   launch/local.sh configs/sop.py runs/sop -- --config.data.root=/data/Stanford_Online_Products
#   CUDA_VISIBLE_DEVICES=0,1,2,3 launch/local.sh configs/sop.py runs/sop   # 4 of the GPUs
#   launch/local.sh --dry-run configs/sop.py runs/sop     # or DRY_RUN=1: print, do not run
#
# Without WORKDIR the run gets a fresh runs/<config>-<date>-<time>; an existing WORKDIR resumes.
# PYTHON picks the interpreter (default: the repository's .venv, else python3).
#
# GPU memory is left at JAX's defaults (75% of each GPU preallocated, the rest for the CUDA
# libraries): the run is alone on its GPUs and k-means and retrieval use the same pool. On a
# GPU shared with other programs, export XLA_PYTHON_CLIENT_PREALLOCATE=false (or
# XLA_PYTHON_CLIENT_MEM_FRACTION=.5) before calling; the environment passes through.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

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
if ((${#positional[@]} < 1 || ${#positional[@]} > 2)); then
  usage >&2
  exit 2
fi
config=${positional[0]}
workdir=${positional[1]:-}

python=${PYTHON:-}
if [[ -z $python ]]; then
  if [[ -x $repo/.venv/bin/python ]]; then python=$repo/.venv/bin/python; else python=python3; fi
fi

# PYTHONPATH so that the command works from any folder; CONFIG and WORKDIR stay relative to it.
cmd=(env "PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}" "$python" -m dnc_jax.main
     "--config=$config")
if [[ -n $workdir ]]; then cmd+=("--workdir=$workdir"); fi
cmd+=(${extra[@]+"${extra[@]}"})

if [[ $dry_run != 0 ]]; then
  show "${cmd[@]}"
  exit 0
fi
exec "${cmd[@]}"
