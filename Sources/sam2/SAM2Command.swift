import ArgumentParser
import Foundation
import SAM2
import SAM2Session
import SAM2Checkpoint
import SAM2Video

@main
struct SAM2Command: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sam2",
        abstract: "Track any object through a video, or segment images, from a few clicks: SAM 2 in native Swift.",
        subcommands: [Track.self, Segment.self, Serve.self, Replay.self, Bench.self])

    /// Every failure ends the same way: one line on stderr (`sam2: error: ...`) and a non-zero
    /// status (64 for a usage error); --help prints as usual.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }
            let message = self.message(for: error)
            if message.isEmpty { Foundation.exit(code.rawValue) }
            fail(message + (code == .validationFailure ? " (see --help)" : ""), status: code.rawValue)
        }
    }
}

/// Mask prompts are read like the official example: grey level > 0 is the object.
func loadMaskPNG(_ path: String) throws -> (mask: [UInt8], width: Int, height: Int) {
    let img = try ImageIO.readGray(path: path)
    return (img.gray.map { $0 > 0 ? 1 : 0 }, img.width, img.height)
}

/// An image file (anything FFmpeg decodes) as 8-bit RGB.
func loadRGBImage(_ path: String) throws -> RGBImage {
    let img = try ImageIO.readImage(path: path)
    return RGBImage(width: img.width, height: img.height, pixels: img.rgb)
}

/// Print one line to stderr and exit non-zero: how every user-facing failure ends.
func fail(_ message: String, status: Int32 = 1) -> Never {
    let line = message.split(whereSeparator: \.isNewline).joined(separator: " ")
    FileHandle.standardError.write(Data("sam2: error: \(line)\n".utf8))
    exit(status)
}

/// An error as one line for the user: our own errors describe themselves; Foundation's say
/// what happened in their localized description.
func describe(_ error: Error) -> String {
    if error is CocoaError || error is POSIXError { return error.localizedDescription }
    return String(describing: error)
}

struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a golden fixture's session and write its outputs for compare.py (the conformance runner).")

    @Argument(help: "Fixture folder: checkpoint.pt, config.yaml, session.json and frames.safetensors (video) or image.png (image).")
    var fixture: String

    @Option(name: .shortAndLong, help: "Where to write the outputs: a .safetensors file (video fixture) or a folder (image fixture).")
    var output: String

    func run() throws {
        let start = Date()
        do {
            if ImageConformance.isImageFixture(fixture) {
                let s = try ImageConformance.replay(fixture: fixture, outputDir: output, loadImage: loadRGBImage)
                for note in s.notes { print("note: \(note)") }
                print(String(format: "replayed %d predict cases and %d mask-generator runs (%@ masks) in %.1f s -> %@",
                             s.cases, s.amgRuns, s.masks.map(String.init).joined(separator: ", "),
                             Date().timeIntervalSince(start), output))
                return
            }
            let s = try Conformance.replay(fixture: fixture, output: output, loadMask: loadMaskPNG)
            print(String(format: "replayed %d actions on %d frames: %d records in %.1f s -> %@",
                         s.actions, s.frames, s.records, Date().timeIntervalSince(start), output))
        } catch {
            fail(describe(error))
        }
    }
}
