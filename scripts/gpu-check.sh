#!/usr/bin/env bash
# The GPU check: run once, as is, on a machine with an NVIDIA GPU and this repository installed
# (`pip install -c constraints.txt -e '.[dev]'`). Nothing is downloaded: the model is a random-weight
# Llama-3.2-1B-shaped directory built on the spot. Writes one JSON file (default gpu-check.json) with
#   step_{lora,full}:        step time, tokens/s, MFU of the Llama-3.2-1B-shaped step (batch 16 × 128)
#   peak_memory_{lora,full}: peak GPU memory per method class (ce, single-pass, two-view, gradient-surgery)
#   smoke_paper, smoke_paper_full_ft: one cell of each paper preset end to end (a few steps), wall time, peak
#   bench (with FULL_BENCH=1):   the whole `jepa-audit bench --device cuda` table
# Usage: scripts/gpu-check.sh [OUT.json]     (about 5–10 minutes on one H100-class GPU, estimated)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-check.json}"
py="${PYTHON:-python}"
[ -x .venv/bin/python ] && py="${PYTHON:-.venv/bin/python}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
extra=()
[ "${FULL_BENCH:-0}" = 1 ] && extra+=(--full-bench)
exec "$py" -m jepa_audit.gpu_check --out "$out" --device "${DEVICE:-cuda}" ${SMALL:+--small} "${extra[@]}"
