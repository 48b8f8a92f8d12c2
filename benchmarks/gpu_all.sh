#!/usr/bin/env bash
# The GPU benchmark set of issue 12 in one go, made to answer its item 6 targets in one device run:
#   1. sd15-512    SD1.5 512x512, 50 DDIM steps, guidance 7.5: eager and compiled   -> targets (a), (b)
#   2. lcm4-512    SD1.5 512x512, 4 LCM steps, guidance 1 (no CFG): eager, compiled -> target (c)
#   3. sdxl-1024   SDXL 1024x1024, 50 DDIM steps: eager and compiled                -> target (d)
#   4. sd15-512-memory  ours + slicing, VAE tiling, model CPU offload (optional, last)
# All on random-weight full-size models (no hub weights needed), fp16, ours against diffusers'
# StableDiffusion(XL)AdapterPipeline on the same components and scheduler. Each run writes its JSON
# as soon as each phase is measured (eager, then compiled); a run that would start with too little
# of the time budget left is skipped, and one still running at the budget's end is stopped (its
# JSON keeps the phases done). Then benchmarks/targets.py prints the targets' PASS/FAIL and a
# table for docs/benchmarks.md (also saved as targets.md).
#
#   bash benchmarks/gpu_all.sh [OUTDIR]       # OUTDIR: default $OUT, else benchmarks/results
#   DEVICE=cpu SMOKE=1 bash benchmarks/gpu_all.sh /tmp/smoke
#       # the same runs on the tiny model: 2 steps, 1 repeat, float32, no compile (checks the
#       # script, the JSON and targets.py on a CPU; the targets say "not applicable")
# Settings (environment): REPEATS (3), SDXL_REPEATS (2), BUDGET_S (540: seconds for all runs),
# MEMORY (1: run 4 when time is left; 0: never).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 # nothing is downloaded: no network waits either
outdir="${1:-${OUT:-benchmarks/results}}"
mkdir -p "$outdir"
DEVICE="${DEVICE:-cuda}"
SMOKE="${SMOKE:-0}"
REPEATS="${REPEATS:-3}"
SDXL_REPEATS="${SDXL_REPEATS:-2}"
BUDGET_S="${BUDGET_S:-540}"
MEMORY="${MEMORY:-1}"
PYTHON="${PYTHON:-python3}"
started=$SECONDS

if [[ "$SMOKE" == 1 ]]; then
    common=(--device "$DEVICE" --dtype float32 --steps 2 --repeats 1 --no-memory-probe)
    compile=()
    lcm_steps=2
    sdxl_repeats=1
else
    common=(--full-size --device "$DEVICE" --dtype float16 --repeats "$REPEATS")
    compile=(--compile)
    lcm_steps=4
    sdxl_repeats="$SDXL_REPEATS"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PYTHON" -c "import sys, torch, diffusers; print('python', sys.version.split()[0], 'torch', torch.__version__, 'diffusers', diffusers.__version__)"

# run NAME MOST_SECONDS LEAST_SECONDS ARGS...: generate.py into OUTDIR/NAME.json, stopped after
# MOST_SECONDS (or at the budget's end), skipped when less than LEAST_SECONDS of the budget is left
run() {
    local name=$1 most=$2 least=$3
    shift 3
    local left=$((BUDGET_S - (SECONDS - started)))
    if ((left < least)); then
        echo "== $name: skipped, ${left}s of BUDGET_S=${BUDGET_S} left (needs about ${least}s)"
        return
    fi
    local limit=$((left < most ? left : most))
    echo "== $name: $(date -u +%T), limit ${limit}s, ${left}s of the budget left"
    local status=0
    timeout -k 20 "$limit" "$PYTHON" benchmarks/generate.py "${common[@]}" "$@" --json "$outdir/$name.json" ||
        status=$?
    echo "== $name: exit $status after $((SECONDS - started))s in all$( ((status == 124)) && echo ' (stopped at its limit)')"
}

run sd15-512 300 60 "${compile[@]}"
run lcm4-512 200 60 --scheduler lcm --guidance 1 --steps "$lcm_steps" "${compile[@]}"
run sdxl-1024 "$BUDGET_S" 120 --sdxl --repeats "$sdxl_repeats" "${compile[@]}"
if [[ "$MEMORY" == 1 ]]; then
    run sd15-512-memory 120 75 --memory-options --repeats 1
fi
echo "== all runs: $((SECONDS - started))s"
"$PYTHON" benchmarks/targets.py "$outdir" --markdown "$outdir/targets.md"
