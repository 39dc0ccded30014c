// A libFuzzer entry point for the checkpoint readers, built by Scripts/fuzz-checkpoint.sh into
// the SAM2Checkpoint module itself (so it reaches the internal unpickler). Not part of the
// package build. The first byte of each input picks the parser; the rest is its input.
import Foundation

private let scratch = NSTemporaryDirectory() + "/sam2-libfuzzer-\(getpid())"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data + 1, count: size - 1)
    switch data[0] % 3 {
    case 0:  // the pickle of a .pt, in memory
        _ = try? Unpickler.load(input, source: "fuzz") { try TorchCheckpoint.stateDict($0, path: "fuzz") }
    case 1:  // a whole .pt (zip) file
        FileManager.default.createFile(atPath: scratch + ".pt", contents: Data(input))
        _ = try? Checkpoint.load(path: scratch + ".pt")
    default:  // a safetensors file
        FileManager.default.createFile(atPath: scratch + ".safetensors", contents: Data(input))
        _ = try? Safetensors.read(path: scratch + ".safetensors")
        _ = try? Checkpoint.load(path: scratch + ".safetensors")
    }
    return 0
}
