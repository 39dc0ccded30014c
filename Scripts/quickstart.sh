#!/usr/bin/env bash
# Fresh machine to first masks: install the system libraries, build sam2 (release), and track
# an object through the bundled synthetic clip with the bundled small test model.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null 2>&1 && ! pkg-config --exists libavformat openblas zlib 2>/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libavformat-dev libavcodec-dev \
      libswscale-dev libavutil-dev libopenblas-dev zlib1g-dev pkg-config >/dev/null
fi
swift build -c release
fixture=Tests/SAM2Tests/Fixtures/micro_synth
out=${1:-out/quickstart}
mkdir -p "$out"
.build/release/sam2 track Tests/SAM2Tests/Fixtures/synth.mp4 \
  --config "$fixture/config.yaml" --checkpoint "$fixture/checkpoint.pt" \
  --frame 0 --point 240,135 --frame 3 --point 240,135 --neg 100,200 \
  --output "$out/masks" --overlay "$out/overlay.mp4" --overwrite
echo "masks: $out/masks/1/*.png   overlay: $out/overlay.mp4"
