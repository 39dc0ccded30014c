// swift-tools-version:5.9
import PackageDescription

let package = Package(
    name: "sam2",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "sam2", targets: ["sam2"]),
        .library(name: "SAM2", targets: ["SAM2", "SAM2Session", "SAM2Video", "SAM2Checkpoint", "SAM2Tensor"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.19"),
    ],
    targets: [
        // System libraries, found through pkg-config.
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CFFmpeg", pkgConfig: "libavformat",
                       providers: [.apt(["libavformat-dev", "libavcodec-dev", "libswscale-dev", "libavutil-dev"])]),

        // Hot loops in C, so they vectorise: pointwise (softmax, GELU), convolutions, Pillow's resampling.
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3"])]),
        // Float32 tensors and the few fast kernels everything else leans on.
        .target(name: "SAM2Tensor", dependencies: ["CBLAS", "CKernels"],
                swiftSettings: [.unsafeFlags(["-Ounchecked"])]),
        // Official checkpoints (.pt, .safetensors) and model configs (YAML).
        .target(name: "SAM2Checkpoint", dependencies: ["SAM2Tensor", "Yams"]),
        // The SAM 2 model, one file per part, and the video predictor.
        .target(name: "SAM2", dependencies: ["SAM2Tensor", "SAM2Checkpoint", "CKernels",
                                            .product(name: "OrderedCollections", package: "swift-collections")]),
        // Video in (FFmpeg) and masks out (PNG, palette PNG, COCO RLE, overlay video).
        .target(name: "SAM2Video", dependencies: ["CFFmpeg", "CKernels", "SAM2Tensor", "SAM2"]),
        // The session engine: prompts, undo, propagation, masks kept on disk, export.
        // `sam2 track` and `sam2 serve` both drive it.
        .target(name: "SAM2Session", dependencies: ["SAM2", "SAM2Video", "SAM2Checkpoint", "SAM2Tensor"]),
        // `sam2 serve`: the session engine over HTTP, and the web page (Web/, no build step).
        .target(name: "SAM2Server", dependencies: [
            "SAM2", "SAM2Session", "SAM2Video",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "ZIPFoundation", package: "ZIPFoundation"),
        ], resources: [.copy("Web")]),
        // The command-line tool: a thin layer over the library.
        .executableTarget(name: "sam2", dependencies: [
            "SAM2", "SAM2Session", "SAM2Server", "SAM2Video", "SAM2Checkpoint", "SAM2Tensor",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "SAM2Tests", dependencies: ["SAM2", "SAM2Session", "SAM2Video", "SAM2Checkpoint", "SAM2Tensor", "Yams"],
                    exclude: ["Fixtures"]),
    ]
)
