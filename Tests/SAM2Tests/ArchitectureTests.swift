import Foundation
import XCTest
import SAM2
import SAM2Checkpoint
import SAM2Tensor

/// Every official model (SAM 2 and SAM 2.1, all four sizes) builds from an official-format
/// checkpoint with its config from Configs/: every key used, every shape as the config implies.
/// Checkpoints come from `$SAM2_ARCH_CHECKPOINTS/<name>.pt` (real ones, or random ones written by
/// Scripts/make_random_checkpoints.py); without that folder the test skips.
final class ArchitectureTests: XCTestCase {
    func testEveryOfficialModelLoads() throws {
        guard let dir = ProcessInfo.processInfo.environment["SAM2_ARCH_CHECKPOINTS"] else {
            throw XCTSkip("set SAM2_ARCH_CHECKPOINTS to a folder of <model>.pt files (Scripts/make_random_checkpoints.py writes them)")
        }
        var loaded = 0
        for name in SAM2Config.knownModelNames {
            let path = "\(dir)/\(name).pt"
            guard FileManager.default.fileExists(atPath: path) else { continue }
            let config = try SAM2Config.named(name)
            let model = try SAM2Model(config: config, checkpointPath: path)
            XCTAssertEqual(model.imageSize, 1024, name)
            loaded += 1
        }
        XCTAssertGreaterThan(loaded, 0, "no checkpoint in \(dir)")
        print("built \(loaded) official architectures from \(dir)")
    }
}
