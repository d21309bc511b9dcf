#!/usr/bin/env bash
# Every GPU check of the open issues in one run, for a session lent a GPU (see README, "GPUs"):
#   pip download -d .whl --only-binary=:all: <what it lacks, e.g. ml-collections>   # here, once
#   then the device tool runs:  bash bench/device_check.sh   (carry: .whl)
# Results go under $OUT (or ./device_out): parity with torchvision, train-step throughput in
# bfloat16 and float32, our step against the official PyTorch step, reclustering and evaluation
# at SOP scale, the loop overhead, the input
# pipeline (with the official path beside ours), and a
# short real training run of the demo config on the GPU.
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
run() { local name=$1; shift; echo "== $name: $*"; ( time timeout 240 "$@" ) > "$OUT/$name.txt" 2>&1; tail -3 "$OUT/$name.txt"; }
run parity python3 bench/torchvision_parity.py --out="$OUT/parity.json"
run step_bf16 python3 bench/train_step.py --model=resnet50 --batch=640 --dtype=bfloat16
run step_fp32 python3 bench/train_step.py --model=resnet50 --batch=640 --dtype=float32
run step_vit_s16 python3 bench/train_step.py --model=vit_s16 --batch=640 --dtype=bfloat16
run recluster python3 bench/recluster.py
run evaluate python3 bench/evaluate.py
run loop python3 bench/loop_overhead.py --epochs=2
run torch_step python3 bench/torch_step.py --batch=80
run torch_step_bf16 python3 bench/torch_step.py --batch=640 --dtype=bfloat16 --peak_tflops=989
run input python3 bench/input_pipeline.py --workers=0,16
run demo python3 -m dnc_jax.main --config=configs/demo.py --workdir="$OUT/demo" \
  --config.dtype=bfloat16 --config.num_epochs=6 --config.progress=False
