#!/usr/bin/env bash
# GPU check, under 5 minutes on one CUDA GPU: the torch rank counter against the references, the
# attack at 43,793^2 and 200,000^2 next to a bare matmul, CUDA embedding throughput of the ladder
# and a ViT-B/16-sized model, and bf16 / fp16 embeddings against fp32 (cosine >= 0.999).
#
# The machine needs only python3 with a CUDA torch. Everything else comes from bench/wheels/
# (git-ignored), filled beforehand on a machine that reaches the registry:
#   pip download --no-deps --only-binary=:all: --python-version 3.11 -d bench/wheels \
#       -r bench/gpu_requirements.txt
#   pip download --no-deps --only-binary=:all: --python-version 3.11 -d bench/wheels \
#       torchvision==0.29.1        # only used when the machine's torch is 2.14.1
#
# Run:   bash bench/gpu_check.sh [OUT_DIR]          (default bench/gpu_out)
# Env:   PYTHON (default python3), DEVICE (default cuda), SIZES (default "43793 200000"),
#        VENV (default /tmp/relink-gpu-venv; built with --system-site-packages to keep torch),
#        THROUGHPUT=0 skips the embedding throughput bench (for a quick CPU plumbing run)
# Figures: OUT_DIR/gpu_check.jsonl (one JSON line per check) and OUT_DIR/gpu_check.txt (log).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-bench/gpu_out}}
mkdir -p "$OUT"
JSON="$OUT/gpu_check.jsonl"
LOG="$OUT/gpu_check.txt"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-"43793 200000"}
VENV=${VENV:-/tmp/relink-gpu-venv}
START=$(date +%s)

log() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
step() {  # step NAME SECONDS CMD...: run with a time limit, log the outcome, never stop the script
    local name=$1 limit=$2
    shift 2
    log "$name ..."
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] && log "$name: done" || log "$name: FAILED (exit $rc)"
}

if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    log "torch sees no CUDA GPU here (set DEVICE=cpu for a plumbing run); nothing checked"
    exit 1
fi
command -v nvidia-smi >/dev/null && nvidia-smi -L | tee -a "$LOG"

# A private environment that keeps the machine's torch and adds the carried wheels.
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv --system-site-packages "$VENV" || { log "cannot create $VENV"; exit 1; }
fi
VPY="$VENV/bin/python"
if ! "$VPY" -c "import numpy, pandas, open_clip" 2>/dev/null; then
    if ls bench/wheels/*.whl >/dev/null 2>&1; then
        "$VPY" -m pip install -q --no-index --no-deps --find-links bench/wheels \
            -r bench/gpu_requirements.txt 2>&1 | tail -3 | tee -a "$LOG"
    else
        log "bench/wheels/ is empty: using whatever the machine has"
    fi
fi
if ! "$VPY" -c "import torchvision" 2>/dev/null; then
    if "$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.14.1') else 1)" \
        && ls bench/wheels/torchvision-0.29.1* >/dev/null 2>&1; then
        "$VPY" -m pip install -q --no-index --no-deps --find-links bench/wheels torchvision==0.29.1
    else
        log "no torchvision matching this torch: the embedding checks will be skipped"
    fi
fi
"$VPY" - <<'EOF' | tee -a "$LOG" >> "$JSON"
import json, os, torch
info = {"check": "environment", "torch": torch.__version__, "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count()}
if torch.cuda.is_available():
    info["gpu"] = torch.cuda.get_device_name()
    info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
print(json.dumps(info))
EOF

step "rank counts on $DEVICE vs the references" 120 \
    "$VPY" bench/gpu_check.py ranks --device "$DEVICE" --json "$JSON"
for n in $SIZES; do
    step "attack ${n}^2 on $DEVICE" 150 \
        "$VPY" bench/attack_scale.py --device "$DEVICE" --queries "$n" --no-metrics --repeats 2 \
        --json "$JSON"
done
if "$VPY" -c "import open_clip, torchvision" 2>/dev/null; then
    [ "${THROUGHPUT:-1}" = 1 ] && step "embedding throughput on $DEVICE" 120 \
        "$VPY" bench/embed_throughput.py --device "$DEVICE" --batches 3
    step "bf16 / fp16 vs fp32 embeddings" 60 \
        "$VPY" bench/gpu_check.py precision --device "$DEVICE" --json "$JSON"
else
    log "open_clip or torchvision missing: embedding checks skipped"
fi
log "figures: $JSON"
cat "$JSON"
