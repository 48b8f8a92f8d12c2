#!/usr/bin/env bash
# The GPU benchmark set of issue 12 in one go (SD1.5 512x512 and SDXL 1024x1024, random weights,
# fp16, 50 DDIM steps; eager and compiled, ours and diffusers on the same components).
# Run from the repository root on a CUDA machine; results land in benchmarks/results/*.json and the
# tables on stdout go into docs/benchmarks.md with the card named.
#   bash benchmarks/gpu_all.sh            # everything (about 10 minutes on an H100/H200)
#   REPEATS=3 bash benchmarks/gpu_all.sh  # fewer timed runs
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
REPEATS="${REPEATS:-5}"
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"
common=(--full-size --dtype float16 --device cuda --repeats "$REPEATS")
# SD1.5, 512x512: eager/eager, compiled/compiled (CUDA graphs), and the memory options
python benchmarks/generate.py "${common[@]}" --compile --memory-options --json "$OUT/sd15-512.json"
# SDXL, 1024x1024, against StableDiffusionXLAdapterPipeline
python benchmarks/generate.py "${common[@]}" --sdxl --compile --json "$OUT/sdxl-1024.json"
