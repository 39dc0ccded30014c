#!/usr/bin/env bash
# EdgeTAM's speed on this machine, in one run: EdgeTAM in sam2, the official EdgeTAM code, and
# sam2.1_hiera_tiny in sam2, alternating round by round (this shared machine drifts by 10-20%).
#
#   Scripts/bench_edgetam.sh [FRAMES] [VIDEO] [ROUNDS]
#
# EDGETAM_CHECKPOINT: the full-size EdgeTAM checkpoint (default: the downloaded edgetam.pt;
#   random weights in the official format time the same, e.g. one made by make_edgetam_fixture.py).
# TINY_CHECKPOINT: sam2.1_hiera_tiny's (default ../shared/fixtures/tiny_dog/checkpoint.pt).
# EDGETAM_REPO: a checkout of facebookresearch/EdgeTAM, and SAM2_REFERENCE_PYTHON a Python with
#   torch and timm, for the official side (skipped when absent).
# Prints per round: seconds per tracked frame, the ratios, and the distance from the fp32 floor
# (144 GFLOP per frame at the sgemm rate `sam2 bench` measures in the same run).
set -euo pipefail
cd "$(dirname "$0")/.."
frames=${1:-12}
video=${2:-../shared/videos/01_dog.mp4}
rounds=${3:-2}
edgetam=${EDGETAM_CHECKPOINT:-${XDG_CACHE_HOME:-$HOME/.cache}/sam2/edgetam.pt}
tiny=${TINY_CHECKPOINT:-../shared/fixtures/tiny_dog/checkpoint.pt}
repo=${EDGETAM_REPO:-../EdgeTAM}
[ -f "$video" ] || { echo "no video at $video (pass one as the second argument)" >&2; exit 2; }
[ -f "$edgetam" ] || { echo "no EdgeTAM checkpoint at $edgetam (set EDGETAM_CHECKPOINT)" >&2; exit 2; }
[ -f "$tiny" ] || { echo "no sam2.1_hiera_tiny checkpoint at $tiny (set TINY_CHECKPOINT)" >&2; exit 2; }
swift build -c release >/dev/null
. Scripts/reference_python.sh
py=$(reference_python "torch, timm")
[ -n "$py" ] && [ -d "$repo/sam2" ] || { echo "(no EdgeTAM checkout at $repo or no Python with torch and timm: sam2 only)"; py=""; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq 1 "$rounds"); do
  echo "== round $r: EdgeTAM in sam2 =="
  .build/release/sam2 bench --video "$video" --frames "$frames" --model edgetam --checkpoint "$edgetam" | tee "$out/edgetam$r.txt"
  if [ -n "$py" ]; then
    echo "== round $r: official EdgeTAM =="
    "$py" Scripts/bench_edgetam_reference.py "$repo" "$edgetam" "$video" "$frames" 2>/dev/null | tee "$out/official$r.txt"
  fi
  echo "== round $r: sam2.1_hiera_tiny in sam2 =="
  .build/release/sam2 bench --video "$video" --frames "$frames" --model sam2.1_hiera_tiny --checkpoint "$tiny" | tee "$out/tiny$r.txt"
done
echo "== summary (median s per tracked frame, same run) =="
for r in $(seq 1 "$rounds"); do
  e=$(awk -F= '/^RESULT median_s_per_frame=/{print $2}' "$out/edgetam$r.txt")
  t=$(awk -F= '/^RESULT median_s_per_frame=/{print $2}' "$out/tiny$r.txt")
  g=$(awk '/^machine:/{for (i = 1; i <= NF; i++) if ($i == "sgemm") print $(i + 1)}' "$out/edgetam$r.txt")
  o=$( [ -f "$out/official$r.txt" ] && sed -n 's/.*official_edgetam_s_per_frame=\([0-9.]*\).*/\1/p' "$out/official$r.txt" || echo 0)
  awk -v r="$r" -v e="$e" -v t="$t" -v g="$g" -v o="$o" 'BEGIN {
    printf "round %d: EdgeTAM %.3f s (%.2f FPS, 144 GFLOP at %.0f GFLOP/s); tiny %.3f s: %.2fx faster; floor %.3f s at %.1f GFLOP/s: %.2fx", r, e, 1 / e, 144 / e, t, t / e, 144 / g, g, e / (144 / g)
    if (o > 0) printf "; official EdgeTAM %.3f s: %.2fx its time", o, e / o
    printf "\n" }'
done
