import Foundation
import SAM2
import SAM2Checkpoint
import SAM2Tensor

extension Conformance {
    /// Replays a fixture's action script through the session engine (as `sam2 track` runs) and
    /// writes each record's official keys to `output` (safetensors) for `compare.py`.
    public static func replay(fixture dir: String, output: String,
                              loadMask: (String) throws -> (mask: [UInt8], width: Int, height: Int)) throws -> Summary {
        let url = URL(fileURLWithPath: dir)
        let sessionPath = url.appendingPathComponent("session.json").path
        let actions = try ActionScript.parse(path: sessionPath)
        let config = try SAM2Config.load(path: url.appendingPathComponent("config.yaml").path)
        let model = try SAM2Model(config: config, checkpointPath: url.appendingPathComponent("checkpoint.pt").path)
        let frames = try TensorFrames(safetensorsPath: url.appendingPathComponent("frames.safetensors").path)
        let session = try TrackingSession(predictor: VideoPredictor(model: model, source: frames), undoDepth: 0)
        let predictor = session.predictor
        var entries = [String: SafetensorsEntry]()
        var records = 0
        try session.run(actions, loadMask: { try loadMask(url.appendingPathComponent($0).path) }, record: { step, _, result in
            let masks = result.videoMasks()
            for (i, obj) in result.objectIds.enumerated() {
                let key = String(format: "s%02d.f%04d.o%d", step, result.frameIndex, obj)
                let bits = Conformance.packBits(masks[i])
                entries["\(key).video_mask_bits"] = SafetensorsEntry(uint8: bits, shape: [bits.count])
                if let out = predictor.storedOutput(frame: result.frameIndex, objectId: obj) {
                    entries["\(key).lowres_logits"] = SafetensorsEntry(tensor: out.predMasks)
                    entries["\(key).object_score_logits"] = SafetensorsEntry(tensor: Tensor(shape: [1], data: [out.objectScoreLogit]))
                    entries["\(key).obj_ptr"] = SafetensorsEntry(tensor: out.objPtr)
                }
                records += 1
            }
        })
        try Safetensors.write(entries, to: output)
        return Summary(records: records, actions: actions.count, frames: frames.frameCount)
    }
}
