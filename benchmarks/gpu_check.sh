#!/usr/bin/env bash
# GPU readiness check (issue 17, item 5): one run on a CUDA machine, results under $OUT (6 files).
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh        # from the repository root
#
# Needs python3 with torch (CUDA), pytorch-lightning, torchmetrics, scikit-learn and pytest; lightly, torchvision,
# jsonargparse, rich and the offline MNIST are optional (what needs them is skipped; the benchmark uses synthetic
# MNIST-shaped data). If pytest is missing, a folder `.gpu_deps` holding it (`pip install --target .gpu_deps pytest
# exceptiongroup tomli`) is put on the path. Every step has its own time limit (SIGINT first, so pytest still
# writes its junit file); the whole script stays under ~6 minutes. GPU_CHECK_DRY_RUN=1 runs it on a machine
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
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
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
step cuda_tests 70 "${PYTEST[@]}" -m cuda tests/test_cuda.py -k "not overhead" --junitxml="$OUT/cuda_tests.xml"

# (b) the compatibility matrix on the GPU, eager cells (32-true, 16-mixed, bf16-mixed; reference: eager 32-true)
step matrix_gpu_eager 70 "${PYTEST[@]}" -m cuda tests/test_compat_matrix.py -k "cuda-eager" \
    --junitxml="$OUT/matrix_gpu_eager.xml"

# (c) the matrix with torch.compile (inductor); 32-true cells first, then 16-mixed, then bf16-mixed
step matrix_gpu_compiled 140 "${PYTEST[@]}" -m cuda tests/test_compat_matrix.py -k "cuda-compiled" \
    --junitxml="$OUT/matrix_gpu_compiled.xml"

# (d) overhead ratios and absolute (CUDA-synchronised) step times
if [ "${GPU_CHECK_DRY_RUN:-0}" = "1" ]; then
    step overhead 120 $PY benchmarks/overhead.py --device cpu --smoke --synthetic --out "$OUT/overhead_cuda.md"
else
    step overhead 80 $PY benchmarks/overhead.py --device cuda --quick --synthetic --out "$OUT/overhead_cuda.md"
fi

say "done in $(( $(date +%s) - START ))s; files:"
ls -l "$OUT" | tee -a "$LOG"
