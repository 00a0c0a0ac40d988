#!/usr/bin/env bash
# The prepared GPU check, on a machine with an NVIDIA GPU: bash bench/gpu_check.sh [--keep]
#
# Installs what it needs (this checkout editable, nvidia-ml-py; torch already installed is kept),
# prints nvidia-smi, then runs bench/gpu_check.py (items a-f, PASS/FAIL/SKIP, a summary).
# Done within 8 minutes whatever happens: every step has a `timeout`. Needs no network beyond the
# package registry (no model or data downloads: the models are built from configs).
# Exit 0 only when no item FAILed.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python || command -v python3)}
TOTAL=470  # seconds for everything; 8 minutes less a margin
start=$SECONDS

echo "== install (at most 150 s)"
timeout 150 "$PY" -m pip install --quiet -e . nvidia-ml-py \
  || echo "pip install: exit $? (continuing with what is installed)"

echo "== nvidia-smi"
timeout 20 nvidia-smi || echo "nvidia-smi: exit $? (no driver or no GPU?)"

left=$((TOTAL - (SECONDS - start)))
echo "== bench/gpu_check.py (budget $((left - 25)) s)"
# The script stops its own workers at its budget; `timeout` is the backstop if it hangs.
timeout --kill-after=5 "$((left - 5))" "$PY" bench/gpu_check.py --budget "$((left - 25))" "$@"
code=$?
if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
  echo "FAIL: bench/gpu_check.py ran past its time and was stopped"
fi
echo "== done in $((SECONDS - start)) s, exit $code"
exit "$code"
