import ArgumentParser
import SAM2Checkpoint

/// `--model` / `--config` / `--checkpoint`, as every command that runs a model takes them.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: "Model name: sam2.1_hiera_{tiny,small,base_plus,large}, sam2_hiera_*, or edgetam (EdgeTAM, about 5x faster on a CPU) (default sam2.1_hiera_tiny).")
    var model: String?
    @Option(name: .long, help: ArgumentHelp("A model config YAML (official schema) instead of --model.", valueName: "FILE"))
    var config: String?
    @Option(name: .long, help: ArgumentHelp("The checkpoint (.pt or .safetensors).", valueName: "FILE"))
    var checkpoint: String?

    func validate() throws {
        if model != nil && config != nil { throw ValidationError("use either --model or --config, not both") }
    }

    /// The config and a readable checkpoint (see `CheckpointCache.resolve`).
    func resolve() throws -> (config: SAM2Config, checkpoint: String) {
        try CheckpointCache.resolve(model: model, config: config, checkpoint: checkpoint)
    }
}
