#!/usr/bin/env bash
# Benchmark the image predictor and mask generator against the official implementation on this
# machine, in one run.
#
#   Scripts/bench_image.sh [ROUNDS] [VIDEO] [BATCH_COUNT]
#
# Image: frame 0 of VIDEO (default ../shared/videos/01_dog.mp4, 1280x720) as PNG; batch: its first
# BATCH_COUNT frames (default 100) as PNG files. Model: sam2.1_hiera_t at 1024 with the checkpoint
# of ../shared/fixtures/tiny_dog (seeded random weights in the official format; timing is the same
# as with real weights) or $SAM2_BENCH_CHECKPOINT. Runs `sam2 bench --image` (release) and
# Scripts/bench_image_reference.py (official sam2 1.1.0, PyTorch CPU) alternately for ROUNDS rounds
# (default 2), and prints per round: click to masks (ms), segment everything at 32x32 points (s),
# one box per image (images/s), and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
video=${2:-../shared/videos/01_dog.mp4}
count=${3:-100}
ckpt=${SAM2_BENCH_CHECKPOINT:-../shared/fixtures/tiny_dog/checkpoint.pt}
[ -f "$video" ] || { echo "no video at $video (pass one as the second argument)" >&2; exit 2; }
[ -f "$ckpt" ] || { echo "no checkpoint at $ckpt (set SAM2_BENCH_CHECKPOINT)" >&2; exit 2; }
py=""
for cand in "${SAM2_REFERENCE_PYTHON:-}" ../venv/bin/python /work/venv/bin/python python3; do
  [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import sam2, torch" 2>/dev/null && { py=$cand; break; }
done
[ -n "$py" ] || echo "(no Python with the official sam2 package found: timing this repository only)"

swift build -c release >/dev/null
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mkdir -p "$out/batch"
ffmpeg -loglevel error -i "$video" -frames:v "$count" "$out/batch/%05d.png"
image="$out/batch/00001.png"
for r in $(seq 1 "$rounds"); do
  echo "== round $r: sam2 (this repository, release) =="
  .build/release/sam2 bench --image "$image" --batch "$out/batch" --batch-count "$count" --clicks 21 \
      --model sam2.1_hiera_tiny --checkpoint "$ckpt" | tee "$out/ours$r.txt"
  [ -n "$py" ] || continue
  echo "== round $r: official sam2 ($("$py" -c 'import torch; print("torch", torch.__version__)')) =="
  "$py" Scripts/bench_image_reference.py --checkpoint "$ckpt" --image "$image" --batch "$out/batch" \
      --batch-count "$count" --clicks 21 2>/dev/null | tee "$out/ref$r.txt"
done
[ -n "$py" ] || exit 0
echo "== same run, per round: sam2 / official =="
value() { awk -v k="$1" '$1 == "RESULT" { split($2, kv, "="); if (kv[1] == k) print kv[2] }' "$2"; }
for r in $(seq 1 "$rounds"); do
  for k in click_ms everything_s batch_images_per_s; do
    a=$(value $k "$out/ours$r.txt"); b=$(value $k "$out/ref$r.txt")
    awk -v r="$r" -v k="$k" -v a="$a" -v b="$b" 'BEGIN { printf "round %d: %-20s sam2 %9.3f  official %9.3f  ratio %.3f\n", r, k, a, b, a / b }'
  done
done
