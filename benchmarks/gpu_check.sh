#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, torch with CUDA and transformers but only the CPU
# onnxruntime, and no network, it
#   1. installs an onnxruntime-gpu wheel into a folder that shadows the CPU build (PYTHONPATH first),
#   2. installs this project beside it (pip, no network; a folder of links if pip cannot build),
#   3. exports random-weight fp16 model directories of Bark's real shapes (bark-small; bark with --large),
#   4. checks that no heavy node of the four graphs runs on the CPU provider (ONNX Runtime's profiles),
#   5. times each stage of one 13 s segment, onnx-fp16 against transformers fp16 on the same GPU,
#      and measures the price of fp16 (teacher-forced agreement with fp32),
#   6. times the decoding steps with and without CUDA graphs, and many concurrent requests on one model,
#   7. runs the suite's tests marked `gpu` (tests/test_gpu.py).
# It stops at the first failure, saying which step failed; what it measured stays in OUT_DIR.
#
#   benchmarks/gpu_check.sh [--wheel WHEEL] [--large] [--size small|large|tiny] [--no-price]
#                           [--no-tests] [--keep-going] [--cpu] OUT_DIR
#
#   --wheel     the onnxruntime-gpu wheel (default: $BARK_ONNX_ORT_WHEEL, else the one *.whl beside the
#               repository or in it); a wheel split with `split -b 55M W W.part-` is joined first
#   --large     bark's shapes too, after bark-small
#   --cpu       a dry run on a machine without a GPU: no wheel, the CPU provider stands in, torch on
#               the CPU, tiny shapes unless --size says otherwise
#   --keep-going  time the stages even when the placement check fails
#   --no-price  skip the fp16 price (it exports fp32 graphs too)
#   --no-tests  skip the tests marked gpu
# Environment: PYTHON (default python3), BARK_GPU_CHECK_WORK (default /tmp/bark-gpu-check: models,
# profiles, installs; reused by a second run).
# OUT_DIR receives gpu_check.log, steps.tsv, and per size placement-SIZE.json, bench-SIZE.json, bench-SIZE.md,
# graph-steps-SIZE.json, step-parts-SIZE.json, concurrency-SIZE.md.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
WORK=${BARK_GPU_CHECK_WORK:-/tmp/bark-gpu-check}
WHEEL=${BARK_ONNX_ORT_WHEEL:-}
CPU_RUN=0 LARGE=0 PRICE=1 TESTS=1 KEEP_GOING=0 SIZE="" OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --wheel) WHEEL=$2; shift 2 ;;
        --large) LARGE=1; shift ;;
        --size) SIZE=$2; shift 2 ;;
        --cpu) CPU_RUN=1; shift ;;
        --no-price) PRICE=0; shift ;;
        --no-tests) TESTS=0; shift ;;
        --keep-going) KEEP_GOING=1; shift ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) OUT=$1; shift ;;
    esac
done
[ -n "$OUT" ] || { echo "gpu_check: give an output folder (see --help)" >&2; exit 2; }
case "$SIZE" in ""|tiny|small|large) ;; *) echo "gpu_check: --size is tiny, small or large, not $SIZE" >&2; exit 2 ;; esac
SIZES=${SIZE:-$([ "$CPU_RUN" = 1 ] && echo tiny || echo small)}
[ "$LARGE" = 1 ] && SIZES="$SIZES large"
if [ "$CPU_RUN" = 1 ]; then PROVIDERS=cpu TORCH_DEVICE=cpu; else PROVIDERS=cuda,cpu TORCH_DEVICE=cuda; fi

mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
WORK=$(cd "$WORK" && pwd)
LOG=$OUT/gpu_check.log
STEPS=$OUT/steps.tsv
: >"$LOG"
printf 'step\tstatus\tseconds\n' >"$STEPS"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

log() { printf '[%s +%ds] %s\n' "$(date +%H:%M:%S)" "$SECONDS" "$*" | tee -a "$LOG"; }

# step [--soft] NAME COMMAND...: runs it with its output in the log (and on the terminal) and stops at a
# failure; --soft records the failure and goes on
step() {
    local soft=0 name start=$SECONDS status
    [ "$1" = --soft ] && { soft=1; shift; }
    name=$1
    shift
    log "start: $name"
    "$@" 2>&1 | tee -a "$LOG"
    status=${PIPESTATUS[0]}
    printf '%s\t%s\t%d\n' "$name" "$([ "$status" = 0 ] && echo ok || echo "failed ($status)")" \
        "$((SECONDS - start))" >>"$STEPS"
    if [ "$status" != 0 ] && [ "$soft" = 1 ]; then
        log "FAILED: $name (exit $status); going on (--keep-going)"
    elif [ "$status" != 0 ]; then
        log "FAILED: $name (exit $status); what was measured so far is in $OUT"
        exit 1
    else
        log "done: $name ($((SECONDS - start)) s)"
    fi
}

find_wheel() {
    [ -z "$WHEEL" ] && WHEEL=$(ls "$REPO"/onnxruntime_gpu-*.whl "$REPO"/../onnxruntime_gpu-*.whl 2>/dev/null | head -1)
    [ -z "$WHEEL" ] && WHEEL=$(ls "$REPO"/onnxruntime_gpu-*.whl.part-* "$REPO"/../onnxruntime_gpu-*.whl.part-* \
        2>/dev/null | head -1 | sed 's/\.part-[a-z]*$//')
    [ -n "$WHEEL" ] || { echo "no onnxruntime-gpu wheel: give --wheel PATH or set BARK_ONNX_ORT_WHEEL"; return 1; }
    if [ ! -f "$WHEEL" ] && ls "$WHEEL".part-* >/dev/null 2>&1; then
        echo "joining $(ls "$WHEEL".part-* | wc -l) parts of $(basename "$WHEEL")"
        cat "$WHEEL".part-* >"$WORK/$(basename "$WHEEL")" || return 1
        WHEEL=$WORK/$(basename "$WHEEL")
    fi
    [ -f "$WHEEL" ] || { echo "no such wheel: $WHEEL"; return 1; }
}

install_onnxruntime_gpu() {
    find_wheel || return 1
    local site=$WORK/site-ort
    if [ -f "$site/.wheel" ] && [ "$(cat "$site/.wheel")" = "$(basename "$WHEEL")" ]; then
        echo "$(basename "$WHEEL") already installed in $site"
        return 0
    fi
    rm -rf "$site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$WHEEL" || return 1
    basename "$WHEEL" >"$site/.wheel"
}

# CUDA 13 and cuDNN 9 come from the nvidia-* pip packages torch brought (nvidia/cu13/lib, nvidia/cudnn/lib);
# onnxruntime in another folder does not look there by itself, so the dynamic loader is told.
cuda_library_path() {
    "$PY" - <<'EOF'
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit(0)
print(":".join(sorted({d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, "*", "lib"))})))
EOF
}

# This project, without network: pip builds it with the setuptools already installed; where it cannot,
# a link to src/bark_onnx gives the same package.
install_project() {
    local site=$WORK/site-project
    rm -rf "$site"
    if "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$site" "$REPO"; then
        echo "installed with pip into $site"
        return 0
    fi
    echo "pip could not build the project here; linking the sources instead"
    rm -rf "$site" && mkdir -p "$site" || return 1
    ln -s "$REPO/src/bark_onnx" "$site/bark_onnx" || return 1
}

check_imports() {
    "$PY" - "$CPU_RUN" "$WORK" <<'EOF'
import sys
import onnxruntime as ort
import bark_onnx
from bark_onnx.runtime.sessions.providers import cuda_status
cpu_run, work = sys.argv[1] == "1", sys.argv[2]
print(f"onnxruntime {ort.__version__} from {ort.__file__}: {ort.get_available_providers()}")
print(f"bark_onnx from {bark_onnx.__file__}")
if not cpu_run:
    if not ort.__file__.startswith(work):
        sys.exit(f"the CPU onnxruntime shadows the GPU build: {ort.__file__}")
    usable, why = cuda_status()
    print(f"CUDA starts: {usable} {why}")
    if not usable:
        sys.exit(f"CUDA does not start in onnxruntime: {why}")
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, sees a GPU: {torch.cuda.is_available()}")
EOF
}

export_models() {  # $1: size; the random checkpoint (HF layout, for transformers) and its fp16 export
    "$PY" -c "
import sys
from pathlib import Path
from bark_onnx.benchmarks.prepare import prepare
print(prepare(sys.argv[1], ['fp16'], Path(sys.argv[2])))
" "$1" "$WORK/models" && du -sh "$WORK/models/$1"/*
}

check_placement() {  # $1: size
    "$PY" -m bark_onnx.benchmarks.placement "$WORK/models/$1/onnx-fp16" --providers "$PROVIDERS" \
        --out "$OUT/placement-$1.json" --work "$WORK/profiles-$1"
}

time_stages() {  # $1: size; per-stage seconds of one 13 s segment, and the fp16 price unless --no-price
    local status price=()
    [ "$PRICE" = 1 ] || price=(--no-quality)
    "$PY" -m bark_onnx.cli bench stages --size "$1" --backends onnx-fp16,transformers --providers "$PROVIDERS" \
        --torch-device "$TORCH_DEVICE" --stages semantic,coarse,fine,codec --rounds 1 --segment-rounds 1 \
        --cache "$WORK/models" --out "$WORK/bench-$1" "${price[@]}"
    status=$?
    for f in json md; do  # written after the timings (and again after the price), and after a failure too
        [ -f "$WORK/bench-$1/results.$f" ] && cp "$WORK/bench-$1/results.$f" "$OUT/bench-$1.$f"
    done
    return $status
}

graph_steps() {  # $1: size; decoding steps through the full graphs against captured CUDA graphs
    "$PY" -m bark_onnx.benchmarks.graph_steps "$WORK/models/$1/onnx-fp16" --providers "$PROVIDERS" --rounds 2 \
        --out "$OUT/graph-steps-$1.json"
}

step_parts() {  # $1: size; where one decoding step's time goes (replay, logits copy, sampling, engine)
    "$PY" -m bark_onnx.benchmarks.step_parts "$WORK/models/$1/onnx-fp16" --providers "$PROVIDERS" \
        --out "$OUT/step-parts-$1.json"
}

concurrency() {  # $1: size; many requests on one model against the same ones in a row
    local status
    "$PY" -m bark_onnx.cli bench concurrency --size "$1" --precisions fp16 --levels 1,16,64 --tokens 200 \
        --providers "$PROVIDERS" --cache "$WORK/models" --out "$WORK/concurrency-$1"
    status=$?
    [ -f "$WORK/concurrency-$1/concurrency.md" ] && cp "$WORK/concurrency-$1/concurrency.md" "$OUT/concurrency-$1.md"
    return $status
}

gpu_tests() {  # the suite's tests marked gpu, on the GPU build
    (cd "$REPO" && "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -rs)
}

log "gpu_check in $REPO; work folder $WORK; output $OUT; sizes: $SIZES; providers $PROVIDERS; torch on $TORCH_DEVICE"
step "machine" bash -c "nvidia-smi -L 2>/dev/null || echo 'no nvidia-smi'; nproc; $PY --version"
export PYTHONPATH=$WORK/site-project${PYTHONPATH:+:$PYTHONPATH}
if [ "$CPU_RUN" = 0 ]; then
    step "install onnxruntime-gpu" install_onnxruntime_gpu
    export PYTHONPATH=$WORK/site-ort:$PYTHONPATH
    CUDA_LIBS=$(cuda_library_path)
    export LD_LIBRARY_PATH=$CUDA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    log "CUDA libraries from: ${CUDA_LIBS:-nowhere (none in the nvidia-* packages)}"
fi
step "install bark-onnx" install_project
step "imports and providers" check_imports
SOFT=()
[ "$KEEP_GOING" = 1 ] && SOFT=(--soft)
for size in $SIZES; do
    step "export $size fp16" export_models "$size"
    step "${SOFT[@]}" "placement $size" check_placement "$size"
    step "time $size" time_stages "$size"
    step --soft "cuda graphs $size" graph_steps "$size"
    step --soft "step parts $size" step_parts "$size"
    step --soft "concurrency $size" concurrency "$size"
done
[ "$TESTS" = 1 ] && step "tests marked gpu" gpu_tests  # in a --cpu run they skip themselves
log "all steps passed; results in $OUT"
