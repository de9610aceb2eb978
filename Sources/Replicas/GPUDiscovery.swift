import Foundation
import Subprocess

/// One GPU as `nvidia-smi` reports it.
public struct GPUInfo: Sendable, Equatable {
    public var index: String
    public var name: String
    public var memoryMiB: Int?
    public var uuid: String?

    /// The GPU family as hardware profiles name it (`h100`, `a100`, ...), from the marketing name.
    public var family: String? {
        let upper = name.uppercased()
        for family in ["H200", "H100", "A100", "L40S", "L40", "L4", "A10G", "A10", "T4", "V100", "B200"] where upper.contains(family) {
            return family.lowercased()
        }
        return nil
    }
}

/// Finds GPUs with `nvidia-smi`; none when it is missing or fails.
public enum GPUDiscovery {
    public static let arguments = ["--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader,nounits"]

    /// Parses `nvidia-smi --query-gpu=index,name,memory.total,uuid --format=csv,noheader,nounits` output.
    public static func parse(_ output: String) -> [GPUInfo] {
        output.split(whereSeparator: \.isNewline).compactMap { line in
            let fields = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard fields.count >= 2, !fields[0].isEmpty, Int(fields[0]) != nil else { return nil }
            return GPUInfo(
                index: fields[0], name: fields[1], memoryMiB: fields.count > 2 ? Int(fields[2]) : nil,
                uuid: fields.count > 3 && !fields[3].isEmpty ? fields[3] : nil)
        }
    }

    public static func discover() async -> [GPUInfo] {
        do {
            let result = try await Subprocess.run(
                .name("nvidia-smi"), arguments: Arguments(arguments), output: .string(limit: 1 << 20), error: .discarded)
            guard result.terminationStatus.isSuccess else { return [] }
            return parse(result.standardOutput)
        } catch {
            return []
        }
    }
}
