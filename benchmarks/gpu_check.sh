#!/usr/bin/env bash
# The checks that need a CUDA machine, in one go (8 minutes at most), after the README's install
# (the GPU torch wheel, then requirements.txt):
#   1. the tests marked `gpu` (python -m pytest -m gpu),
#   2. the speed benchmark on CUDA (benchmarks.speed, retailrocket-synthetic: SRGNN,
#      RecBoleSRGNN, GRU4Rec, NARM, LastItem, one round),
#   3. a short retailrocket-cotrec training + evaluation (run.py --model=SRGNN --epochs=1), on the
#      real source in $RECBOLE_SRGNN_SHARED_DATA (default ../shared/data); skipped with a message
#      where it is absent.
# Each step runs under `timeout` within what is left of the budget. The card (nvidia-smi) and the
# versions go to env.txt, each step's output to <step>.log, a table to summary.md and
# summary.json at the end.
#
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]     # default benchmarks/results/gpu-check/
#
# Environment: PYTHON (default .venv/bin/python, else python3), RECBOLE_SRGNN_SHARED_DATA,
# GPU_CHECK_SECONDS (the whole budget, default 480).
# Everything is written into a temporary folder next to RESULTS_DIR, renamed to RESULTS_DIR once
# complete (a previous RESULTS_DIR is replaced then); an interrupted run leaves nothing. Without a
# CUDA device it writes nothing: one line on stderr, exit status 2. Exit status 1 when a step
# failed or timed out, 0 when every step passed or was skipped.

set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$REPO/benchmarks/results/gpu-check}
BUDGET=${GPU_CHECK_SECONDS:-480}
if [[ -z "${PYTHON:-}" ]]; then
    PYTHON=python3
    [[ -x "$REPO/.venv/bin/python" ]] && PYTHON=$REPO/.venv/bin/python
fi
SHARED=${RECBOLE_SRGNN_SHARED_DATA:-$REPO/../shared/data}
START=$SECONDS

# --- a CUDA device, or nothing is written ----------------------------------------------------
if command -v nvidia-smi >/dev/null 2>&1; then
    CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
else
    CARD=""
fi
if ! CUDA_NAME=$("$PYTHON" -c 'import torch, sys
if not torch.cuda.is_available() or torch.cuda.device_count() < 1:
    sys.exit(1)
print(torch.cuda.get_device_name(0))' 2>/dev/null); then
    echo "error: no CUDA device present (torch.cuda.is_available() is false with $PYTHON;" \
         "nvidia-smi: ${CARD:-no card found}): gpu_check needs a CUDA machine; nothing written" >&2
    exit 2
fi

mkdir -p "$(dirname "$OUT")" || exit 2
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
TMP=$(mktemp -d "$(dirname "$OUT")/.$(basename "$OUT").tmp.XXXXXX") || exit 2
chmod 755 "$TMP"
cleanup() { [[ -n "${TMP:-}" && -d "$TMP" ]] && rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the machine -------------------------------------------------------------------------------
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host: $(hostname)"
    echo "card (nvidia-smi): ${CARD:-nvidia-smi not found}"
    echo "card (torch): $CUDA_NAME"
    if command -v nvidia-smi >/dev/null 2>&1; then
        echo "driver, memory: $(nvidia-smi --query-gpu=driver_version,memory.total \
            --format=csv,noheader 2>/dev/null | head -n 1)"
    fi
    DIRTY=""
    [[ -n "$(git -C "$REPO" status --porcelain 2>/dev/null)" ]] && DIRTY=" (uncommitted changes)"
    echo "commit: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)$DIRTY"
    PYTHONWARNINGS=ignore "$PYTHON" - <<'EOF' 2>&1
import platform
import sys
print(f"python: {platform.python_version()} ({sys.executable})")
for name in ("torch", "torch_geometric", "recbole", "ray", "numpy"):
    try:
        module = __import__(name)
        print(f"{name}: {getattr(module, '__version__', '?')}")
    except Exception as exc:  # a missing optional package is recorded, not fatal
        print(f"{name}: not importable ({type(exc).__name__})")
import torch
print(f"torch CUDA: {torch.version.cuda}, cuDNN: {torch.backends.cudnn.version()}")
EOF
} > "$TMP/env.txt"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi > "$TMP/nvidia-smi.txt" 2>&1

# --- the steps ---------------------------------------------------------------------------------
STEPS=()     # name|status|seconds|detail, one per step
FAILED=0

left() { echo $(( BUDGET - (SECONDS - START) )); }

# step NAME LIMIT_S COMMAND...: run COMMAND under timeout (LIMIT_S or what is left), output to
# NAME.log; sets RC (124: timed out).
step() {
    local name=$1 limit=$2
    shift 2
    local rest
    rest=$(( $(left) - 15 ))  # keep time for the summary
    (( limit > rest )) && limit=$rest
    if (( limit < 10 )); then
        RC=-1
        echo "not started: the ${BUDGET} s budget is spent" > "$TMP/$name.log"
        STEP_SECONDS=0
        return
    fi
    echo "[gpu-check] $name (at most ${limit} s) ..."
    local t0=$SECONDS
    (cd "$REPO" && timeout --kill-after=10 "$limit" "$@") > "$TMP/$name.log" 2>&1
    RC=$?
    STEP_SECONDS=$(( SECONDS - t0 ))
}

record() {  # record NAME STATUS DETAIL
    STEPS+=("$1|$2|$STEP_SECONDS|$3")
    [[ $2 == FAIL ]] && FAILED=1
    echo "[gpu-check] $1: $2 ($STEP_SECONDS s) $3"
}

verdict() {  # verdict NAME DETAIL_IF_OK: from RC
    if (( RC == 0 )); then
        record "$1" PASS "$2"
    elif (( RC == -1 )); then
        record "$1" FAIL "not started: the ${BUDGET} s budget was spent"
    elif (( RC == 124 || RC == 137 )); then
        record "$1" FAIL "timed out (see $1.log)"
    else
        record "$1" FAIL "exit status $RC: $(tail -n 1 "$TMP/$1.log" | cut -c1-200)"
    fi
}

# 1. tests marked gpu
step gpu-tests 150 env OMP_NUM_THREADS=1 "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider \
    --junitxml="$TMP/gpu-tests.xml"
TESTS_LINE=$(grep -E '[0-9]+ (passed|failed|skipped|error)' "$TMP/gpu-tests.log" | tail -n 1)
if (( RC == 0 )) && ! grep -qE '[0-9]+ passed' <<< "$TESTS_LINE"; then
    record gpu-tests FAIL "no gpu test passed on a CUDA machine: $TESTS_LINE"
else
    verdict gpu-tests "$TESTS_LINE"
fi

# 2. speed benchmark (CUDA is RecBole's default device when there is one)
step speed 180 "$PYTHON" -m benchmarks.speed --datasets retailrocket-synthetic \
    --models SRGNN RecBoleSRGNN GRU4Rec NARM LastItem --rounds 1 --output "$TMP/speed"
if (( RC == 0 )); then
    DEVICES=$("$PYTHON" -c 'import json, sys
print(",".join(sorted({r["device"] for r in json.load(open(sys.argv[1]))["results"]})))' \
        "$TMP/speed/speed.json" 2>/dev/null)
    if [[ "$DEVICES" == cuda* && "$DEVICES" != *cpu* ]]; then
        record speed PASS "devices: $DEVICES; speed/speed.md"
    else
        record speed FAIL "measured on ${DEVICES:-unknown}, not CUDA (speed/speed.json)"
    fi
else
    verdict speed ""
fi

# 3. a short cotrec training + evaluation
if [[ -d "$SHARED/retailrocket-cotrec" ]]; then
    mkdir -p "$TMP/cotrec"
    step cotrec 300 env RECBOLE_SRGNN_SHARED_DATA="$SHARED" OMP_NUM_THREADS=1 "$PYTHON" run.py \
        --model=SRGNN --dataset=retailrocket-cotrec --epochs=1 \
        --result_file="$TMP/cotrec/result.json" --checkpoint_dir="$TMP/cotrec/saved"
    if (( RC == 0 )); then
        DETAIL=$("$PYTHON" -c 'import json, sys
r = json.load(open(sys.argv[1]))
t = r.get("test_result") or {}
scores = ", ".join(f"{k} {v:.4f}" for k, v in t.items() if k in ("hit@10", "mrr@10"))
print("device " + str(r.get("device")) + "; test " + scores)' "$TMP/cotrec/result.json" 2>/dev/null)
        if [[ "$DETAIL" == "device cuda"* ]]; then
            record cotrec PASS "$DETAIL"
        else
            record cotrec FAIL "not trained on CUDA: ${DETAIL:-no result JSON}"
        fi
        rm -rf "$TMP/cotrec/saved"  # the checkpoint: large, not a result
    else
        verdict cotrec ""
    fi
else
    STEP_SECONDS=0
    record cotrec SKIP "no $SHARED/retailrocket-cotrec (set RECBOLE_SRGNN_SHARED_DATA)"
fi

# --- summary, then the folder in place -------------------------------------------------------
{
    echo "# GPU check"
    echo
    echo "Card: ${CARD:-$CUDA_NAME}. Command: \`bash benchmarks/gpu_check.sh\`; total" \
         "$(( SECONDS - START )) s of a ${BUDGET} s budget. Versions: env.txt."
    echo
    echo "| step | status | seconds | detail |"
    echo "|---|---|---:|---|"
    for row in "${STEPS[@]}"; do
        IFS='|' read -r n s t d <<< "$row"
        echo "| $n | $s | $t | ${d//|//} |"
    done
} > "$TMP/summary.md"
printf '%s\n' "${STEPS[@]}" | "$PYTHON" -c 'import json, sys
steps = [dict(zip(("step", "status", "seconds", "detail"), line.rstrip("\n").split("|", 3)))
         for line in sys.stdin if line.strip()]
for s in steps:
    s["seconds"] = int(s["seconds"])
json.dump({"card": sys.argv[1], "failed": sys.argv[2] == "1", "steps": steps},
          open(sys.argv[3], "w"), indent=2)' "${CARD:-$CUDA_NAME}" "$FAILED" "$TMP/summary.json"

if [[ -e "$OUT" ]]; then
    OLD=$(mktemp -d "$(dirname "$OUT")/.$(basename "$OUT").old.XXXXXX")
    mv "$OUT" "$OLD/" && mv "$TMP" "$OUT" && rm -rf "$OLD"
else
    mv "$TMP" "$OUT"
fi
cat "$OUT/summary.md"
echo "[gpu-check] results in $OUT"
exit $FAILED
