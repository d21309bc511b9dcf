#!/usr/bin/env bash
# The GPU checks of the open issues, for a session lent a GPU (see docs/gpus.md), sized for
# one device call of at most 9 minutes (a session has 15 minutes of device time, start-up
# included):
#   pip download -d .whl --only-binary=:all: <what it lacks, e.g. ml-collections>   # here, once
#   then the device tool runs:  bash bench/device_check.sh [GROUP|CHECK ...]   (carry: .whl)
#
# With no names it runs the first group, most important first:
#   first (default): step_rr step_fused embed_bf16 loop_sop_default step_bf16 torch_step
#     the round-robin step at batch 80 (the configs' default schedule, never measured on a
#     GPU), the same round in one call (fused), the embedding pass at that batch and dtype
#     (the pass / step ratio at one batch), the default config's loop on a fake SOP with one
#     call a round against one a step, joint at 8 x 80, our step against the official PyTorch
#     step at batch 80.
# The other groups, one device call each, by name:
#   bash bench/device_check.sh second   # phases_sop embed_pass_sop parity step_fp32
#                                       #   torch_step_bf16 step_bf16_b256 step_vit_s16 recluster
#   bash bench/device_check.sh third    # embed_bf16_b256 scaling loop_sop evaluate
#   bash bench/device_check.sh fourth   # loop input demo sop_data
#   bash bench/device_check.sh fifth    # step_backbones embed_backbones
# or any checks by name (run in the order above whatever the order given), e.g.
#   bash bench/device_check.sh step_rr torch_step_bf16
#
# Budget: every check has a TIMEOUT (seconds; estimates: no per-check H200 time is recorded
# in BENCHMARKS.md or README.md, only that nine checks took 549 s in all on 2026-12-04, ~60 s
# each; a ResNet-50 compile is most of a step check). The call's clock starts with this script
# (wheel install included): a check due after START_BY_S (480) is skipped, a line says so and
# summary.txt lists it; no check runs past BUDGET_S (500), its TIMEOUT cut to what is left.
# Both can be set in the environment, e.g. BUDGET_S=540 for a call of its own.
#
# Results come back as at most 4 files under $OUT (or ./device_out), rewritten after every
# check so a killed call still returns what finished: gpu.txt (nvidia-smi), results.md (each
# check's Markdown rows, or its last lines when it printed none), summary.txt (status,
# seconds and limit of every check, those skipped, XLA "Delay kernel timed out" lines counted
# and left out of results.md), logs.tar.gz (every check's whole log, parity.json, the demo
# run's folder without checkpoints).
set -uo pipefail
OUT=${OUT:-device_out}
BUDGET_S=${BUDGET_S:-500}
START_BY_S=${START_BY_S:-480}
MIN_LEFT_S=${MIN_LEFT_S:-30}  # no check starts with less of the budget left
mkdir -p "$OUT"
LOGS=$(mktemp -d)/logs
mkdir -p "$LOGS"
: > "$OUT/results.md"
: > "$OUT/summary.txt"
SITE=$(mktemp -d)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl
fi
export PYTHONPATH="$SITE:$PWD"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"

declare -A GROUP=(
  [first]="step_rr step_fused embed_bf16 loop_sop_default step_bf16 torch_step"
  [second]="phases_sop embed_pass_sop parity step_fp32 torch_step_bf16 step_bf16_b256 step_vit_s16 recluster"
  [third]="embed_bf16_b256 scaling loop_sop evaluate"
  [fourth]="loop input demo sop_data"
  [fifth]="step_backbones embed_backbones"
)
ONLY=" "
for arg in "${@:-first}"; do ONLY+="${GROUP[$arg]:-$arg} "; done
SKIPPED=()
NOISE='Delay kernel timed out'  # XLA's autotuner timing (dnc_jax/__init__.py says why)

pack() {  # the logs as one file; the demo's checkpoints stay behind
  tar -czf "$OUT/logs.tar.gz.part" -C "$(dirname "$LOGS")" --exclude=checkpoints logs \
    && mv "$OUT/logs.tar.gz.part" "$OUT/logs.tar.gz"
}

run() {  # TIMEOUT=S run NAME CMD...: a selected check, in this file's order, within the budget
  local name=$1; shift
  [[ "$ONLY" == *" $name "* ]] || return 0
  local limit=${TIMEOUT:-240} left=$((BUDGET_S - SECONDS))
  if (( SECONDS >= START_BY_S || left < MIN_LEFT_S )); then
    echo "skipped $name: due at ${SECONDS} s of the call (start by ${START_BY_S} s, budget" \
      "${BUDGET_S} s)" | tee -a "$OUT/summary.txt"
    SKIPPED+=("$name")
    return 0
  fi
  (( limit > left )) && limit=$left
  echo "== $name (at ${SECONDS} s, limit ${limit} s): $*"
  local t0=$SECONDS log="$LOGS/$name.txt"
  timeout "$limit" bash -c '"$@"' _ "$@" > "$log" 2>&1  # (fake_sop is a function)
  local rc=$? noise
  noise=$(grep -c "$NOISE" "$log")
  echo "$name: rc=$rc$( ((rc == 124)) && echo " (timed out)") $((SECONDS - t0)) s of" \
    "${limit} s; '$NOISE' lines: $noise" | tee -a "$OUT/summary.txt"
  {
    echo "### $name (rc=$rc, $((SECONDS - t0)) s)"
    echo
    echo "\`$*\`"
    echo
    if grep -q '^|' "$log"; then grep '^|' "$log"; else grep -v "$NOISE" "$log" | tail -5; fi
    echo
  } >> "$OUT/results.md"
  grep -v "$NOISE" "$log" | tail -3
  pack
}

rate() {  # images/s of a check's train_step.py row (column 9)
  awk -F'|' '/^\|/ && NF > 9 {gsub(/ /, "", $9); r = $9} END {print r}' "$LOGS/$1.txt" \
    2>/dev/null
}

fake_sop() {  # the fake SOP the SOP-scale loops train on (each device call starts bare)
  python3 bench/sop_scale.py --root=/tmp/fake_sop --workers=16 > /dev/null && "$@"
}
export -f fake_sop

# first: the papers' round robin at 80 images a learner step, one call a step, and a round of
# 8 in one call (steps_per_call=0); the embedding pass at the same batch and dtype beside them.
TIMEOUT=120 run step_rr python3 bench/train_step.py --schedule=round_robin --batch=80 \
  --steps=80 --peak_tflops=989
TIMEOUT=150 run step_fused python3 bench/train_step.py --schedule=fused --batch=80 --steps=80 \
  --peak_tflops=989
TIMEOUT=90 run embed_bf16 python3 bench/train_step.py --model=resnet50 --batch=80 \
  --dtype=bfloat16 --embed --peak_tflops=989
if [ -s "$LOGS/step_rr.txt" ] && [ -s "$LOGS/embed_bf16.txt" ]; then
  STEP=$(rate step_rr) EMB=$(rate embed_bf16)
  if [ -n "$STEP" ] && [ -n "$EMB" ]; then
    awk -v s="$STEP" -v e="$EMB" 'BEGIN {printf "batch 80, bfloat16: embedding pass %s " \
      "images/s, round-robin step %s images/s; an image costs the pass %.3f of a step\n\n", \
      e, s, s / e}' | tee -a "$OUT/results.md"
  fi
fi
# The default config (configs/sop.py: round robin, 80 a step, 8 learners) on the fake SOP with
# a round of 8 steps a call, and one call a step beside it (--compare_calls): decides whether
# steps_per_call=0 (a round a call) should be the GPU's default.
TIMEOUT=300 run loop_sop_default fake_sop python3 bench/loop_overhead.py --config=sop \
  --set data.root=/tmp/fake_sop --set model.pretrained= --set dtype=bfloat16 --epochs=1 \
  --set steps_per_call=0 --compare_calls
# Joint at 8 x 80, and our step against the official PyTorch step at the papers' batch.
TIMEOUT=120 run step_bf16 python3 bench/train_step.py --model=resnet50 --batch=640 \
  --dtype=bfloat16 --peak_tflops=989
TIMEOUT=150 run torch_step python3 bench/torch_step.py --batch=80 --peak_tflops=495

# second: where a SOP-sized run of the default config spends its time (the summary's phase
# table: training, the reclustering and evaluation passes, k-means, retrieval, checkpoints,
# compilation), and the embedding pass there against a bare forward (eval views cached after
# the first pass; the host-to-device copy of a batch timed alone).
TIMEOUT=300 run phases_sop fake_sop python3 -m dnc_jax.main --config=configs/sop.py \
  --workdir="$LOGS/phases_sop" --config.data.root=/tmp/fake_sop --config.model.pretrained= \
  --config.num_epochs=2 --config.progress=False
TIMEOUT=150 run embed_pass_sop fake_sop python3 bench/embed_pass.py --config=sop \
  --set data.root=/tmp/fake_sop --set model.pretrained= --set dtype=bfloat16 \
  --set data.eval_batch_size=256 --split=test --repeats=2 --profile --copy
TIMEOUT=90 run parity python3 bench/torchvision_parity.py --out="$LOGS/parity.json"
TIMEOUT=120 run step_fp32 python3 bench/train_step.py --model=resnet50 --batch=640 \
  --dtype=float32 --peak_tflops=495
TIMEOUT=150 run torch_step_bf16 python3 bench/torch_step.py --batch=640 --dtype=bfloat16 \
  --peak_tflops=989
TIMEOUT=120 run step_bf16_b256 python3 bench/train_step.py --model=resnet50 --batch=256 \
  --dtype=bfloat16 --peak_tflops=989
TIMEOUT=120 run step_vit_s16 python3 bench/train_step.py --model=vit_s16 --batch=640 \
  --dtype=bfloat16 --peak_tflops=989
TIMEOUT=90 run recluster python3 bench/recluster.py

# third: reclustering with its embedding pass at the rate measured in this call (batch 256,
# else 80), exact evaluation to 1M; the SOP-scale loop with ResNet-50 (profiled).
TIMEOUT=90 run embed_bf16_b256 python3 bench/train_step.py --model=resnet50 --batch=256 \
  --dtype=bfloat16 --embed --peak_tflops=989
EMBED=$(rate embed_bf16_b256)
EMBED=${EMBED:-$(rate embed_bf16)}
TIMEOUT=200 run scaling python3 bench/scaling.py --recluster=60000,120000,500000,1000000 \
  --evaluate=60000,120000,500000,1000000 --embed_images_per_s="${EMBED:-0}"
TIMEOUT=240 run loop_sop fake_sop python3 bench/loop_overhead.py --like=sop_scale \
  --set data.root=/tmp/fake_sop --epochs=1 --profile --set model.name=resnet50 \
  --set model.width=64 --set augment.image_size=224 --set augment.eval_crop_fraction=0.875 \
  --set dtype=bfloat16
TIMEOUT=90 run evaluate python3 bench/evaluate.py

# fourth: the demo's loop, the input pipeline (the official path beside ours), a short real
# training run of the demo config, and writing the fake SOP itself.
TIMEOUT=120 run loop python3 bench/loop_overhead.py --epochs=2
TIMEOUT=150 run input python3 bench/input_pipeline.py --workers=0,16
TIMEOUT=150 run demo python3 -m dnc_jax.main --config=configs/demo.py --workdir="$LOGS/demo" \
  --config.dtype=bfloat16 --config.num_epochs=6 --config.progress=False
TIMEOUT=60 run sop_data python3 bench/sop_scale.py --root=/tmp/fake_sop_timed --workers=16

# fifth: the backbones of configs/vit/ (configs/vit/_recipe.py's table, each with its keys and
# optimiser, random weights) and ConvNeXt-T, one after the other in one command, ResNet-50
# first: the step at the configs' round-robin batch of 80, then the embedding pass at 256, each
# row with its time over ResNet-50's in the same command. A row is printed as each backbone
# finishes, so a check cut by its limit keeps the rows before it; ViT-B first among the ViTs.
# The two limits add up to more than the default budget: for a call of its own,
# BUDGET_S=560 START_BY_S=420 bash bench/device_check.sh fifth.
BACKBONES=resnet50,dinov2_b14_reg4,clip_b16,dinov2_s14,dino_s16,convnext_tiny,dinov2_s14_reg4
TIMEOUT=400 run step_backbones python3 bench/train_step.py --backbone=$BACKBONES \
  --schedule=round_robin --batch=80 --steps=40 --dtype=bfloat16 --peak_tflops=989
TIMEOUT=150 run embed_backbones python3 bench/train_step.py --backbone=$BACKBONES --embed \
  --batch=256 --steps=10 --dtype=bfloat16 --peak_tflops=989

echo "done at ${SECONDS} s of the call; skipped: ${SKIPPED[*]:-none}" | tee -a "$OUT/summary.txt"
pack
