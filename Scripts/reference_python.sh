# Sourced by the benchmark scripts: `reference_python MODULES` prints the first Python that can
# import MODULES (comma-separated): $SAM2_REFERENCE_PYTHON, ../venv/bin/python,
# /work/venv/bin/python, python3; nothing when none can.
reference_python() {
  local cand
  for cand in "${SAM2_REFERENCE_PYTHON:-}" ../venv/bin/python /work/venv/bin/python python3; do
    [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import $1" 2>/dev/null && { echo "$cand"; return 0; }
  done
  return 0
}
