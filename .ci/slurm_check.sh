#!/usr/bin/env bash
# CI: the launchers under a real scheduler. Installs Debian's slurm-wlm and munge (if missing),
# starts munged, slurmctld and slurmd on this machine (one node, CPUs = nproc, no cgroups, no
# accounting), everything in a temporary folder that a trap removes with the daemons whatever
# the result, then runs the repository's own launch/slurm.sbatch with 2 tasks on the CPU
# (2 processes joined by jax.distributed's SLURM detection, Gloo on localhost) on a small demo:
#   1. a run to its end: job COMPLETED, exit 0, summary.json;
#   2. the same run stopped by SIGTERM once its epoch 0 checkpoint is written: the run saves,
#      the launcher requeues the job (scontrol requeue, same job id), the requeued job resumes
#      and ends; every epoch's metrics and summary.json equal run 1's bitwise (timing fields
#      aside);
#   3. one of the two tasks killed with SIGKILL once the epoch 0 checkpoint is written: the job
#      fails within 120 s (srun --kill-on-bad-exit; the other task gets SIGTERM, then SIGKILL
#      after KillWait=10 s) and does not requeue itself; a resubmission with the same workdir
#      resumes from that checkpoint and ends with run 1's metrics;
# and launch/local.sh with 2 processes on one host (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
# JAX_PROCESS_ID): a run to its end, then SIGTERM to both processes once epoch 0 is in
# metrics.jsonl (saved, exit 0) and a rerun that resumes and ends, all with run 1's metrics.
# Every run uses the default config (keep_best_on_test on), 3 epochs of the demo on 40 glyphs.
#
# The SIGTERM of scenario 2 is sent with `scancel --signal=TERM JOBID` at a chosen moment, not
# by a time limit (--time/--signal=TERM@N): slurmctld checks time limits about every 30 s, so a
# limit-driven signal lands anywhere in a ~30 s window, which on a ~1 minute run is sometimes
# before the run's signal handler is installed (the process dies) and sometimes after its end
# (nothing to test). scancel without --batch/--full signals the job's steps only, as a time
# limit's --signal=TERM@N does, so the srun tasks get it and the batch script lives on to
# requeue the job. The conf's cred_expire=15 and sched_interval=5 let a requeued job start
# again ~16 s later (SLURM's defaults: 120 s, then up to 60 s more).
#
# Runs from the repository root with .venv/bin/python (`make test` builds .venv); needs root
# (or passwordless sudo) for apt-get and the daemons. Wall time on this machine (2 cores,
# shared with another engineer's work): 313 s with the cores mostly free (load average <= 3),
# 460 s at load 3-5 (apt-get included: 5 s from the package cache), 632-721 s at load 5-8.
# apt-get on a fresh machine: ~15-30 s more. A run that hangs fails after 400 s at most.
#   .ci/slurm_check.sh
# SLURM_CHECK_EXTRA adds flags to every run (e.g. "--config.checkpoint.keep_best_on_test=False");
# SLURM_CHECK_KEEP=1 keeps the temporary folder (daemons are stopped all the same).
set -euo pipefail

if ((EUID != 0)); then exec sudo -n -E bash "$0" "$@"; fi
cd "$(dirname "$0")/.."
repo=$(pwd)
py=$repo/.venv/bin/python

say() { printf '[slurm_check %4ds] %s\n' "$SECONDS" "$*"; }
fail() { say "FAIL: $*"; exit 1; }
[[ -x $py ]] || fail "$py is missing: run 'make test' (or 'make venv') first"

# --- install ---------------------------------------------------------------------------------
missing=()
for pkg in slurm-wlm munge; do
  dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    > /dev/null
fi
say "$(slurmctld -V), $(munged -V 2>&1 | head -1)"

# --- daemons, in a temporary folder ----------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dnc_jax-slurm.XXXXXX")
chmod 0711 "$tmp"  # munged wants its socket's folders searchable by all
mkdir -p "$tmp"/{munge,state,spool,log,runs,xla}
munged_pid='' ctld_pid='' slurmd_pid='' local_pids=() jobs=()
failed_logs=()

stepds() {  # pids of the slurmstepd of this script's jobs
  ((${#jobs[@]})) || return 0
  local ids=${jobs[*]}
  pgrep -f -- "^slurmstepd: \[(${ids// /|})\." || true
}
leftovers() {  # [all]: pids of the processes started here that still run (they inherited
  local file pid ppid  # SLURM_CONF=$tmp/slurm.conf); without `all`, not slurmscriptd
  for file in $(grep -lszx -- "SLURM_CONF=$tmp/slurm.conf" /proc/[0-9]*/environ); do
    pid=${file#/proc/}
    pid=${pid%/environ}
    case " $$ $BASHPID $slurmd_pid $ctld_pid $munged_pid " in *" $pid "*) continue ;; esac
    ppid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null) || continue  # gone (the grep above)
    [[ ${1:-} == all || $ppid != "$ctld_pid" ]] && echo "$pid"
  done
}
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if ((rc != 0)); then
    for f in "${failed_logs[@]}" "$tmp"/log/slurmctld.log "$tmp"/log/slurmd.log; do
      [[ -f $f ]] && { echo "----- tail of $f"; grep -av 'glyphs: ' "$f" | tail -n 60; }
    done
  fi
  local t=$SECONDS pid
  [[ -n $ctld_pid ]] && scancel --quiet --user=root 2>/dev/null
  for pid in "${local_pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  # The runs' processes (python, srun, batch shells) at once; their slurmstepd then end.
  for pid in $(leftovers); do
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == slurmstepd ]] || kill -KILL "$pid" 2>/dev/null
  done
  if [[ -n $ctld_pid ]]; then
    for _ in $(seq 60); do [[ -z $(squeue -h 2>/dev/null) ]] && break; sleep 0.5; done
  fi
  for _ in $(seq 20); do [[ -z $(leftovers)$(stepds) ]] && break; sleep 0.5; done
  for pid in $slurmd_pid $ctld_pid $munged_pid; do kill -TERM "$pid" 2>/dev/null; done
  for pid in $slurmd_pid $ctld_pid $munged_pid; do
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null
  done
  for pid in $(leftovers all) $(stepds); do kill -KILL "$pid" 2>/dev/null; done
  for _ in $(seq 10); do [[ -z $(leftovers all)$(stepds) ]] && break; sleep 0.5; done
  say "cleanup: jobs, runs and daemons stopped ($((SECONDS - t))s)"
  if [[ ${SLURM_CHECK_KEEP:-0} == 1 ]]; then say "kept $tmp"; else rm -rf "$tmp"; fi
  say "total ${SECONDS}s; $( ((rc == 0)) && echo PASSED || echo "FAILED (exit $rc)")"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_free() { "$py" -c 'import socket, sys; s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null; }

t0=$SECONDS
# munged with its own key and socket (AuthInfo below points SLURM at it): the system's munge
# setup, if any, is left alone.
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 0400 "$tmp/munge/munge.key"
munge_socket=$tmp/munge/munge.socket
munged --foreground --force --key-file="$tmp/munge/munge.key" --socket="$munge_socket" \
  --pid-file="$tmp/munge/munged.pid" --log-file="$tmp/log/munged.log" \
  --seed-file="$tmp/munge/munged.seed" > "$tmp/log/munged.out" 2>&1 &
munged_pid=$!
for _ in $(seq 50); do [[ -S $munge_socket ]] && break; sleep 0.2; done
munge -n --socket="$munge_socket" | unmunge --socket="$munge_socket" > /dev/null ||
  fail "munged does not answer on $munge_socket"

node=$(hostname -s)
cpus=$(nproc)
((cpus >= 2)) || fail "needs 2 CPUs for 2 tasks of 1 CPU, nproc says $cpus"
ctld_port=$(free_port)
slurmd_port=$(free_port)
# JAX's SLURM detection puts the coordinator on port 61440 + job id % 4096: start the job ids
# where the next few such ports are free.
first_job=''
for _ in $(seq 50); do
  candidate=$((1000 + RANDOM % 50000))
  ok=1
  for k in 0 1 2 3 4 5; do port_free $((61440 + (candidate + k) % 4096)) || { ok=0; break; }; done
  ((ok)) && { first_job=$candidate; break; }
done
[[ -n $first_job ]] || fail "no free coordinator ports in 61440-65535"

# cred_expire is also the time a requeued job waits before it may start again (default 120 s),
# and sched_interval (default 60 s) the period at which a job that became eligible starts.
cred_expire=15
export SLURM_CONF=$tmp/slurm.conf
cat > "$SLURM_CONF" <<EOF
ClusterName=dncjaxci
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$munge_socket,cred_expire=$cred_expire
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$tmp/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
FirstJobId=$first_job
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
InactiveLimit=0
KillWait=10
Waittime=0
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=ci Nodes=$node Default=YES MaxTime=30 State=UP
EOF
: > "$tmp/plugstack.conf"
slurmctld -D -i -f "$SLURM_CONF" > "$tmp/log/slurmctld.out" 2>&1 &
ctld_pid=$!
slurmd -D -f "$SLURM_CONF" -N "$node" > "$tmp/log/slurmd.out" 2>&1 &
slurmd_pid=$!
state=''
for _ in $(seq 60); do
  state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
  [[ $state == idle ]] && break
  sleep 1
done
[[ $state == idle ]] || fail "node $node is '$state' after 60 s, not idle"
say "slurmctld (port $ctld_port) and slurmd up, node $node idle with $cpus CPUs," \
    "first job id $first_job ($((SECONDS - t0))s)"

# --- helpers ---------------------------------------------------------------------------------
export JAX_PLATFORMS=cpu
# One compilation cache for every run: the first run fills it, the others start faster.
export JAX_COMPILATION_CACHE_DIR=$tmp/xla
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
export PYTHONUNBUFFERED=1
config=configs/demo.py
flags=(--config.num_epochs=3 --config.data.glyphs.max_classes=40 --config.divide.warmup_epochs=1
       --config.progress=False)
read -r -a more_flags <<< "${SLURM_CHECK_EXTRA:-}"
flags+=(${more_flags[@]+"${more_flags[@]}"})
say "runs: $config ${flags[*]}"

job_field() {  # JOBID FIELD: one field of `scontrol show job`
  scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}
submit() {  # NAME WORKDIR -> prints the job id
  sbatch --parsable --job-name="$1" --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 \
    --gpus-per-node=0 --time=15 --output="$tmp/log/$1-%j.out" \
    launch/slurm.sbatch "$config" "$2" -- "${flags[@]}"
}
wait_end() {  # JOBID LIMIT_S: waits for a final state, in $state (TIMEOUT:<state> if none);
  local id=$1 limit=$2 start=$SECONDS  # no $(...) around it, so that a signal's trap runs
  while ((SECONDS - start < limit)); do
    state=$(job_field "$id" JobState)
    case $state in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE)
        return ;;
    esac
    sleep 1
  done
  state="TIMEOUT:$state"
}
last_epoch() {  # WORKDIR: the last epoch in metrics.jsonl (-2 if none)
  "$py" - "$1/metrics.jsonl" <<'EOF'
import json, os, sys
epoch = -2
if os.path.exists(sys.argv[1]):
    for line in open(sys.argv[1]):
        try:
            epoch = max(epoch, json.loads(line)["epoch"])
        except (ValueError, KeyError):
            pass  # a line being written
print(epoch)
EOF
}
wait_checkpoint() {  # WORKDIR LIMIT_S JOBID: waits for a finished checkpoint in WORKDIR
  local wd=$1 limit=$2 id=$3 start=$SECONDS state  # (orbax renames its folder when done)
  while [[ -z $(find "$wd/checkpoints" -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9]+' \
                 2>/dev/null) ]]; do
    ((SECONDS - start < limit)) || fail "$wd: no finished checkpoint after ${limit}s"
    state=$(job_field "$id" JobState)
    [[ $state == PENDING || $state == CONFIGURING || $state == RUNNING ]] ||
      fail "job $id is $state before its first checkpoint"
    sleep 0.5
  done
}
wait_epoch() {  # WORKDIR EPOCH LIMIT_S [job:JOBID | PID...]: waits until metrics.jsonl holds
  local wd=$1 epoch=$2 limit=$3 start=$SECONDS what state  # EPOCH while the job or PIDs run
  shift 3
  while (($(last_epoch "$wd") < epoch)); do
    ((SECONDS - start < limit)) || fail "$wd: no epoch $epoch in metrics.jsonl after ${limit}s"
    for what in "$@"; do
      if [[ $what == job:* ]]; then
        state=$(job_field "${what#job:}" JobState)
        [[ $state == PENDING || $state == CONFIGURING || $state == RUNNING ]] ||
          fail "job ${what#job:} is $state before epoch $epoch"
      else
        kill -0 "$what" 2>/dev/null || fail "process $what ended before epoch $epoch"
      fi
    done
    sleep 0.5
  done
}
same_metrics() {  # REFERENCE_WORKDIR WORKDIR: every epoch's last record and summary.json equal
  "$py" - "$1" "$2" <<'EOF'
import json, sys

def timing(key):  # wall-clock fields: the only ones allowed to differ
    return "second" in key or key in ("img_s", "time")

def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if not timing(k)}
    return value

def records(workdir):
    by_epoch = {}
    for line in open(f"{workdir}/metrics.jsonl"):
        record = json.loads(line)
        by_epoch[record["epoch"]] = strip(record)
    return by_epoch

ref, run = records(sys.argv[1]), records(sys.argv[2])
summaries = [strip(json.load(open(f"{w}/summary.json"))) for w in sys.argv[1:]]
last = max(ref)
print(f"  final record (epoch {last}): " + json.dumps(run.get(last), sort_keys=True))
bad = [e for e in sorted(set(ref) | set(run)) if ref.get(e) != run.get(e)]
for e in bad:
    keys = sorted(k for k in set(ref.get(e) or {}) | set(run.get(e) or {})
                  if (ref.get(e) or {}).get(k) != (run.get(e) or {}).get(k))
    print(f"  epoch {e} differs in {keys}: {[(ref.get(e) or {}).get(k) for k in keys]} vs "
          f"{[(run.get(e) or {}).get(k) for k in keys]}")
if summaries[0] != summaries[1]:
    print("  summary.json differs")
    bad.append("summary")
print(f"  {len(ref)} epoch records (epochs {min(ref)}..{last}) and summary.json "
      f"{'bitwise equal' if not bad else 'DIFFER'} to {sys.argv[1]}'s")
sys.exit(1 if bad else 0)
EOF
}
expect_in() {  # FILE PATTERN WHAT: prints the matching lines, fails if none
  local lines
  lines=$(grep -E -- "$2" "$1" || true)
  [[ -n $lines ]] || fail "$3: no line matching '$2' in $1"
  sed 's/^/  | /' <<< "$lines"
}
expect_not_in() {
  if grep -qE -- "$2" "$1"; then grep -E -- "$2" "$1" | sed 's/^/  | /'; fail "$3"; fi
}

# --- SLURM 1: a run to its end ---------------------------------------------------------------
t0=$SECONDS
ref=$tmp/runs/s1
id=$(submit s1 "$ref")
jobs+=("$id")
log=$tmp/log/s1-$id.out
failed_logs+=("$log")
say "SLURM 1: job $id, a run to its end"
wait_end "$id" 400
say "SLURM 1: job $id $state, ExitCode $(job_field "$id" ExitCode), restarts $(job_field "$id" Restarts)"
[[ $state == COMPLETED && $(job_field "$id" ExitCode) == 0:0 ]] || fail "SLURM 1: job $id $state"
[[ -f $ref/summary.json ]] || fail "SLURM 1: no $ref/summary.json"
expect_in "$log" '^final \(epoch' "SLURM 1"
say "SLURM 1: passed ($((SECONDS - t0))s)"

# --- SLURM 2: SIGTERM, requeue, resume -------------------------------------------------------
t0=$SECONDS
wd=$tmp/runs/s2
id=$(submit s2 "$wd")
jobs+=("$id")
log=$tmp/log/s2-$id.out
failed_logs+=("$log")
say "SLURM 2: job $id; SIGTERM to its steps once the epoch 0 checkpoint is written"
wait_checkpoint "$wd" 300 "$id"
scancel --signal=TERM "$id"
say "SLURM 2: scancel --signal=TERM $id sent (metrics.jsonl at epoch $(last_epoch "$wd"))"
wait_end "$id" 400
restarts=$(job_field "$id" Restarts)
say "SLURM 2: job $id $state, ExitCode $(job_field "$id" ExitCode), restarts $restarts"
expect_in "$log" 'stopped by SIGTERM .*saved' "SLURM 2: the run did not say it stopped and saved"
expect_in "$log" 'requeueing job' "SLURM 2: the launcher did not requeue"
expect_in "$log" '^resumed ' "SLURM 2: the requeued job did not resume"
[[ $state == COMPLETED && $restarts == 1 ]] ||
  fail "SLURM 2: job $id $state after $restarts restarts, expected COMPLETED after 1"
[[ -f $wd/summary.json ]] || fail "SLURM 2: no $wd/summary.json"
same_metrics "$ref" "$wd" || fail "SLURM 2: the resumed run's metrics differ from SLURM 1's"
say "SLURM 2: passed ($((SECONDS - t0))s)"

# --- SLURM 3: SIGKILL of one task, then a resubmission ---------------------------------------
t0=$SECONDS
wd=$tmp/runs/s3
id=$(submit s3 "$wd")
jobs+=("$id")
log=$tmp/log/s3-$id.out
failed_logs+=("$log")
say "SLURM 3: job $id; SIGKILL to task 1 once the epoch 0 checkpoint is written"
wait_checkpoint "$wd" 300 "$id"
victim=''
for pid in $(pgrep -f -- "^$py -m dnc_jax.main .*--workdir=$wd( |\$)" || true); do
  if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx 'SLURM_PROCID=1'; then victim=$pid; fi
done
[[ -n $victim ]] || fail "SLURM 3: no python process of task 1 found"
(($(last_epoch "$wd") < 2)) || fail "SLURM 3: the run reached its end before the kill"
kill -KILL "$victim"
killed_at=$SECONDS
say "SLURM 3: kill -9 $victim (task 1; metrics.jsonl at epoch $(last_epoch "$wd")," \
    "checkpoints: $(ls "$wd/checkpoints" | tr '\n' ' '))"
wait_end "$id" 120
say "SLURM 3: job $id $state $((SECONDS - killed_at))s after the kill," \
    "ExitCode $(job_field "$id" ExitCode), restarts $(job_field "$id" Restarts)"
[[ $state == FAILED ]] || fail "SLURM 3: job $id is $state, expected FAILED within 120 s"
sleep 3
state=$(job_field "$id" JobState)
[[ $state == FAILED && $(job_field "$id" Restarts) == 0 ]] ||
  fail "SLURM 3: job $id went on to $state (restarts $(job_field "$id" Restarts))"
expect_not_in "$log" 'requeueing job' "SLURM 3: the launcher requeued a failed run"
grep -E 'srun: error|Killed|task 1' "$log" | head -5 | sed 's/^/  | /' || true
[[ ! -e $wd/summary.json ]] || fail "SLURM 3: summary.json written by a killed run"
id=$(submit s3b "$wd")
jobs+=("$id")
log=$tmp/log/s3b-$id.out
failed_logs+=("$log")
say "SLURM 3: resubmitted as job $id"
wait_end "$id" 400
say "SLURM 3: job $id $state, ExitCode $(job_field "$id" ExitCode)"
[[ $state == COMPLETED ]] || fail "SLURM 3: the resubmitted job $id is $state"
expect_in "$log" '^resumed ' "SLURM 3: the resubmitted job did not resume"
[[ -f $wd/summary.json ]] || fail "SLURM 3: no $wd/summary.json"
same_metrics "$ref" "$wd" || fail "SLURM 3: the resumed run's metrics differ from SLURM 1's"
say "SLURM 3: passed ($((SECONDS - t0))s)"

# --- launch/local.sh: 2 processes on one host ------------------------------------------------
local_start() {  # WORKDIR LOG: starts both processes; their pids in local_pids
  local port i
  port=$(free_port)
  local_pids=()
  for i in 0 1; do
    JAX_COORDINATOR_ADDRESS=127.0.0.1:$port JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=$i \
      launch/local.sh "$config" "$1" -- "${flags[@]}" > "$2.$i" 2>&1 &
    local_pids+=($!)
  done
  failed_logs+=("$2.0" "$2.1")
}
local_wait() {  # LIMIT_S WHAT: waits for both processes, fails unless both exit 0
  local start=$SECONDS pid rc alive
  while :; do
    alive=0
    for pid in "${local_pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    ((SECONDS - start < $1)) || fail "$2: still running after $1 s"
    sleep 1
  done
  for pid in "${local_pids[@]}"; do
    rc=0
    wait "$pid" || rc=$?
    ((rc == 0)) || fail "$2: process $pid exited $rc"
  done
  local_pids=()
}

t0=$SECONDS
wd=$tmp/runs/l1
say "local.sh 1: 2 processes, a run to its end"
local_start "$wd" "$tmp/log/l1"
local_wait 400 "local.sh 1"
[[ -f $wd/summary.json ]] || fail "local.sh 1: no $wd/summary.json"
expect_in "$tmp/log/l1.0" '^final \(epoch' "local.sh 1"
same_metrics "$ref" "$wd" || fail "local.sh 1: metrics differ from SLURM 1's"
say "local.sh 1: passed ($((SECONDS - t0))s)"

t0=$SECONDS
wd=$tmp/runs/l2
say "local.sh 2: SIGTERM to both processes once epoch 0 is in metrics.jsonl, then a rerun"
local_start "$wd" "$tmp/log/l2"
wait_epoch "$wd" 0 300 "${local_pids[@]}"
kill -TERM "${local_pids[@]}"
local_wait 120 "local.sh 2 (stopped)"
expect_in "$tmp/log/l2.0" 'stopped by SIGTERM .*saved' "local.sh 2: the run did not stop and save"
[[ ! -e $wd/summary.json ]] || fail "local.sh 2: summary.json after a stop"
local_start "$wd" "$tmp/log/l2b"
local_wait 400 "local.sh 2 (rerun)"
expect_in "$tmp/log/l2b.0" '^resumed ' "local.sh 2: the rerun did not resume"
[[ -f $wd/summary.json ]] || fail "local.sh 2: no $wd/summary.json"
same_metrics "$ref" "$wd" || fail "local.sh 2: the resumed run's metrics differ from SLURM 1's"
say "local.sh 2: passed ($((SECONDS - t0))s)"
