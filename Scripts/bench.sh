#!/usr/bin/env bash
# Benchmark sam2 against the official implementation on this machine, in one run.
#
#   Scripts/bench.sh [FRAMES] [VIDEO]
#
# Builds sam2 in release mode and runs `sam2 bench` (sam2.1_hiera_t at 1024, one click on frame 0,
# then tracking) with the checkpoint from ../shared/fixtures/tiny_dog (seeded random weights in the
# official format; timing is the same as with real weights) or $SAM2_BENCH_CHECKPOINT. When a Python
# with the official `sam2` package is found ($SAM2_REFERENCE_PYTHON, ../venv/bin/python, python3),
# it also runs ../shared/reference/bench_reference.py on the same frames and prints the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
frames=${1:-12}
shared=../shared
video=${2:-$shared/videos/01_dog.mp4}
fixture=$shared/fixtures/tiny_dog
ckpt=${SAM2_BENCH_CHECKPOINT:-$fixture/checkpoint.pt}
config=${SAM2_BENCH_CONFIG:-$fixture/config.yaml}
[ -f "$video" ] || { echo "no video at $video (pass one as the second argument)" >&2; exit 2; }
[ -f "$ckpt" ] || { echo "no checkpoint at $ckpt (set SAM2_BENCH_CHECKPOINT)" >&2; exit 2; }

swift build -c release >/dev/null
echo "== sam2 (this repository, release) =="
.build/release/sam2 bench --video "$video" --frames "$frames" --config "$config" --checkpoint "$ckpt" | tee /tmp/sam2-bench.txt
ours=$(awk -F= '/^RESULT median_s_per_frame=/{print $2}' /tmp/sam2-bench.txt)

py=""
for cand in "${SAM2_REFERENCE_PYTHON:-}" ../venv/bin/python /work/venv/bin/python python3; do
  [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import sam2, torch" 2>/dev/null && { py=$cand; break; }
done
if [ -z "$py" ]; then
  echo "(no Python with the official sam2 package found: skipping the reference run)"
  exit 0
fi
echo "== official sam2 ($("$py" -c 'import sam2, torch; print("torch", torch.__version__)')) =="
"$py" "$shared/reference/bench_reference.py" --config configs/sam2.1/sam2.1_hiera_t.yaml \
    --checkpoint "$ckpt" --video "$video" --frames "$frames" | tee /tmp/sam2-ref.txt
ref=$(awk '/^propagate_per_frame_s/{print $5}' /tmp/sam2-ref.txt)
echo "== ratio =="
awk -v a="$ours" -v b="$ref" 'BEGIN { printf "sam2 %.3f s/frame vs official %.3f s/frame (median): %.2fx the official time\n", a, b, a / b }'
