#!/usr/bin/env bash
# libFuzzer (with AddressSanitizer) over the checkpoint readers: the restricted unpickler,
# zip/.pt checkpoints and safetensors. Optional, not built by `swift build`; the bounded,
# seeded mutation tests in Tests/SAM2Tests/FuzzTests.swift run in CI instead.
#
#   Scripts/fuzz-checkpoint.sh [seconds=60] [libFuzzer options...]
#
# Seeds come from the committed test checkpoint; crashes are written to .build-fuzz/crash-*.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}; shift || true
out=.build-fuzz
mkdir -p "$out/corpus"
flags=(-parse-as-library -sanitize=fuzzer,address -g -O)

# SAM2Tensor's Tensor type, then the readers compiled into one module with the entry point.
swiftc "${flags[@]}" -emit-module -emit-library -static -module-name SAM2Tensor \
    Sources/SAM2Tensor/Tensor.swift -emit-module-path "$out/SAM2Tensor.swiftmodule" -o "$out/libSAM2Tensor.a"
swiftc "${flags[@]}" -module-name SAM2Checkpoint -I "$out" -L "$out" -lSAM2Tensor \
    Sources/SAM2Checkpoint/{CheckpointError,Pickle,ZipArchive,TorchCheckpoint,Safetensors}.swift \
    Scripts/fuzz/FuzzCheckpoint.swift -o "$out/fuzz-checkpoint"

# Seeds: the fixture's pickle (selector 0), a small .pt (1) and a safetensors file (2).
python3 - "$out/corpus" <<'PY'
import sys, zipfile, struct, json
out = sys.argv[1]
z = zipfile.ZipFile("Tests/SAM2Tests/Fixtures/micro_synth/checkpoint.pt")
pkl = next(n for n in z.namelist() if n.endswith("data.pkl"))
open(f"{out}/pickle", "wb").write(b"\x00" + z.read(pkl))
# The pickle with the small entries (byteorder, version, the smallest storages).
small = [(pkl, z.read(pkl))] + [(n, z.read(n)) for n in z.namelist() if not n.endswith("data.pkl") and z.getinfo(n).file_size <= 256]
import io
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as w:
    for n, b in small:
        w.writestr(n, b)
open(f"{out}/pt", "wb").write(b"\x01" + buf.getvalue())
header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                     "b": {"dtype": "F16", "shape": [1], "data_offsets": [8, 10]}}).encode()
open(f"{out}/safetensors", "wb").write(b"\x02" + struct.pack("<Q", len(header)) + header + bytes(10))
PY

"$out/fuzz-checkpoint" "$out/corpus" -max_total_time="$seconds" -artifact_prefix="$out/" -rss_limit_mb=4096 "$@"
