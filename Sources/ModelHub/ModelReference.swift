import Foundation

/// What a deployment's `hf_model_id` names: a repository on the Hugging Face Hub (optionally one file in
/// it, `org/repo:file.gguf`), or a file or directory already on this machine (a path or `file://` URL,
/// for air-gapped operators).
public enum ModelReference: Sendable, Equatable {
    case hub(repo: String, file: String?)
    case local(path: String)

    public init(_ modelId: String) {
        if modelId.hasPrefix("file://") {
            self = .local(path: String(modelId.dropFirst(7)))
        } else if modelId.hasPrefix("/") || modelId.hasPrefix("./") || modelId.hasPrefix("~/") {
            self = .local(path: (modelId as NSString).expandingTildeInPath)
        } else if let colon = modelId.firstIndex(of: ":") {
            self = .hub(repo: String(modelId[..<colon]), file: String(modelId[modelId.index(after: colon)...]))
        } else {
            self = .hub(repo: modelId, file: nil)
        }
    }
}

/// Which files of a repository an engine needs.
public enum ModelFormat: Sendable, Equatable {
    /// One GGUF file (llama.cpp): the one named, or a sensible default quantization.
    case gguf(file: String?)
    /// A Transformers checkpoint (vLLM): config, tokenizer and one weight format.
    case checkpoint

    /// `checkpoint`, `gguf` or `gguf:FILE`: how a cluster node's launcher is told what to fetch.
    public var name: String {
        switch self {
        case .checkpoint: "checkpoint"
        case .gguf(let file?): "gguf:\(file)"
        case .gguf(nil): "gguf"
        }
    }

    public init?(name: String) {
        if name == "checkpoint" {
            self = .checkpoint
        } else if name == "gguf" {
            self = .gguf(file: nil)
        } else if name.hasPrefix("gguf:"), name.count > 5 {
            self = .gguf(file: String(name.dropFirst(5)))
        } else {
            return nil
        }
    }
}

/// The quantizations tried, in order, when a GGUF repository is named without a file: the usual
/// quality/size balance first, then smaller, then larger.
let preferredQuantizations = ["q4_k_m", "q4_k_s", "q4_0", "q5_k_m", "q5_0", "q6_k", "q8_0", "f16", "bf16"]

/// Picks the GGUF file to serve from a repository's file list, or nil if it has none. Multimodal
/// projector files are skipped; for a split file (`-00001-of-00003.gguf`) its first part is returned.
public func chooseGGUF(_ files: [String]) -> String? {
    let ggufs = files.filter { $0.lowercased().hasSuffix(".gguf") && !$0.lowercased().contains("mmproj") }
        .filter { name in
            // Of a split file, only the first part names it.
            guard let range = name.range(of: #"-(\d{5})-of-\d{5}\.gguf$"#, options: .regularExpression) else { return true }
            return name[range].hasPrefix("-00001-")
        }
        .sorted()
    for quantization in preferredQuantizations {
        if let match = ggufs.first(where: { $0.lowercased().contains(quantization) }) { return match }
    }
    return ggufs.first
}

/// The files of a Transformers checkpoint vLLM loads: everything but weights, plus the weights of one
/// format (safetensors when there are any, else PyTorch `.bin`/`.pt`). Other formats, GGUF files and the
/// `original/` folder some repositories carry are left out.
public func checkpointFiles(_ files: [String]) -> [String] {
    let weightSuffixes = [".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".onnx", ".ot", ".ckpt", ".tflite"]
    let isWeights = { (name: String) in weightSuffixes.contains { name.lowercased().hasSuffix($0) } }
    let kept = files.filter { !$0.hasPrefix("original/") && !$0.hasPrefix(".") && !$0.contains("/.") }
    let safetensors = kept.filter { $0.hasSuffix(".safetensors") }
    let weights = safetensors.isEmpty ? kept.filter { $0.hasSuffix(".bin") || $0.hasSuffix(".pt") } : safetensors
    return kept.filter { !isWeights($0) } + weights
}
