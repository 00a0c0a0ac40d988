#!/usr/bin/env bash
# Proves on a machine without a GPU, which reaches a package registry, that the prepared GPU check
# gets through its set-up on a machine that reaches none: bash bench/offline_check.sh [--keep]
#
#  1. a fresh virtual environment from $OFFLINE_PYTHON (default python3) holding only what the GPU
#     machine has: torch ($TORCH_SPEC, default torch==2.13.0) and GPU_HAS (as in gpu_check.sh), less
#     GPU_LACKS where those pulled it in;
#  2. WHEELS_PYTHON=<its X.Y> bash bench/gpu_check.sh --prepare, into a temporary folder (bench/wheels/
#     is left alone);
#  3. with no network (a network namespace of its own, `unshare -n`, where that works), no index and
#     no pip configuration: bash bench/gpu_check.sh --allow-no-gpu with the environment's python
#     first on PATH. Wanted: past the set-up, SKIP (no GPU) for items a-f, no FAIL, exit 0;
#  4. when that Python is not 3.12 and a Python 3.12 is found (python3.12, or pyenv's), the default
#     wheels too (CPython 3.12): in a 3.12 environment with only numpy, pyyaml, click and rich, an
#     offline install of sched's other dependencies and `-e . --no-deps` from them, the imports, and
#     `sched db upgrade` on a new SQLite queue.
# Exit 0 when every step did what it should. The temporary folder is removed unless --keep.
set -u
cd "$(dirname "$0")/.."
BASE_PY=${OFFLINE_PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
GPU_HAS=${GPU_HAS:-"torch transformers accelerate pandas numpy scikit-learn rich click pyyaml matplotlib nvidia-ml-py psutil"}
# what the GPU machine lacks: sched's dependencies beyond GPU_HAS, and theirs
GPU_LACKS=${GPU_LACKS:-"optuna sqlalchemy alembic apscheduler pydantic pydantic-core psycopg psycopg-binary mako greenlet tzlocal colorlog annotated-types typing-inspection"}
MODULES="sqlalchemy pydantic alembic apscheduler optuna"
keep=0
[ "${1:-}" = "--keep" ] && keep=1
start=$SECONDS
work=$(mktemp -d "${TMPDIR:-/tmp}/sched-offline-check-XXXXXX")
[ "$keep" -eq 1 ] || trap 'rm -rf "$work"' EXIT
problems=()

# Runs "$@" as a GPU machine without a registry would: no network where a namespace can be had,
# no index, and none of this machine's pip configuration (config files, find-links, constraints).
offline() {
  local net=()
  if unshare -n true 2>/dev/null; then
    net=(unshare -n)
  elif unshare -rn true 2>/dev/null; then
    net=(unshare -rn)
  fi
  env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT \
    PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 "${net[@]}" "$@"
}
if unshare -n true 2>/dev/null || unshare -rn true 2>/dev/null; then
  echo "offline: own network namespace (no network), PIP_NO_INDEX=1, no pip configuration"
else
  echo "offline: PIP_NO_INDEX=1 and no pip configuration (no network namespace to be had here)"
fi

# 1. the GPU machine's packages, nothing else
echo "== 1. virtual environment from $BASE_PY with $TORCH_SPEC $GPU_HAS"
"$BASE_PY" -m venv "$work/venv" || { echo "offline check: FAIL (no venv from $BASE_PY)"; exit 1; }
VPY=$work/venv/bin/python
ver=$("$VPY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
has=()
for p in $GPU_HAS; do [ "$p" = torch ] || has+=("$p"); done
"$VPY" -m pip install --quiet "$TORCH_SPEC" "${has[@]}" 2>&1 | grep -v "is ignored: it is neither a file nor a directory"
if [ "${PIPESTATUS[0]}" -ne 0 ]; then
  echo "offline check: FAIL (could not install the GPU machine's packages into the environment)"
  exit 1
fi
# What the GPU machine lacks goes, even where one of its packages pulled it in (typer, under
# huggingface-hub, needs pydantic): the offline install must bring it back from the wheels.
mapfile -t pulled < <("$VPY" -m pip list --format=freeze 2>/dev/null | cut -d= -f1 | GPU_LACKS="$GPU_LACKS" "$VPY" -c "
import os, re, sys
norm = lambda name: re.sub(r'[-_.]+', '-', name).lower()
lacks = {norm(n) for n in os.environ['GPU_LACKS'].split()}
print('\\n'.join(n.strip() for n in sys.stdin if norm(n.strip()) in lacks))")
if [ "${#pulled[@]}" -gt 0 ]; then
  echo "removed, as the GPU machine lacks them (pulled in by its packages here): ${pulled[*]}"
  "$VPY" -m pip uninstall --quiet --yes "${pulled[@]}"
fi
echo "Python $ver, $("$VPY" -m pip list --format=freeze 2>/dev/null | wc -l) packages; torch $("$VPY" -c 'import torch; print(torch.__version__)')"
present=$("$VPY" -c "
import importlib.util
print(' '.join(m for m in '$MODULES psycopg'.split() if importlib.util.find_spec(m)))")
[ -z "$present" ] || problems+=("the environment still has $present before the offline install")

# 2. the wheels for this Python
echo "== 2. bash bench/gpu_check.sh --prepare for CPython $ver"
WHEELS_PYTHON=$ver WHEELS_DIR=$work/wheels-$ver PYTHON=$VPY bash bench/gpu_check.sh --prepare 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" | tail -3
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "offline check: FAIL (--prepare)"; exit 1; }

# 3. the check itself, offline
echo "== 3. bash bench/gpu_check.sh --allow-no-gpu, offline"
t0=$SECONDS
offline env PATH="$work/venv/bin:$PATH" WHEELS_DIR="$work/wheels-$ver" bash bench/gpu_check.sh --allow-no-gpu \
  2>&1 | tee "$work/check.log"
code=${PIPESTATUS[0]}
took=$((SECONDS - t0))
skips=$(grep -cE '^\[SKIP\] \([a-f]\) .*: no GPU$' "$work/check.log")
grep -q '^\[PASS\] (setup)' "$work/check.log" || problems+=("setup did not PASS")
grep -q '^\[FAIL\]' "$work/check.log" && problems+=("a FAIL: $(grep -m1 '^\[FAIL\]' "$work/check.log")")
grep -q '^STOP' "$work/check.log" && problems+=("it stopped: $(grep -m1 '^STOP' "$work/check.log")")
[ "$skips" -eq 6 ] || problems+=("$skips of 6 items SKIP (no GPU)")
[ "$code" -eq 0 ] || problems+=("exit $code")
check_line="bench/gpu_check.sh offline with Python $ver: exit $code in $took s, $skips of 6 items SKIP (no GPU)"

# 4. the default wheels (CPython 3.12), when this was another Python
line312=""
if [ "$ver" != 3.12 ]; then
  py312=""
  if python3.12 -V >/dev/null 2>&1; then
    py312=$(command -v python3.12)
  elif command -v pyenv >/dev/null && latest=$(pyenv latest 3.12 2>/dev/null) \
      && [ -x "$(pyenv root)/versions/$latest/bin/python3.12" ]; then
    py312=$(pyenv root)/versions/$latest/bin/python3.12
  fi
  if [ -z "$py312" ]; then
    line312="default wheels (CPython 3.12): not checked, no Python 3.12 here"
  else
    echo "== 4. the default wheels (CPython 3.12), with $py312"
    W=$work/wheels-3.12
    V312=$work/venv312/bin/python
    "$py312" -m venv "$work/venv312"
    "$V312" -m pip install --quiet numpy pyyaml click rich 2>&1 | grep -v "is ignored: it is neither a file nor a directory"
    PYTHON=$V312 WHEELS_DIR=$W bash bench/gpu_check.sh --prepare 2>&1 \
      | grep -v "is ignored: it is neither a file nor a directory" | tail -1
    mapfile -t reqs < <(GPU_HAS="$GPU_HAS" "$V312" - <<'EOF'
import os, re, tomllib
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
has = {norm(n) for n in os.environ["GPU_HAS"].split()}
for req in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    if norm(re.match(r"[A-Za-z0-9_.-]+", req).group()) not in has:
        print(req)
EOF
    )
    if offline "$V312" -m pip install --quiet --no-index --find-links "$W" "${reqs[@]}" \
        && offline "$V312" -m pip install --quiet --no-index --find-links "$W" --no-deps -e . \
        && (cd "$work" && offline "$V312" -c "import ${MODULES// /, }, psycopg" \
          && offline "$V312" -m scheduler.cli --db "sqlite:///$work/q.db" db upgrade); then
      line312="default wheels (CPython 3.12, $(du -sh "$W" | cut -f1)): offline install of ${reqs[*]} and -e . from them, imports and sched db upgrade: ok"
    else
      problems+=("the CPython 3.12 wheels did not install offline or did not import")
      line312="default wheels (CPython 3.12): FAILED"
    fi
  fi
fi

echo
echo "offline check"
echo "  $check_line"
[ -n "$line312" ] && echo "  $line312"
echo "  total $((SECONDS - start)) s"
if [ "${#problems[@]}" -gt 0 ]; then
  printf '  problem: %s\n' "${problems[@]}"
  echo "offline check: FAIL"
  exit 1
fi
echo "offline check: PASS"
