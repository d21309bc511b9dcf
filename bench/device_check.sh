#!/usr/bin/env bash
# Every GPU check of the open issues in one run, for a session lent a GPU (see README, "GPUs"):
#   pip download -d .whl --only-binary=:all: <what it lacks, e.g. ml-collections>   # here, once
#   then the device tool runs:  bash bench/device_check.sh   (carry: .whl)
# Results go under $OUT (or ./device_out): parity with torchvision, train-step and embedding
# throughput in bfloat16 and float32, our step against the official PyTorch step, reclustering
# and evaluation at SOP scale and their growth to 1M, the loop overhead on the demo and at SOP
# scale with ResNet-50 (profiled), the input pipeline (with the official path beside ours), and
# a short real training run of the demo config on the GPU. All of it may not fit one device
# call of 10 minutes: name the checks to split them, the bars first, e.g.
#   bash bench/device_check.sh step_rr step_fused step_bf16 torch_step sop_data loop_sop_default
#   bash bench/device_check.sh parity step_fp32 torch_step_bf16 \
#     embed_bf16 loop_sop evaluate
#   bash bench/device_check.sh step_bf16_b256 step_vit_s16 embed_bf16 recluster loop input \
#     scaling demo
set -uo pipefail
OUT=${OUT:-device_out}
mkdir -p "$OUT"
SITE=$(mktemp -d)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl
fi
export PYTHONPATH="$SITE:$PWD"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
# `bash bench/device_check.sh NAME ...` runs only the checks named (e.g. to split the checks
# over two device calls of at most 10 minutes each); no names: all of them.
ONLY=" $* "
run() {  # TIMEOUT=S run NAME CMD...: each check has 240 s unless TIMEOUT says otherwise
  local name=$1; shift
  if [ "$ONLY" != "  " ] && [[ "$ONLY" != *" $name "* ]]; then return; fi
  echo "== $name: $*"
  ( time timeout "${TIMEOUT:-240}" "$@" ) > "$OUT/$name.txt" 2>&1; tail -4 "$OUT/$name.txt"
}
run parity python3 bench/torchvision_parity.py --out="$OUT/parity.json"
# Every schedule's step: the papers' round robin at 80 images a learner step, one call a step
# and a round of 8 in one call (steps_per_call=0), and joint at 8 x 80 (step_bf16).
run step_rr python3 bench/train_step.py --schedule=round_robin --batch=80 --steps=80
run step_fused python3 bench/train_step.py --schedule=fused --batch=80 --steps=80
run step_bf16 python3 bench/train_step.py --model=resnet50 --batch=640 --dtype=bfloat16
run step_bf16_b256 python3 bench/train_step.py --model=resnet50 --batch=256 --dtype=bfloat16
run step_fp32 python3 bench/train_step.py --model=resnet50 --batch=640 --dtype=float32
run embed_bf16 python3 bench/train_step.py --model=resnet50 --batch=256 --dtype=bfloat16 --embed
run step_vit_s16 python3 bench/train_step.py --model=vit_s16 --batch=640 --dtype=bfloat16
run recluster python3 bench/recluster.py
run evaluate python3 bench/evaluate.py
run loop python3 bench/loop_overhead.py --epochs=2
# SOP's size through the whole loop: 59,551 JPEGs cut by one view worker per core, ResNet-50.
run sop_data python3 bench/sop_scale.py --root=/tmp/fake_sop --workers=16
run loop_sop python3 bench/loop_overhead.py --like=sop_scale --set data.root=/tmp/fake_sop \
  --epochs=1 --profile --set model.name=resnet50 --set model.width=64 \
  --set augment.image_size=224 --set augment.eval_crop_fraction=0.875 \
  --set dtype=bfloat16
# The default config (configs/sop.py: round robin, 80 a step, 8 learners) on the fake SOP with
# a round of 8 steps a call, and one call a step beside it (--compare_calls): decides whether
# steps_per_call=0 (a round a call) should be the GPU's default.
TIMEOUT=400 run loop_sop_default python3 bench/loop_overhead.py --config=sop \
  --set data.root=/tmp/fake_sop --set model.pretrained= --set dtype=bfloat16 --epochs=1 \
  --set steps_per_call=0 --compare_calls
run torch_step python3 bench/torch_step.py --batch=80
run torch_step_bf16 python3 bench/torch_step.py --batch=640 --dtype=bfloat16 --peak_tflops=989
run input python3 bench/input_pipeline.py --workers=0,16
# Reclustering with its embedding pass at the rate embed_bf16 measured, exact evaluation to 1M.
# (in the same call: each device call starts with an empty $OUT)
EMBED=$(awk -F'|' '/embedding pass/ {gsub(/ /, "", $9); print $9}' "$OUT/embed_bf16.txt" \
  2>/dev/null)
run scaling python3 bench/scaling.py --recluster=60000,120000,500000,1000000 \
  --evaluate=60000,120000,500000,1000000 --embed_images_per_s="${EMBED:-0}"
run demo python3 -m dnc_jax.main --config=configs/demo.py --workdir="$OUT/demo" \
  --config.dtype=bfloat16 --config.num_epochs=6 --config.progress=False
