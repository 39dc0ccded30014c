import Foundation
import XCTest
import Yams
@testable import SAM2Checkpoint

final class ConfigTests: XCTestCase {
    /// The package root, found from this file so the tests run from any directory.
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let configsDir = packageRoot.appendingPathComponent("Configs").path
    static let fixturesDir = packageRoot.appendingPathComponent("../shared/fixtures").standardized.path

    static let officialFiles = ["sam2", "sam2.1"].flatMap { v in
        ["t", "s", "b+", "l"].map { "\(v)/\(v)_hiera_\($0).yaml" }
    } + ["edgetam.yaml"]

    func official(_ file: String) throws -> SAM2Config {
        try SAM2Config.load(path: "\(Self.configsDir)/\(file)")
    }

    func officialText(_ file: String) throws -> String {
        try String(contentsOfFile: "\(Self.configsDir)/\(file)", encoding: .utf8)
    }

    func fixture(_ name: String) throws -> String {
        let path = "\(Self.fixturesDir)/\(name)/config.yaml"
        guard FileManager.default.fileExists(atPath: path) else {
            throw XCTSkip("shared fixtures not found at \(path)")
        }
        return path
    }

    /// The error a throwing call raises, as a ConfigError.
    func configError(_ body: () throws -> Any, file: StaticString = #filePath, line: UInt = #line) -> ConfigError? {
        do {
            _ = try body()
            XCTFail("expected a ConfigError", file: file, line: line)
        } catch let error as ConfigError {
            XCTAssertFalse(error.description.contains("\n"), "not one line: \(error)", file: file, line: line)
            return error
        } catch {
            XCTFail("expected a ConfigError, got \(error)", file: file, line: line)
        }
        return nil
    }

    // MARK: Official configs

    func testAllOfficialConfigsLoadAsVideoPredictor() throws {
        for file in Self.officialFiles {
            let c = try official(file)
            XCTAssertNoThrow(try c.validate(), file)
            XCTAssertEqual(c.target, SAM2Targets.videoPredictor, file)
            // build_sam2_video_predictor's post-processing ...
            XCTAssertEqual(c.samMaskDecoderExtraArgs,
                           MaskDecoderExtraArgs(dynamicMultimaskViaStability: true,
                                                dynamicMultimaskStabilityDelta: 0.05,
                                                dynamicMultimaskStabilityThresh: 0.98), file)
            XCTAssertTrue(c.binarizeMaskFromPtsForMemEnc, file)
            // ... with this tool's two documented defaults.
            XCTAssertEqual(c.fillHoleArea, 0, file)
            XCTAssertTrue(c.addAllFramesToCorrectAsCond, file)
            XCTAssertFalse(c.nonOverlapMasks, file)
            XCTAssertFalse(c.clearNonCondMemAroundInput, file)
            XCTAssertEqual(c.imageSize, 1024, file)
        }
    }

    func testSAM21TinyValues() throws {
        let c = try official("sam2.1/sam2.1_hiera_t.yaml")
        let trunk = try XCTUnwrap(c.imageEncoder.hiera)
        XCTAssertEqual(c.imageEncoder.scalp, 1)
        XCTAssertEqual(trunk.embedDim, 96)
        XCTAssertEqual(trunk.numHeads, 1)
        XCTAssertEqual(trunk.stages, [1, 2, 7, 2])
        XCTAssertEqual(trunk.globalAttBlocks, [5, 7, 9])
        XCTAssertEqual(trunk.windowPosEmbedBkgSpatialSize, [7, 7])
        // Hiera defaults for keys the file leaves out.
        XCTAssertEqual(trunk.windowSpec, [8, 4, 14, 7])
        XCTAssertEqual(trunk.qPool, 3)
        XCTAssertEqual(trunk.qStride, [2, 2])
        XCTAssertEqual(trunk.dimMul, 2.0)
        XCTAssertEqual(trunk.headMul, 2.0)
        XCTAssertEqual(trunk.dropPathRate, 0.0)
        XCTAssertEqual(trunk.stageDims, [96, 192, 384, 768])
        XCTAssertEqual(trunk.stageHeads, [1, 2, 4, 8])

        let neck = c.imageEncoder.neck
        XCTAssertEqual(neck.dModel, 256)
        XCTAssertEqual(neck.backboneChannelList, [768, 384, 192, 96])
        XCTAssertEqual(neck.fpnTopDownLevels, [2, 3])
        XCTAssertEqual(neck.fpnInterpModel, "nearest")
        XCTAssertEqual(neck.fuseType, "sum")
        XCTAssertEqual([neck.kernelSize, neck.stride, neck.padding], [1, 1, 0])
        XCTAssertEqual(neck.positionEncoding.numPosFeats, 256)
        XCTAssertTrue(neck.positionEncoding.normalize)
        XCTAssertNil(neck.positionEncoding.scale)
        XCTAssertEqual(neck.positionEncoding.effectiveScale, 2 * Double.pi)
        XCTAssertEqual(neck.positionEncoding.temperature, 10000)

        let ma = c.memoryAttention
        XCTAssertEqual(ma.dModel, 256)
        XCTAssertTrue(ma.posEncAtInput)
        XCTAssertEqual(ma.numLayers, 4)
        XCTAssertEqual(ma.layer.activation, "relu")
        XCTAssertEqual(ma.layer.dimFeedforward, 2048)
        XCTAssertEqual(ma.layer.dropout, 0.1)
        XCTAssertFalse(ma.layer.posEncAtAttn)
        XCTAssertTrue(ma.layer.posEncAtCrossAttnKeys)
        XCTAssertFalse(ma.layer.posEncAtCrossAttnQueries)
        XCTAssertEqual(ma.layer.selfAttention.ropeTheta, 10000)
        XCTAssertEqual(ma.layer.selfAttention.featSizes, [64, 64])
        XCTAssertFalse(ma.layer.selfAttention.ropeKRepeat)
        XCTAssertNil(ma.layer.selfAttention.kvInDim)
        XCTAssertEqual(ma.layer.selfAttention.resolvedKvInDim, 256)
        XCTAssertTrue(ma.layer.crossAttention.ropeKRepeat)
        XCTAssertEqual(ma.layer.crossAttention.kvInDim, 64)
        XCTAssertEqual(ma.layer.crossAttention.numHeads, 1)
        XCTAssertEqual(ma.layer.crossAttention.downsampleRate, 1)

        let me = c.memoryEncoder
        XCTAssertEqual(me.outDim, 64)
        XCTAssertEqual(me.inDim, 256)  // MemoryEncoder default
        XCTAssertEqual(me.positionEncoding.numPosFeats, 64)
        XCTAssertEqual(me.maskDownsampler.kernelSize, 3)
        XCTAssertEqual(me.maskDownsampler.stride, 2)
        XCTAssertEqual(me.maskDownsampler.padding, 1)
        XCTAssertEqual(me.maskDownsampler.embedDim, 256)  // MaskDownSampler defaults
        XCTAssertEqual(me.maskDownsampler.totalStride, 16)
        XCTAssertEqual(me.maskDownsampler.numLayers, 4)
        XCTAssertEqual(me.fuser.numLayers, 2)
        XCTAssertEqual(me.fuser.layer.dim, 256)
        XCTAssertEqual(me.fuser.layer.kernelSize, 7)
        XCTAssertEqual(me.fuser.layer.padding, 3)
        XCTAssertEqual(me.fuser.layer.layerScaleInitValue, 1e-6)
        XCTAssertTrue(me.fuser.layer.useDwconv)

        XCTAssertEqual(c.numMaskmem, 7)
        XCTAssertEqual(c.backboneStride, 16)
        XCTAssertEqual(c.sigmoidScaleForMemEnc, 20.0)
        XCTAssertEqual(c.sigmoidBiasForMemEnc, -10.0)
        XCTAssertTrue(c.useMaskInputAsOutputWithoutSam)
        XCTAssertTrue(c.directlyAddNoMemEmbed)
        XCTAssertTrue(c.noObjEmbedSpatial)
        XCTAssertTrue(c.useHighResFeaturesInSam)
        XCTAssertTrue(c.multimaskOutputInSam)
        XCTAssertTrue(c.iouPredictionUseSigmoid)
        XCTAssertTrue(c.useObjPtrsInEncoder)
        XCTAssertTrue(c.addTposEncToObjPtrs)
        XCTAssertTrue(c.projTposEncInObjPtrs)
        XCTAssertTrue(c.useSignedTposEncToObjPtrs)
        XCTAssertTrue(c.onlyObjPtrsInThePastForEval)
        XCTAssertTrue(c.predObjScores)
        XCTAssertTrue(c.predObjScoresMlp)
        XCTAssertTrue(c.fixedNoObjPtr)
        XCTAssertTrue(c.multimaskOutputForTracking)
        XCTAssertTrue(c.useMultimaskTokenForObjPtr)
        XCTAssertEqual(c.multimaskMinPtNum, 0)
        XCTAssertEqual(c.multimaskMaxPtNum, 1)
        XCTAssertTrue(c.useMlpForObjPtrProj)
        XCTAssertFalse(c.compileImageEncoder)
        // SAM2Base defaults for keys the file leaves out.
        XCTAssertEqual(c.maxCondFramesInAttn, -1)
        XCTAssertEqual(c.memoryTemporalStrideForEval, 1)
        XCTAssertFalse(c.nonOverlapMasksForMemEnc)
        XCTAssertEqual(c.maxObjPtrsInEncoder, 16)
        XCTAssertFalse(c.softNoObjPtr)
        XCTAssertEqual(c.hiddenDim, 256)
        XCTAssertEqual(c.memDim, 64)
    }

    func testOtherSizes() throws {
        for v in ["sam2", "sam2.1"] {
            let s = try official("\(v)/\(v)_hiera_s.yaml").imageEncoder
            XCTAssertEqual(s.hiera!.embedDim, 96)
            XCTAssertEqual(s.hiera!.stages, [1, 2, 11, 2])
            XCTAssertEqual(s.hiera!.globalAttBlocks, [7, 10, 13])
            XCTAssertEqual(s.hiera!.windowSpec, [8, 4, 14, 7])

            let b = try official("\(v)/\(v)_hiera_b+.yaml").imageEncoder
            XCTAssertEqual(b.hiera!.embedDim, 112)
            XCTAssertEqual(b.hiera!.numHeads, 2)
            XCTAssertEqual(b.hiera!.stages, [2, 3, 16, 3])           // Hiera default
            XCTAssertEqual(b.hiera!.globalAttBlocks, [12, 16, 20])   // Hiera default
            XCTAssertEqual(b.hiera!.windowPosEmbedBkgSpatialSize, [14, 14])
            XCTAssertEqual(b.neck.backboneChannelList, [896, 448, 224, 112])

            let l = try official("\(v)/\(v)_hiera_l.yaml").imageEncoder
            XCTAssertEqual(l.hiera!.embedDim, 144)
            XCTAssertEqual(l.hiera!.numHeads, 2)
            XCTAssertEqual(l.hiera!.stages, [2, 6, 36, 4])
            XCTAssertEqual(l.hiera!.globalAttBlocks, [23, 33, 43])
            XCTAssertEqual(l.hiera!.windowSpec, [8, 4, 16, 8])
            XCTAssertEqual(l.neck.backboneChannelList, [1152, 576, 288, 144])
        }
    }

    func testSAM2Point0DiffersFromSAM21() throws {
        for size in ["t", "s", "b+", "l"] {
            var old = try official("sam2/sam2_hiera_\(size).yaml")
            let new = try official("sam2.1/sam2.1_hiera_\(size).yaml")
            XCTAssertFalse(old.noObjEmbedSpatial)
            XCTAssertFalse(old.addTposEncToObjPtrs)
            XCTAssertFalse(old.projTposEncInObjPtrs)
            XCTAssertFalse(old.useSignedTposEncToObjPtrs)
            // Nothing else differs.
            old.noObjEmbedSpatial = true
            old.addTposEncToObjPtrs = true
            old.projTposEncInObjPtrs = true
            old.useSignedTposEncToObjPtrs = true
            XCTAssertEqual(old, new, size)
        }
    }

    /// EdgeTAM's official config (facebookresearch/EdgeTAM sam2/configs/edgetam.yaml), read with
    /// its new classes: the RepViT trunk, RoPEAttentionv2 cross-attention, the spatial perceiver.
    func testEdgeTAMValues() throws {
        let c = try SAM2Config.named("edgetam", configsDirectory: Self.configsDir)
        XCTAssertNoThrow(try c.validate())
        XCTAssertEqual(c, try SAM2Config.named("EdgeTAM.pt"))  // the built-in copy, by checkpoint name
        XCTAssertEqual(SAM2Config.canonicalModelName("edgetam.yaml"), "edgetam")
        XCTAssertTrue(SAM2Config.knownModelNames.contains("edgetam"))
        guard case let .timm(trunk) = c.imageEncoder.trunk else { return XCTFail("trunk is not TimmBackbone") }
        XCTAssertEqual(trunk.name, "repvit_m1.dist_in1k")
        XCTAssertEqual(trunk.features, ["layer0", "layer1", "layer2", "layer3"])
        XCTAssertEqual(c.imageEncoder.trunk.channels, [48, 96, 192, 384])
        XCTAssertEqual(c.imageEncoder.neck.backboneChannelList, [384, 192, 96, 48])
        XCTAssertEqual(c.imageEncoder.scalp, 1)
        let ca = c.memoryAttention.layer.crossAttention, sa = c.memoryAttention.layer.selfAttention
        XCTAssertTrue(ca.isV2)
        XCTAssertFalse(sa.isV2)
        XCTAssertEqual(ca.qSizes, [64, 64])
        XCTAssertEqual(ca.kSizes, [16, 16])
        XCTAssertEqual(ca.kvInDim, 64)
        XCTAssertEqual(sa.featSizes, [32, 32])  // EdgeTAM's self-attention table (grown to 64x64 on use)
        XCTAssertEqual(c.memoryAttention.numLayers, 2)
        let sp = try XCTUnwrap(c.spatialPerceiver)
        XCTAssertEqual([sp.depth, sp.dim, sp.dimHead, sp.heads, sp.ffMult, sp.numLatents, sp.numLatents2d], [2, 64, 64, 1, 4, 256, 256])
        XCTAssertTrue(sp.posEncAtKeyValue)
        XCTAssertFalse(sp.concatKvLatents)
        XCTAssertTrue(sp.useSelfAttn)
        XCTAssertEqual(sp.positionEncoding?.numPosFeats, 64)
        XCTAssertEqual(c.numMaskmem, 7)
        XCTAssertEqual(c.imageSize, 1024)
        XCTAssertTrue(c.useMaskInputAsOutputWithoutSam)
        XCTAssertFalse(c.addTposEncToObjPtrs)
        XCTAssertTrue(c.fixedNoObjPtr)
        XCTAssertTrue(c.useMlpForObjPtrProj)
        XCTAssertEqual(c.multimaskMinPtNum, 0)
        // SAM 2's configs have neither.
        XCTAssertNil(try SAM2Config.named("sam2.1_hiera_tiny").spatialPerceiver)
    }

    func testEdgeTAMConfigErrorsNameTheKey() throws {
        let text = try String(contentsOfFile: "\(Self.configsDir)/edgetam.yaml", encoding: .utf8)
        func refused(_ edit: (String) -> String, _ key: String, _ words: String, line: UInt = #line) {
            XCTAssertThrowsError(try { let c = try SAM2Config.load(yaml: edit(text), source: "e.yaml"); try c.validate() }(), line: line) { e in
                let message = "\(e)"
                XCTAssertTrue(message.contains(key) && message.contains(words), "\(message)", line: line)
            }
        }
        refused({ $0.replacingOccurrences(of: "repvit_m1.dist_in1k", with: "resnet50") }, "trunk.name", "unsupported timm model resnet50")
        refused({ $0.replacingOccurrences(of: "      - layer3\n", with: "") }, "trunk.features", "layer0, layer1, layer2, layer3")
        refused({ $0.replacingOccurrences(of: "k_sizes: [16, 16]", with: "k_sizes: [8, 8]") }, "cross_attention.k_sizes", "16x16")
        refused({ $0.replacingOccurrences(of: "k_sizes: [16, 16]", with: "feat_sizes: [16, 16]") }, "feat_sizes", "unknown key")
        refused({ $0.replacingOccurrences(of: "num_latents_2d: 256", with: "num_latents_2d: 200") }, "num_latents_2d", "square")
        refused({ $0.replacingOccurrences(of: "    dim: 64\n    dim_head", with: "    dim: 32\n    dim_head") }, "spatial_perceiver.dim", "64 channels")
        refused({ $0.replacingOccurrences(of: "    use_self_attn: true", with: "    use_self_attn: true\n    colour: red") }, "spatial_perceiver.colour", "unknown key")
    }

    // MARK: Names and built-in copies

    func testEmbeddedTextEqualsConfigsDirectory() throws {
        let onDisk = Set(try ["sam2", "sam2.1"].flatMap { v in
            try FileManager.default.contentsOfDirectory(atPath: "\(Self.configsDir)/\(v)")
                .filter { $0.hasSuffix(".yaml") }.map { "\(v)/\($0)" }
        } + ["edgetam.yaml"])
        XCTAssertEqual(Set(SAM2Config.embeddedConfigFiles.keys), onDisk,
                       "Configs/ changed: rerun Scripts/embed_configs.sh")
        for file in onDisk {
            XCTAssertEqual(SAM2Config.embeddedConfigFiles[file], try officialText(file),
                           "\(file) differs from its built-in copy: rerun Scripts/embed_configs.sh")
        }
    }

    func testNamedResolvesAllSpellings() throws {
        let cases: [(String, String)] = [
            ("sam2.1_hiera_t", "sam2.1/sam2.1_hiera_t.yaml"),
            ("sam2.1_hiera_tiny", "sam2.1/sam2.1_hiera_t.yaml"),
            ("sam2.1_hiera_small", "sam2.1/sam2.1_hiera_s.yaml"),
            ("sam2.1_hiera_b+", "sam2.1/sam2.1_hiera_b+.yaml"),
            ("sam2.1_hiera_base_plus", "sam2.1/sam2.1_hiera_b+.yaml"),
            ("sam2.1_hiera_l", "sam2.1/sam2.1_hiera_l.yaml"),
            ("sam2_hiera_large", "sam2/sam2_hiera_l.yaml"),
            ("sam2_hiera_t", "sam2/sam2_hiera_t.yaml"),
            ("facebook/sam2.1-hiera-base-plus", "sam2.1/sam2.1_hiera_b+.yaml"),
            ("sam2.1_hiera_large.pt", "sam2.1/sam2.1_hiera_l.yaml"),
            ("SAM2.1_Hiera_Tiny", "sam2.1/sam2.1_hiera_t.yaml"),
        ]
        for (name, file) in cases {
            XCTAssertEqual(SAM2Config.configFile(forModel: name), file, name)
            let builtIn = try SAM2Config.named(name)
            let fromDir = try SAM2Config.named(name, configsDirectory: Self.configsDir)
            XCTAssertEqual(builtIn, try official(file), name)
            XCTAssertEqual(fromDir, builtIn, name)
        }
        XCTAssertEqual(SAM2Config.knownModelNames.count, 9)  // eight SAM 2 models and EdgeTAM
        for name in SAM2Config.knownModelNames {
            XCTAssertEqual(SAM2Config.canonicalModelName(name), name)
            XCTAssertNoThrow(try SAM2Config.named(name), name)
        }
        XCTAssertEqual(SAM2Config.canonicalModelName("sam2.1_hiera_b+"), "sam2.1_hiera_base_plus")

        let error = configError { try SAM2Config.named("sam3_hiera_t") }
        XCTAssertEqual(error?.kind, .unknownModel)
        XCTAssertTrue(error?.description.contains("sam2.1_hiera_tiny") ?? false, "lists the known models")
    }

    func testNamedTakesAFilePath() throws {
        let path = "\(Self.configsDir)/sam2.1/sam2.1_hiera_s.yaml"
        XCTAssertEqual(try SAM2Config.named(path), try official("sam2.1/sam2.1_hiera_s.yaml"))
        XCTAssertEqual(configError { try SAM2Config.named("/nonexistent/x.yaml") }?.kind, .unreadableFile)
    }

    func testDefaultConfigsDirectory() throws {
        // The test binary lives under the package's build directory, so walking up finds Configs/.
        let found = try XCTUnwrap(SAM2Config.defaultConfigsDirectory())
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(found)/sam2.1/sam2.1_hiera_t.yaml"), found)

        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("sam2cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp.appendingPathComponent("sam2.1"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        try officialText("sam2.1/sam2.1_hiera_t.yaml")
            .write(to: tmp.appendingPathComponent("sam2.1/sam2.1_hiera_t.yaml"), atomically: true, encoding: .utf8)
        setenv("SAM2_CONFIGS", tmp.path, 1)
        defer { unsetenv("SAM2_CONFIGS") }
        XCTAssertEqual(SAM2Config.defaultConfigsDirectory(), tmp.path)
    }

    // MARK: Resolved predictor configs (the fixtures)

    func testMicroSynthFixture() throws {
        let c = try SAM2Config.load(path: try fixture("micro_synth"))
        XCTAssertEqual(c.target, SAM2Targets.videoPredictor)
        XCTAssertEqual(c.imageSize, 256)
        XCTAssertEqual(c.imageEncoder.hiera!.embedDim, 16)
        XCTAssertEqual(c.imageEncoder.hiera!.stages, [1, 2, 4, 1])
        XCTAssertEqual(c.imageEncoder.hiera!.globalAttBlocks, [4, 6])
        XCTAssertEqual(c.imageEncoder.hiera!.windowSpec, [8, 4, 14, 7])  // absent: Hiera default
        XCTAssertEqual(c.imageEncoder.neck.backboneChannelList, [128, 64, 32, 16])
        XCTAssertEqual(c.imageEncoder.neck.dModel, 64)
        XCTAssertEqual(c.memoryAttention.layer.dimFeedforward, 128)
        XCTAssertEqual(c.memoryAttention.numLayers, 2)
        XCTAssertEqual(c.memoryAttention.layer.crossAttention.kvInDim, 16)
        XCTAssertEqual(c.memoryAttention.layer.selfAttention.featSizes, [16, 16])
        XCTAssertEqual(c.memoryEncoder.outDim, 16)
        XCTAssertEqual(c.memoryEncoder.inDim, 64)
        XCTAssertEqual(c.memoryEncoder.maskDownsampler.embedDim, 64)
        XCTAssertEqual(c.memoryEncoder.fuser.layer.dim, 64)
        XCTAssertEqual(c.memoryEncoder.fuser.layer.layerScaleInitValue, 1e-6)
        // Taken as given, not post-processed.
        XCTAssertFalse(c.binarizeMaskFromPtsForMemEnc)
        XCTAssertEqual(c.fillHoleArea, 0)
        XCTAssertTrue(c.addAllFramesToCorrectAsCond)
        XCTAssertTrue(c.samMaskDecoderExtraArgs.dynamicMultimaskViaStability)
    }

    func testFixturesLoadWithExactlyTheirValues() throws {
        for name in ["micro_synth", "micro_bedroom", "tiny_dog"] {
            let path = try fixture(name)
            let config = try SAM2Config.load(path: path)
            // Every key of the file must come back with the same value.
            let given = try XCTUnwrap(try Yams.compose(yaml: String(contentsOfFile: path, encoding: .utf8)))
            let decoded = try XCTUnwrap(try Yams.compose(yaml: config.yaml()))
            assertContains(decoded, given, path: name)
        }
        XCTAssertTrue(try SAM2Config.load(path: fixture("micro_bedroom")).binarizeMaskFromPtsForMemEnc)
        let dog = try SAM2Config.load(path: fixture("tiny_dog"))
        XCTAssertEqual(dog.imageEncoder.hiera!.embedDim, 96)
        XCTAssertEqual(dog.imageSize, 1024)
    }

    /// Checks that `actual` has every key of `expected` with an equal value (numbers compared as numbers).
    func assertContains(_ actual: Node, _ expected: Node, path: String) {
        switch expected {
        case .mapping(let m):
            for (key, value) in m {
                let k = key.string ?? "?"
                guard let a = actual[k] else {
                    // nil optionals are written by leaving the key out.
                    if value.scalar?.string != "null" { XCTFail("\(path).\(k) missing") }
                    continue
                }
                assertContains(a, value, path: "\(path).\(k)")
            }
        case .sequence(let s):
            guard let a = actual.sequence, a.count == s.count else { XCTFail("\(path): list differs"); return }
            for (i, (x, y)) in zip(a, s).enumerated() { assertContains(x, y, path: "\(path)[\(i)]") }
        case .scalar(let s):
            if let e = Double(s.string), let a = actual.string.flatMap(Double.init) {
                XCTAssertEqual(a, e, accuracy: abs(e) * 1e-12, path)
            } else if s.string == "null" {
                XCTAssertNil(actual.scalar, "\(path) should be null or absent")
            } else {
                XCTAssertEqual(actual.string?.lowercased(), s.string.lowercased(), path)
            }
        @unknown default:  // newer Yams has aliases
            XCTFail("\(path): unexpected node")
        }
    }

    func testAResolvedConfigIsNotPostProcessed() throws {
        let text = try officialText("sam2.1/sam2.1_hiera_t.yaml")
            .replacingOccurrences(of: SAM2Targets.sam2Base, with: SAM2Targets.videoPredictor)
        let c = try SAM2Config.load(yaml: text)
        // SAM2Base / SAM2VideoPredictor / MaskDecoder defaults.
        XCTAssertFalse(c.binarizeMaskFromPtsForMemEnc)
        XCTAssertEqual(c.fillHoleArea, 0)
        XCTAssertFalse(c.addAllFramesToCorrectAsCond)
        XCTAssertEqual(c.samMaskDecoderExtraArgs, MaskDecoderExtraArgs())
        XCTAssertFalse(c.samMaskDecoderExtraArgs.dynamicMultimaskViaStability)
    }

    func testYAMLRoundTrip() throws {
        for file in Self.officialFiles {
            let c = try official(file)
            XCTAssertEqual(try SAM2Config.load(yaml: c.yaml()), c, file)
        }
    }

    // MARK: YAML quirks

    func testLenientScalars() throws {
        let text = try officialText("sam2.1/sam2.1_hiera_t.yaml")
            .replacingOccurrences(of: "layer_scale_init_value: 1e-6", with: "layer_scale_init_value: '1e-6'")
            .replacingOccurrences(of: "embed_dim: 96", with: "embed_dim: \"96\"")
            .replacingOccurrences(of: "use_dwconv: True", with: "use_dwconv: TRUE")
            .replacingOccurrences(of: "sigmoid_scale_for_mem_enc: 20.0", with: "sigmoid_scale_for_mem_enc: 20")
            .replacingOccurrences(of: "rope_theta: 10000.0", with: "rope_theta: 1.0e+04")
        let c = try SAM2Config.load(yaml: text)
        XCTAssertEqual(c, try official("sam2.1/sam2.1_hiera_t.yaml"))

        let scaled = try officialText("sam2.1/sam2.1_hiera_t.yaml")
            .replacingOccurrences(of: "scale: null", with: "scale: 6.0")
        XCTAssertEqual(try SAM2Config.load(yaml: scaled).imageEncoder.neck.positionEncoding.scale, 6.0)
    }

    // MARK: Errors

    func testSyntaxError() {
        let error = configError { try SAM2Config.load(yaml: "model:\n  image_size: [1, 2\n", source: "bad.yaml") }
        XCTAssertEqual(error?.kind, .syntax)
        XCTAssertTrue(error?.description.hasPrefix("bad.yaml: YAML syntax error at line") ?? false, "\(String(describing: error))")
    }

    func testMissingModelSection() {
        XCTAssertEqual(configError { try SAM2Config.load(yaml: "trainer:\n  x: 1\n") }?.kind, .missingModelSection)
        XCTAssertEqual(configError { try SAM2Config.load(yaml: "") }?.kind, .missingModelSection)
        XCTAssertEqual(configError { try SAM2Config.load(yaml: "- 1\n") }?.kind, .missingModelSection)
        XCTAssertEqual(configError { try SAM2Config.load(path: "/nonexistent/config.yaml") }?.kind, .unreadableFile)
    }

    func testWrongTypedKeyNamesFileAndKey() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sam2cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("typo.yaml").path
        try officialText("sam2.1/sam2.1_hiera_t.yaml")
            .replacingOccurrences(of: "embed_dim: 96", with: "embed_dim: ninety-six")
            .write(toFile: path, atomically: true, encoding: .utf8)
        let error = configError { try SAM2Config.load(path: path) }
        XCTAssertEqual(error?.kind, .wrongType)
        XCTAssertEqual(error?.file, path)
        XCTAssertEqual(error?.key, "model.image_encoder.trunk.embed_dim")
        XCTAssertEqual(error?.description,
                       "\(path): model.image_encoder.trunk.embed_dim: wrong type, expected an integer, got \"ninety-six\"")
    }

    func testOtherBadValues() throws {
        let tiny = try officialText("sam2.1/sam2.1_hiera_t.yaml")
        func error(_ from: String, _ to: String) -> ConfigError? {
            XCTAssertTrue(tiny.contains(from), from)
            return configError { try SAM2Config.load(yaml: tiny.replacingOccurrences(of: from, with: to)) }
        }
        var e = error("stages: [1, 2, 7, 2]", "stages: [1, 2, x, 2]")
        XCTAssertEqual(e?.key, "model.image_encoder.trunk.stages[2]")
        XCTAssertEqual(e?.kind, .wrongType)
        e = error("stages: [1, 2, 7, 2]", "stages: 12")
        XCTAssertEqual(e?.key, "model.image_encoder.trunk.stages")
        e = error("use_dwconv: True", "use_dwconv: maybe")
        XCTAssertEqual(e?.key, "model.memory_encoder.fuser.layer.use_dwconv")
        e = error("image_size: 1024", "image_size: null")
        XCTAssertEqual(e?.kind, .wrongType)
        XCTAssertEqual(e?.key, "model.image_size")
        e = error("    scalp: 1", "    scalp: {a: 1}")
        XCTAssertEqual(e?.kind, .wrongType)
        e = error("  num_maskmem: 7", "  num_maskmem: 7\n  bogus_option: 1")
        XCTAssertEqual(e?.kind, .unknownKey)
        XCTAssertEqual(e?.key, "model.bogus_option")
        e = error("    num_layers: 4\n", "\n")
        XCTAssertEqual(e?.kind, .missingKey)
        XCTAssertEqual(e?.key, "model.memory_attention.num_layers")
        e = error("_target_: sam2.modeling.backbones.hieradet.Hiera", "_target_: some.other.Backbone")
        XCTAssertEqual(e?.key, "model.image_encoder.trunk._target_")
        e = error("  _target_: sam2.modeling.sam2_base.SAM2Base\n", "\n")
        XCTAssertEqual(e?.key, "model._target_")
        XCTAssertEqual(e?.kind, .missingKey)
    }

    func testValidateRejectsInconsistentValues() throws {
        let base = try official("sam2.1/sam2.1_hiera_t.yaml")
        func invalidKey(_ change: (inout SAM2Config) -> Void) -> String? {
            var c = base
            change(&c)
            let error = configError { try c.validate() }
            XCTAssertEqual(error?.kind, .invalidValue)
            return error?.key
        }
        XCTAssertEqual(invalidKey { $0.imageEncoder.hiera!.windowSpec = [8, 4, 14] }, "model.image_encoder.trunk.window_spec")
        XCTAssertEqual(invalidKey { $0.imageEncoder.hiera!.embedDim = 112 }, "model.image_encoder.neck.backbone_channel_list")
        XCTAssertEqual(invalidKey { $0.imageEncoder.neck.backboneChannelList = [96, 192, 384, 768] },
                       "model.image_encoder.neck.backbone_channel_list")
        XCTAssertEqual(invalidKey { $0.imageSize = 1000 }, "model.image_size")
        XCTAssertEqual(invalidKey { $0.imageSize = 0 }, "model.image_size")
        XCTAssertEqual(invalidKey { $0.imageSize = -32 }, "model.image_size")
        XCTAssertEqual(invalidKey { $0.numMaskmem = -1 }, "model.num_maskmem")
        XCTAssertEqual(invalidKey { $0.predObjScores = false }, "model.fixed_no_obj_ptr")
        XCTAssertEqual(invalidKey { $0.useObjPtrsInEncoder = false }, "model.fixed_no_obj_ptr")
        XCTAssertEqual(invalidKey { $0.addTposEncToObjPtrs = false }, "model.proj_tpos_enc_in_obj_ptrs")
        XCTAssertEqual(invalidKey { $0.memoryAttention.layer.activation = "tanh" }, "model.memory_attention.layer.activation")
        XCTAssertEqual(invalidKey { $0.imageEncoder.neck.fpnInterpModel = "area" }, "model.image_encoder.neck.fpn_interp_model")
        XCTAssertEqual(invalidKey { $0.imageEncoder.neck.fuseType = "max" }, "model.image_encoder.neck.fuse_type")
        XCTAssertEqual(invalidKey { $0.imageEncoder.hiera!.globalAttBlocks = [5, 7, 12] }, "model.image_encoder.trunk.global_att_blocks")
        XCTAssertEqual(invalidKey { $0.imageEncoder.hiera!.qPool = 4 }, "model.image_encoder.trunk.q_pool")
        XCTAssertEqual(invalidKey { $0.memoryEncoder.maskDownsampler.totalStride = 12 }, "model.memory_encoder.mask_downsampler.total_stride")
        XCTAssertEqual(invalidKey { $0.memoryAttention.layer.crossAttention.kvInDim = 32 },
                       "model.memory_attention.layer.cross_attention.kv_in_dim")
        XCTAssertEqual(invalidKey { $0.memoryEncoder.fuser.layer.dim = 128 }, "model.memory_encoder.fuser.layer.dim")
        XCTAssertEqual(invalidKey { $0.maxCondFramesInAttn = 1 }, "model.max_cond_frames_in_attn")
        XCTAssertEqual(invalidKey { $0.imageEncoder.neck.positionEncoding.numPosFeats = 255 },
                       "model.image_encoder.neck.position_encoding.num_pos_feats")

        // load() validates too, and names the file.
        let text = try officialText("sam2.1/sam2.1_hiera_t.yaml").replacingOccurrences(of: "image_size: 1024", with: "image_size: 1000")
        let error = configError { try SAM2Config.load(yaml: text, source: "odd.yaml") }
        XCTAssertEqual(error?.description.hasPrefix("odd.yaml: model.image_size: must be a positive multiple of 32"), true,
                       "\(String(describing: error))")
    }
}
