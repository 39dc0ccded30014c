#!/usr/bin/env bash
# Benchmark sam2 against the official implementation on this machine, in one run.
#
#   Scripts/bench.sh [FRAMES] [VIDEO] [ROUNDS]
#
# Builds sam2 in release mode and runs `sam2 bench` (sam2.1_hiera_t at 1024, one click on frame 0,
# then tracking) with the checkpoint from ../shared/fixtures/tiny_dog (seeded random weights in the
# official format; timing is the same as with real weights) or $SAM2_BENCH_CHECKPOINT. When a Python
# with the official `sam2` package is found ($SAM2_REFERENCE_PYTHON, ../venv/bin/python, python3),
# it also runs ../shared/reference/bench_reference.py on the same frames, alternating with ours for
# ROUNDS rounds (default 2), and prints the ratio per round and its median.
set -euo pipefail
cd "$(dirname "$0")/.."
frames=${1:-12}
rounds=${3:-2}
shared=../shared
video=${2:-$shared/videos/01_dog.mp4}
fixture=$shared/fixtures/tiny_dog
ckpt=${SAM2_BENCH_CHECKPOINT:-$fixture/checkpoint.pt}
config=${SAM2_BENCH_CONFIG:-$fixture/config.yaml}
[ -f "$video" ] || { echo "no video at $video (pass one as the second argument)" >&2; exit 2; }
[ -f "$ckpt" ] || { echo "no checkpoint at $ckpt (set SAM2_BENCH_CHECKPOINT)" >&2; exit 2; }

swift build -c release >/dev/null
. Scripts/reference_python.sh
py=$(reference_python "sam2, torch")
[ -n "$py" ] || echo "(no Python with the official sam2 package found: timing this repository only)"

# Shared machines drift by 10-20% over minutes, so the two implementations alternate, round by
# round, and the ratio is taken per round.
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq 1 "$rounds"); do
  echo "== round $r: sam2 (this repository, release) =="
  .build/release/sam2 bench --video "$video" --frames "$frames" --config "$config" --checkpoint "$ckpt" | tee "$out/ours$r.txt"
  [ -n "$py" ] || continue
  echo "== round $r: official sam2 ($("$py" -c 'import sam2, torch; print("torch", torch.__version__)')) =="
  "$py" "$shared/reference/bench_reference.py" --config configs/sam2.1/sam2.1_hiera_t.yaml \
      --checkpoint "$ckpt" --video "$video" --frames "$frames" 2>/dev/null | tee "$out/ref$r.txt"
done
# The official implementation's arithmetic for a steady-state frame of sam2.1_hiera_t at 1024 (one
# object): 913 GFLOP (memory attention 605, image encoder 291, the rest 17). Only for that model.
if [ -z "${SAM2_BENCH_CONFIG:-}" ]; then
  echo "== throughput against the official 913 GFLOP per frame =="
  for r in $(seq 1 "$rounds"); do
    a=$(awk -F= '/^RESULT median_s_per_frame=/{print $2}' "$out/ours$r.txt")
    g=$(awk '/^machine:/{for (i = 1; i <= NF; i++) if ($i == "sgemm") print $(i + 1)}' "$out/ours$r.txt")
    awk -v r="$r" -v a="$a" -v g="$g" 'BEGIN { printf "round %d: 913 GFLOP / %.3f s = %.1f GFLOP/s = %.0f%% of the sgemm rate (%.1f GFLOP/s)\n", r, a, 913 / a, 100 * 913 / a / g, g }'
  done
fi
[ -n "$py" ] || exit 0
echo "== ratio (median s per tracked frame, same run) =="
for r in $(seq 1 "$rounds"); do
  a=$(awk -F= '/^RESULT median_s_per_frame=/{print $2}' "$out/ours$r.txt")
  b=$(awk '/^propagate_per_frame_s/{print $5}' "$out/ref$r.txt")
  awk -v r="$r" -v a="$a" -v b="$b" 'BEGIN { printf "round %d: sam2 %.3f s/frame vs official %.3f s/frame: %.2fx the official time\n", r, a, b, a / b }'
done | tee "$out/ratios.txt"
awk '{ print $(NF-3) }' "$out/ratios.txt" | sed 's/x$//' | sort -n | awk '{ v[NR] = $1 } END { printf "median ratio over %d rounds: %.2fx\n", NR, (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
