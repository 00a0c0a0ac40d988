#!/usr/bin/env bash
# The prepared GPU check, on a machine with an NVIDIA GPU: bash bench/gpu_check.sh [--keep]
#
# Installs this checkout editable (from bench/wheels/ with no index when that folder is there, else
# from the package registry; torch and the other installed packages are kept), stops at once if
# sched's dependencies still do not import, prints nvidia-smi, then runs bench/gpu_check.py (items
# a-f, PASS/FAIL/SKIP, a summary). Done within 8 minutes whatever happens: every step has a
# `timeout`. No model or data downloads: the models are built from configs.
# Exit 0 only when no item FAILed; 2 when the set-up stopped it.
#
# For a GPU machine without a package registry, first, on a machine with one:
#   bash bench/gpu_check.sh --prepare
# downloads into bench/wheels/ the wheels of every dependency such a machine lacks (for CPython
# $WHEELS_PYTHON, default 3.12, manylinux x86_64), with their own dependencies and the build backend
# of `pip install -e .`, then exits; carry the checkout with bench/wheels/ to the GPU machine.
#
# Variables: PYTHON (default: python on PATH), WHEELS_DIR (default bench/wheels), WHEELS_PYTHON
# (default 3.12), GPU_HAS (the packages the GPU machine has already: left out of the wheels).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python || command -v python3)}
WHEELS=${WHEELS_DIR:-bench/wheels}
WHEELS_PYTHON=${WHEELS_PYTHON:-3.12}
WHEELS_PLATFORMS=${WHEELS_PLATFORMS:-"manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64 manylinux_2_34_x86_64"}
GPU_HAS=${GPU_HAS:-"torch transformers accelerate pandas numpy scikit-learn rich click pyyaml matplotlib nvidia-ml-py psutil"}
TOTAL=470  # seconds for everything; 8 minutes less a margin
start=$SECONDS

prepare=0
args=()
for a in "$@"; do
  if [ "$a" = "--prepare" ]; then prepare=1; else args+=("$a"); fi
done

if [ "$prepare" -eq 1 ]; then
  # pyproject.toml's dependencies less GPU_HAS, resolved together (with their own dependencies, the
  # build backend and wheel) for the target Python and platform, then downloaded at those versions,
  # less GPU_HAS again. Small dependencies the GPU machine may hold at too old a version stay in.
  echo "== prepare $WHEELS for CPython $WHEELS_PYTHON, manylinux x86_64 (at most 300 s)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  abi="cp${WHEELS_PYTHON/./}"
  target=(--only-binary=:all: --python-version "$WHEELS_PYTHON" --implementation cp --abi "$abi")
  for p in $WHEELS_PLATFORMS; do target+=(--platform "$p"); done
  mapfile -t wanted < <(GPU_HAS="$GPU_HAS" "$PY" - <<'EOF'
import os, re, tomllib
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
has = {norm(n) for n in os.environ["GPU_HAS"].split()}
with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)
for req in project["project"]["dependencies"]:
    if norm(re.match(r"[A-Za-z0-9_.-]+", req).group()) not in has:
        print(req)
for req in project["build-system"]["requires"]:
    print(req)
print("wheel")
EOF
  )
  echo "requirements: ${wanted[*]}"
  if ! timeout 200 "$PY" -m pip install --quiet --dry-run --ignore-installed --report "$tmp/report.json" \
      --target "$tmp/target" "${target[@]}" "${wanted[@]}"; then
    echo "STOP: pip could not resolve the requirements for CPython $WHEELS_PYTHON (no registry here? pip >= 22.2 needed)"
    exit 2
  fi
  mapfile -t pins < <(GPU_HAS="$GPU_HAS" "$PY" - "$tmp/report.json" <<'EOF'
import json, os, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
has = {norm(n) for n in os.environ["GPU_HAS"].split()}
for item in json.load(open(sys.argv[1]))["install"]:
    meta = item["metadata"]
    if norm(meta["name"]) not in has:
        print(f"{meta['name']}=={meta['version']}")
EOF
  )
  mkdir -p "$WHEELS"
  rm -f "$WHEELS"/*.whl
  if ! timeout 200 "$PY" -m pip download --quiet --no-deps -d "$WHEELS" "${target[@]}" "${pins[@]}"; then
    echo "STOP: pip download failed"
    exit 2
  fi
  ls -1 "$WHEELS"
  size=$(du -sm "$WHEELS" | cut -f1)
  echo "== $WHEELS: $(ls "$WHEELS"/*.whl | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1) (left out, the GPU machine has them: $GPU_HAS)"
  if [ "$size" -ge 60 ]; then
    echo "STOP: $WHEELS is $size MiB, over 60 MiB: too big to travel with the checkout"
    exit 2
  fi
  exit 0
fi

# --break-system-packages for a system Python (PEP 668), outside a virtual environment, where pip knows it
pip_flags=()
if "$PY" -c 'import sys; sys.exit(sys.prefix != sys.base_prefix)' \
    && "$PY" -m pip install --help 2>/dev/null | grep -q -- --break-system-packages; then
  pip_flags+=(--break-system-packages)
fi
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  echo "== install from $WHEELS, no index (at most 150 s)"
  timeout 150 "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" ${pip_flags[@]+"${pip_flags[@]}"} -e . \
    || echo "pip install: exit $? (continuing with what is installed)"
else
  echo "== install from the package registry (no $WHEELS: without a registry, run \`bash bench/gpu_check.sh --prepare\` where there is one) (at most 150 s)"
  timeout 150 "$PY" -m pip install --quiet ${pip_flags[@]+"${pip_flags[@]}"} -e . nvidia-ml-py \
    || echo "pip install: exit $? (continuing with what is installed)"
fi
missing=$("$PY" -c '
import importlib
missing = []
for name in ("sqlalchemy", "pydantic", "alembic", "apscheduler", "optuna"):
    try:
        importlib.import_module(name)
    except Exception as exc:
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
print("; ".join(missing))' 2>/dev/null || echo "(python failed)")
if [ -n "$missing" ]; then
  echo "STOP: sched's dependencies do not import: $missing. Run \`bash bench/gpu_check.sh --prepare\` on a machine with a package registry and bring bench/wheels/ here with the checkout"
  exit 2
fi

echo "== nvidia-smi"
timeout 20 nvidia-smi || echo "nvidia-smi: exit $? (no driver or no GPU?)"

left=$((TOTAL - (SECONDS - start)))
echo "== bench/gpu_check.py (budget $((left - 25)) s)"
# The script stops its own workers at its budget; `timeout` is the backstop if it hangs.
timeout --kill-after=5 "$((left - 5))" "$PY" bench/gpu_check.py --budget "$((left - 25))" ${args[@]+"${args[@]}"}
code=$?
if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
  echo "FAIL: bench/gpu_check.py ran past its time and was stopped"
fi
echo "== done in $((SECONDS - start)) s, exit $code"
exit "$code"
