#!/usr/bin/env bash
# Download the official SAM 2 / SAM 2.1 checkpoints into sam2's checkpoint cache and verify
# each file's SHA-256 before it is used.
#
#   Scripts/download_checkpoints.sh                    # sam2.1_hiera_tiny
#   Scripts/download_checkpoints.sh sam2.1_hiera_large sam2_hiera_small
#   Scripts/download_checkpoints.sh edgetam            # EdgeTAM (facebookresearch/EdgeTAM)
#   Scripts/download_checkpoints.sh all
#
# Cache folder: $SAM2_CHECKPOINTS, else ~/.cache/sam2/checkpoints (where `sam2 track --model`
# looks). Digests: a pinned digest in Scripts/checkpoints.sha256 wins; for a model with no pinned
# digest the script asks the official Hugging Face mirror (facebook/<model>) for the SHA-256 it
# publishes for the same file, and refuses the file if they differ or no digest can be had.
# EdgeTAM's checkpoint is a plain file in its git repository, which publishes no SHA-256: it is
# checked against the git blob id the official repository's tree gives it (a SHA-1 of the
# content, pinned below), and its SHA-256 is printed.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
here="$(cd "$(dirname "$0")" && pwd)"
dest="${SAM2_CHECKPOINTS:-$HOME/.cache/sam2/checkpoints}"
mkdir -p "$dest"

# facebookresearch/EdgeTAM at 9cc44bf: `git ls-tree HEAD checkpoints/edgetam.pt`
edgetam_blob=abd54d22bbd22ba3e53cf59a307e59e0f3701be6

url_for() {
  case "$1" in
    edgetam)  echo "https://github.com/facebookresearch/EdgeTAM/raw/main/checkpoints/edgetam.pt" ;;
    sam2.1_*) echo "https://dl.fbaipublicfiles.com/segment_anything_2/092824/$1.pt" ;;
    sam2_*)   echo "https://dl.fbaipublicfiles.com/segment_anything_2/072824/$1.pt" ;;
  esac
}
hf_repo_for() {  # sam2.1_hiera_base_plus -> facebook/sam2.1-hiera-base-plus
  echo "facebook/$(echo "$1" | sed 's/_hiera_/-hiera-/; s/base_plus/base-plus/')"
}
expected_digest() {
  local name=$1 pinned
  pinned=$(awk -v f="$name.pt" '$2 == f {print $1}' "$here/checkpoints.sha256" 2>/dev/null || true)
  if [ -n "$pinned" ]; then echo "$pinned"; return; fi
  # The Hugging Face mirror serves the checkpoint through Git LFS; its ETag is the file's SHA-256.
  curl -fsSI "https://huggingface.co/$(hf_repo_for "$name")/resolve/main/$name.pt" 2>/dev/null \
    | tr -d '\r' | awk 'tolower($1) == "x-linked-etag:" {gsub(/"/, "", $2); print $2}' | head -1
}

models=("$@")
[ ${#models[@]} -eq 0 ] && models=(sam2.1_hiera_tiny)
if [ "${models[0]}" = all ]; then
  models=(sam2.1_hiera_tiny sam2.1_hiera_small sam2.1_hiera_base_plus sam2.1_hiera_large
          sam2_hiera_tiny sam2_hiera_small sam2_hiera_base_plus sam2_hiera_large edgetam)
fi
for m in "${models[@]}"; do
  url=$(url_for "$m")
  case "$m" in sam2.1_hiera_tiny|sam2.1_hiera_small|sam2.1_hiera_base_plus|sam2.1_hiera_large|sam2_hiera_tiny|sam2_hiera_small|sam2_hiera_base_plus|sam2_hiera_large|edgetam) ;;
    *) echo "unknown model '$m' (sam2.1_hiera_{tiny,small,base_plus,large}, sam2_hiera_*, edgetam, or all)" >&2; exit 2 ;;
  esac
  if [ "$m" = edgetam ]; then
    tmp="$dest/.edgetam.pt.partial"
    echo "downloading edgetam from $url"
    curl -fL --retry 3 -C - -o "$tmp" "$url"
    got=$(git hash-object "$tmp")
    if [ "$got" != "$edgetam_blob" ]; then
      echo "error: edgetam.pt has git blob id $got, expected $edgetam_blob (facebookresearch/EdgeTAM); deleted" >&2
      rm -f "$tmp"; exit 1
    fi
    mv "$tmp" "$dest/edgetam.pt"
    echo "ok  $dest/edgetam.pt  git blob $got  sha256 $(sha256sum "$dest/edgetam.pt" | awk '{print $1}')"
    continue
  fi
  want=$(expected_digest "$m")
  if [ -z "$want" ]; then
    echo "error: no SHA-256 known for $m (not pinned in Scripts/checkpoints.sha256 and the mirror did not answer); not downloading" >&2
    exit 1
  fi
  tmp="$dest/.$m.pt.partial"
  echo "downloading $m from $url"
  curl -fL --retry 3 -C - -o "$tmp" "$url"
  got=$(sha256sum "$tmp" | awk '{print $1}')
  if [ "$got" != "$want" ]; then
    echo "error: $m.pt has SHA-256 $got, expected $want; deleted" >&2
    rm -f "$tmp"; exit 1
  fi
  mv "$tmp" "$dest/$m.pt"
  echo "ok  $dest/$m.pt  sha256 $got"
done
