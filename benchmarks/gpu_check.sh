#!/usr/bin/env bash
# GPU readiness check (issue 17, item 5): runs on a CUDA machine, results under $OUT (up to 8 files).
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh        # from the repository root
#
# Needs python3 with torch (CUDA), pytorch-lightning, torchmetrics, scikit-learn and pytest; lightly, torchvision,
# jsonargparse, rich and the offline MNIST are optional (what needs them is skipped; the benchmark uses synthetic
# MNIST-shaped data). If pytest is missing, a folder `.gpu_deps` holding it (`pip install --target .gpu_deps pytest
# exceptiongroup tomli`) is put on the path. Every step has its own time limit (SIGINT first, so pytest still
# writes its junit file, and pytest-timeout, where installed, limits each test to 60 s). All steps take about 15
# minutes, more than one 10-minute device call: GPU_CHECK_STEPS picks some of "tests eager overhead cli compiled"
# ("compiled" is compiled-32-true, compiled-16-mixed and compiled-bf16-mixed, up to 4 minutes each), e.g.
# GPU_CHECK_STEPS="tests eager overhead cli compiled-32-true", then "compiled-16-mixed compiled-bf16-mixed".
# GPU_CHECK_DRY_RUN=1 runs it on a machine
# without CUDA (the CUDA tests skip, the benchmark runs on the CPU in smoke mode) to check the plumbing.
#
# Files: gpu_check.log (environment, every step's output and exit status), cuda_tests.xml (tests/test_cuda.py),
# matrix_gpu_eager.xml and matrix_gpu_compiled_<precision>.xml (tests/test_compat_matrix.py's cuda cells; each cell's largest
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
    say "== $name: exit $rc in $(( $(date +%s) - t0 ))s$( [ $rc -eq 124 ] || [ $rc -eq 137 ] && echo ' (TIMED OUT)')"
    return $rc  # the CLI steps chain `fit && test`: a failed or cut-off fit must not be tested (an audit's dry run
                # tested a fit stopped at epoch 21 of 30 and logged its accuracy as if it had finished)
}
wants() { [[ " ${GPU_CHECK_STEPS:-tests eager overhead cli compiled} " == *" $1 "* ]]; }

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
# a limit per test where pytest-timeout is installed: the step's own limit sends SIGINT, which Lightning turns into
# SystemExit(1) inside a fit, so pytest goes on until the SIGKILL 20 s later and writes no junit file at all
if $PY -c "import pytest_timeout" 2>/dev/null; then PYTEST+=(--timeout 60); fi

# (a) the CUDA tests (the overhead benchmark's own smoke test is left out: step (d) runs the benchmark itself)
wants tests && step cuda_tests 100 "${PYTEST[@]}" -m cuda tests/test_cuda.py -k "not overhead" --junitxml="$OUT/cuda_tests.xml"

# (b) the compatibility matrix on the GPU, eager cells (32-true, 16-mixed, bf16-mixed; reference: eager 32-true)
wants eager && step matrix_gpu_eager 70 "${PYTEST[@]}" -m cuda tests/test_compat_matrix.py -k "cuda-eager" \
    --junitxml="$OUT/matrix_gpu_eager.xml"

# (d) overhead ratios and absolute (CUDA-synchronised) step times
if ! wants overhead; then
    :
elif [ "${GPU_CHECK_DRY_RUN:-0}" = "1" ]; then
    step overhead 120 $PY benchmarks/overhead.py --device cpu --smoke --synthetic --out "$OUT/overhead_cuda.md"
else
    step overhead 80 $PY benchmarks/overhead.py --device cuda --quick --synthetic --out "$OUT/overhead_cuda.md"
fi

# (e) the documented CLI path on the GPU, as a user runs it (needs jsonargparse and the offline MNIST: set
# GPU_CHECK_DATA to a torchvision root holding MNIST/raw): `lit-robust fit --config ...` then `test --ckpt_path last`,
# ITLM at its config's settings in float32, and PRL(L) with `drop_ratio: auto` under 16-mixed. Extra arguments for
# every fit and test: GPU_CHECK_CLI_ARGS (the dry run shrinks the data with it).
if ! wants cli; then
    :
elif [ -n "${GPU_CHECK_DATA:-}" ] && $PY -c "import jsonargparse" 2>/dev/null; then
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

# (c) the matrix with torch.compile (inductor), last: its compiles take the longest. One process per precision, with
# inductor's on-disk caches off and a fresh cache folder: in the first GPU run (one process for all three) 8 of the 14
# compiled bf16-mixed cells gave exactly their 16-mixed twin's deviation, 5 of them after a TorchDynamo reset; run
# apart, each precision's cells cannot reuse another's compiled code.
for p in 32-true 16-mixed bf16-mixed; do
    if wants compiled || wants "compiled-$p"; then
        TORCHINDUCTOR_FX_GRAPH_CACHE=0 TORCHINDUCTOR_AUTOGRAD_CACHE=0 TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) \
            step "matrix_gpu_compiled_$p" 240 "${PYTEST[@]}" -m cuda tests/test_compat_matrix.py -k "cuda-compiled-$p-" \
            --junitxml="$OUT/matrix_gpu_compiled_$p.xml"
    fi
done

say "done in $(( $(date +%s) - START ))s; files:"
ls -l "$OUT" | tee -a "$LOG"
