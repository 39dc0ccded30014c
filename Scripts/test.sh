#!/usr/bin/env bash
# The test suite, everything included: parity with the official SAM 2 on golden fixtures, video
# I/O, checkpoints, the session engine, `sam2 serve` over loopback, its web page in headless
# Chromium (selenium) and a schemathesis fuzz run of its API. Installs what the tests need
# (Debian packages if apt-get is here and they are missing; selenium and schemathesis, pinned,
# in a venv under .build/), then runs `swift test` and states the counts on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(libavformat-dev libavcodec-dev libswscale-dev libavutil-dev libopenblas-dev zlib1g-dev pkg-config
          ffmpeg chromium chromium-driver python3-venv)
if command -v apt-get >/dev/null 2>&1; then
  missing=()
  for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
venv=.build/test-venv
if ! "$venv/bin/python" -c "import selenium, schemathesis" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check selenium==4.51.0 schemathesis==4.32.5
fi
export SAM2_TEST_PYTHON="$PWD/$venv/bin/python" SAM2_REQUIRE_BROWSER=1
swift --version
# XCTest runs the suite; a closing line states its counts plainly (swift test's last line is
# Swift Testing's own, which has no tests here).
log=$(mktemp)
set +e
swift test 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
summary=$(grep -E "^[[:space:]]*Executed [0-9]+ tests?, with" "$log" | tail -1)
if [ -n "$summary" ]; then
  total=$(echo "$summary" | sed -E 's/^[[:space:]]*Executed ([0-9]+) tests?.*/\1/')
  failed=$(echo "$summary" | sed -E 's/.* ([0-9]+) failures?.*/\1/')
  skipped=$(echo "$summary" | grep -oE '[0-9]+ tests? skipped' | grep -oE '^[0-9]+' || echo 0)
  echo "$((total - failed - skipped)) passed, $failed failed, $skipped skipped"
fi
rm -f "$log"
exit "$status"
