#!/usr/bin/env bash
# GPU readiness check (issue 17, item 5): one run on a CUDA machine, results under $OUT (6 files).
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh        # from the repository root
#
# Needs python3 with torch (CUDA), pytorch-lightning, torchmetrics, scikit-learn and pytest; lightly, torchvision,
# jsonargparse, rich and the offline MNIST are optional (what needs them is skipped; the benchmark uses synthetic
# MNIST-shaped data). If pytest is missing, a folder `.gpu_deps` holding it (`pip install --target .gpu_deps pytest
# exceptiongroup tomli`) is put on the path. Every step has its own time limit (SIGINT first, so pytest still
# writes its junit file); the whole script stays under ~10 minutes. GPU_CHECK_DRY_RUN=1 runs it on a machine
# without CUDA (the CUDA tests skip, the benchmark runs on the CPU in smoke mode) to check the plumbing.
#
# Files: gpu_check.log (environment, every step's output and exit status), cuda_tests.xml (tests/test_cuda.py),
# matrix_gpu_eager.xml and matrix_gpu_compiled.xml (tests/test_compat_matrix.py's cuda cells; each cell's largest
# deviation from eager float32 and its near-cut swaps are junit properties), overhead_cuda.md / overhead_cuda.json.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # absolute: the CLI steps run in other folders
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG:-:4096:8}"  # deterministic cuBLAS where Lightning asks
export PYTHONUNBUFFERED=1
if ! $PY -c "import pytest" 2>/dev/null && [ -d .gpu_deps ]; then
    export PYTHONPATH="$PYTHONPATH:$PWD/.gpu_deps"
fi
START=$(date +%s)
: > "$LOG"

say() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

step() {  # step NAME SECONDS command...
    local name=$1 limit=$2
    shift 2
    say "== $name (limit ${limit}s): $*"
    local t0=$(date +%s)
    timeout -s INT -k 20 "$limit" "$@" >> "$LOG" 2>&1
    local rc=$?
    say "== $name: exit $rc in $(( $(date +%s) - t0 ))s$( [ $rc -eq 124 ] && echo ' (TIMED OUT: results so far are in the junit file)')"
    return 0
}

say "environment"
$PY - >> "$LOG" 2>&1 <<'EOF'
import importlib.util, platform, sys
import torch
print("python", sys.version.split()[0], platform.platform())
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability(),
          "bf16", torch.cuda.is_bf16_supported())
for name in ("pytorch_lightning", "torchmetrics", "sklearn", "pytest", "triton", "lightly", "torchvision", "PIL",
             "rich", "jsonargparse", "matplotlib"):
    spec = importlib.util.find_spec(name)
    version = getattr(__import__(name), "__version__", "?") if spec else "-"
    print(f"  {name:18s} {'yes ' + str(version) if spec else 'MISSING'}")
import lit_robust  # noqa: F401  (must import without the optional packages)
print("lit_robust imports")
EOF

PYTEST=($PY -m pytest -p no:cacheprovider -q -rA -o junit_family=xunit1 -o junit_logging=no)

# (a) the CUDA tests (the overhead benchmark's own smoke test is left out: step (d) runs the benchmark itself)
step cuda_tests 100 "${PYTEST[@]}" -m cuda tests/test_cuda.py -k "not overhead" --junitxml="$OUT/cuda_tests.xml"

# (b) the compatibility matrix on the GPU, eager cells (32-true, 16-mixed, bf16-mixed; reference: eager 32-true)
step matrix_gpu_eager 70 "${PYTEST[@]}" -m cuda tests/test_compat_matrix.py -k "cuda-eager" \
    --junitxml="$OUT/matrix_gpu_eager.xml"

# (d) overhead ratios and absolute (CUDA-synchronised) step times
if [ "${GPU_CHECK_DRY_RUN:-0}" = "1" ]; then
    step overhead 120 $PY benchmarks/overhead.py --device cpu --smoke --synthetic --out "$OUT/overhead_cuda.md"
else
    step overhead 80 $PY benchmarks/overhead.py --device cuda --quick --synthetic --out "$OUT/overhead_cuda.md"
fi

# (e) the documented CLI path on the GPU, as a user runs it (needs jsonargparse and the offline MNIST: set
# GPU_CHECK_DATA to a torchvision root holding MNIST/raw): `lit-robust fit --config ...` then `test --ckpt_path last`,
# ITLM at its config's settings in float32, and PRL(L) with `drop_ratio: auto` under 16-mixed. Extra arguments for
# every fit and test: GPU_CHECK_CLI_ARGS (the dry run shrinks the data with it).
if [ -n "${GPU_CHECK_DATA:-}" ] && $PY -c "import jsonargparse" 2>/dev/null; then
    REPO=$PWD
    DATA=$(cd "$GPU_CHECK_DATA" && pwd)
    if [ "${GPU_CHECK_DRY_RUN:-0}" = "1" ]; then ACC=cpu; HALF=bf16-mixed; else ACC=gpu; HALF=16-mixed; fi
    cli() {  # cli NAME SECONDS CONFIG PRECISION: fit, then test the last checkpoint, in a fresh folder
        local work
        work=$(mktemp -d)
        local args=(--config "$REPO/configs/$3" --data.root "$DATA" --trainer.accelerator "$ACC"
                    --trainer.precision "$4" ${GPU_CHECK_CLI_ARGS:-})
        ( cd "$work" && step "$1_fit" "$2" $PY -m lit_robust.cli fit "${args[@]}" \
          && step "$1_test" 35 $PY -m lit_robust.cli test "${args[@]}" --ckpt_path last \
          && ls -R "$work" | grep -E "report|\.ckpt" >> "$LOG" )
    }
    cli cli_itlm_mnist 75 itlm_mnist.yaml 32-true
    cli cli_prl_auto_mnist 75 prl_auto_mnist.yaml "$HALF"
else
    say "== CLI steps skipped (GPU_CHECK_DATA unset or jsonargparse missing)"
fi

# (c) the matrix with torch.compile (inductor), last: its compiles take the longest; 32-true cells first, then
# 16-mixed, then bf16-mixed
step matrix_gpu_compiled 120 "${PYTEST[@]}" -m cuda tests/test_compat_matrix.py -k "cuda-compiled" \
    --junitxml="$OUT/matrix_gpu_compiled.xml"

say "done in $(( $(date +%s) - START ))s; files:"
ls -l "$OUT" | tee -a "$LOG"
