#!/usr/bin/env bash
# The GPU checks (issue 17), one prepared script for a CUDA machine, under 5 minutes on an H200:
#   1. builds gsplat's CUDA kernels (gsplat compiles them on first use; Hopper only, all cores),
#   2. the CUDA tests (`pytest -m cuda`: gsplat against our CPU/torch rasterizer, values and grads),
#   3. `near bench decoder-gpu`: the paper-size stage 2 (12 + 6 blocks, width 768, ~20k voxels, 512²).
# Usage: tools/gpu_check.sh [OUT_DIR]   (default: benchmarks). Exits non-zero if a step failed.
# On a machine without our pinned environment, put wheels of gsplat==1.5.3 (and what else is
# missing) in .whl/ first: they are installed into /tmp/site and put on PYTHONPATH.
set -u
OUT_DIR=${1:-benchmarks}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
status=0
t0=$(date +%s)
echo "== gsplat kernels (arch $TORCH_CUDA_ARCH_LIST, $MAX_JOBS jobs)"
timeout 330 $PY -c "import gsplat, torch; from gsplat.cuda._backend import _C; assert _C is not None, 'gsplat CUDA build failed'; print('gsplat', gsplat.__version__, 'torch', torch.__version__, torch.cuda.get_device_name(0))" || status=1
echo "   $(( $(date +%s) - t0 )) s"
echo "== pytest -m cuda"
timeout 90 $PY -m pytest -q -m cuda -p no:cacheprovider tests/render/test_rasterize_gsplat.py 2>&1 | tee "$OUT_DIR/gpu_tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "   $(( $(date +%s) - t0 )) s"
echo "== near bench decoder-gpu"
timeout 160 $PY -m near_blender.cli bench decoder-gpu --out "$OUT_DIR" || status=1
echo "   $(( $(date +%s) - t0 )) s, status $status"
exit $status
