import ArgumentParser
import Foundation
import InferenceCore

/// `lyceum infer deploy MODEL`: create a deployment, and with `-w` follow it until a replica is healthy.
struct Deploy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a deployment of a Hugging Face model.")

    @OptionGroup var client: ClientOptions
    @Argument(help: "Hugging Face model id, e.g. meta-llama/Llama-3.1-8B-Instruct.") var model: String
    @Option(name: [.customShort("g"), .customLong("gpu-type")], help: "GPU type (h100, a100, cpu) or a hardware profile (sim.h100, gpu.a100); default: the model's first in the catalogue.")
    var gpuType: String?
    @Option(name: .customLong("hardware-profile"), help: "A hardware profile by name (the documented API's field).") var hardwareProfile: String?
    @Option(name: .customLong("gpu-count"), help: "GPUs per replica; default: the model's.") var gpuCount: Int?
    @Option(name: [.customShort("t"), .customLong("hf-token")], help: "Token for gated models (or $HF_TOKEN).") var hfToken: String?
    @Option(name: .customLong("min-replicas")) var minReplicas: Int = 1
    @Option(name: .customLong("max-replicas"), help: "Default: the minimum.") var maxReplicas: Int?
    @Option(name: .customLong("target-rps"), help: "Requests per second per replica (server default 10).") var targetRps: Double?
    @Option(name: .customLong("target-latency"), help: "Target p95 latency, ms (server default 5000).") var targetLatency: Double?
    @Option(name: .customLong("stabilisation"), help: "Seconds before scaling down (server default 300).") var stabilisation: Int?
    @Flag(name: .shortAndLong, help: "Do not ask for confirmation.") var yes = false
    @Flag(name: [.customShort("w"), .customLong("wait")], help: "Wait, showing progress, until a replica is healthy.") var wait = false
    @Option(help: "With -w: seconds to wait for a healthy replica after any model download (default: the profile's ready timeout).")
    var timeout: Double?
    @Flag var json = false

    struct Body: Encodable {
        var hfModelId: String
        var hardwareProfile: String?
        var gpuType: String?
        var gpuCount: Int?
        var targetRps: Double?
        var targetLatencyP95Ms: Double?
        var stabilisationWindow: Int?
        var minReplicas: Int
        var maxReplicas: Int
        var hfToken: String?
    }

    func validate() throws {
        if let gpuCount { guard gpuCount >= 1 else { throw ValidationError("--gpu-count must be at least 1") } }
    }

    func run() async throws {
        let api = client.client()
        let body = Body(
            hfModelId: model, hardwareProfile: hardwareProfile, gpuType: gpuType, gpuCount: gpuCount, targetRps: targetRps, targetLatencyP95Ms: targetLatency,
            stabilisationWindow: stabilisation, minReplicas: minReplicas, maxReplicas: maxReplicas ?? max(minReplicas, 1),
            hfToken: hfToken ?? ProcessInfo.processInfo.environment["HF_TOKEN"])
        let catalogue = try? await api.get("/api/v2/external/inference/models", as: CatalogueResponse.self)
        let shape = (hardwareProfile ?? gpuType)?.lowercased()
        let entry = catalogue?.models.first { m in
            (m.hfModelId.lowercased() == model.lowercased() || m.servingName == model.lowercased())
                && (shape.map { [m.hardwareProfile, m.gpuType].contains($0) } ?? true)
        }
        let profile = hardwareProfile ?? entry?.hardwareProfile ?? gpuType ?? "the model's default profile"
        if !yes, isatty(0) == 1, !json {
            let price = entry.map { " at $\($0.pricePerHour) per replica-hour" } ?? ""
            print("Deploy \(model) on \(profile)\(price), \(body.minReplicas) to \(body.maxReplicas) replicas? [y/N] ", terminator: "")
            guard let answer = readLine(), ["y", "yes"].contains(answer.lowercased()) else {
                throw CLIFailure("cancelled")
            }
        }
        let data = try await api.request(.POST, "/api/v2/external/inference/create", json: body)
        let created = try api.decode(CreateDeploymentResponse.self, from: data)
        if json && !wait { return printJSON(data) }
        if !json { print("Deployment \(created.deploymentId) created (\(model) on \(profile)).") }
        guard wait else {
            print("Follow it with: lyceum infer status \(created.deploymentId)")
            return
        }
        let timeout = self.timeout ?? Double(entry?.readyTimeoutS ?? 600)
        let info = try await Progress.follow(api: api, id: created.deploymentId, timeout: timeout, quiet: json)
        if json {
            return printJSON(try WireJSON.encoder.encode(info))
        }
        print("Deployment \(info.deploymentId) is running: \(info.currentReplicas) of \(info.desiredReplicas) replicas healthy.")
        print("Call it: OpenAI(base_url=\"\(api.baseURL)/openai/v1\", api_key=...) with model=\"\(info.deploymentId)\"")
    }
}

/// Follows a deployment until it runs, fails, or the timeout passes; shows replica states as they change.
enum Progress {
    static let spinner = Array("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")

    static func follow(api: APIClient, id: String, timeout: Double, quiet: Bool) async throws -> DeploymentInfo {
        let start = Date()
        var waitedSince = start
        var tick = 0
        var lastLine = ""
        while true {
            let info = try await api.get("/api/v2/external/inference/get?deployment_id=\(queryEscape(id))", as: DeploymentInfo.self)
            let elapsed = Date().timeIntervalSince(start)
            let replicas = info.replicas.map { r in
                "\(r.replicaId.prefix(8)) \(r.status.rawValue)\(r.healthy ? " (healthy)" : "")"
            }.joined(separator: ", ")
            // A model download's progress, when one is under way (replicas of one model share it).
            let progress = info.replicas.compactMap(\.progress).first.map { "  \($0)" } ?? ""
            let line = "\(info.status.rawValue)  \(info.currentReplicas)/\(info.desiredReplicas) healthy  [\(replicas)]\(progress)"
            if !quiet {
                if isTerminal {
                    print("\r\u{1B}[2K\(spinner[tick % spinner.count]) \(line)  \(Int(elapsed))s", terminator: "")
                    fflush(nil)
                } else if line != lastLine {
                    print("[\(Int(elapsed))s] \(line)")
                }
            }
            lastLine = line
            tick += 1
            switch info.status {
            case .running:
                if !quiet && isTerminal { print("") }
                return info
            case .failed, .stopped:
                if !quiet && isTerminal { print("") }
                let reasons = info.replicas.compactMap { r in r.failReason.map { "  \(r.replicaId): \($0)" } }
                throw CLIFailure("deployment \(id) is \(info.status.rawValue)" + (reasons.isEmpty ? "" : ":\n" + reasons.joined(separator: "\n")))
            default:
                break
            }
            // A download under way is progress: the wait for readiness counts from its end.
            if info.replicas.contains(where: { $0.status == .pullingDockerImage }) { waitedSince = Date() }
            if Date().timeIntervalSince(waitedSince) > timeout {
                if !quiet && isTerminal { print("") }
                let reasons = info.replicas.compactMap { r in r.failReason.map { "  \(r.replicaId): \($0)" } }
                throw CLIFailure("deployment \(id) is not running after \(Int(timeout)) s (still \(info.status.rawValue))" + (reasons.isEmpty ? "" : ":\n" + reasons.joined(separator: "\n")))
            }
            try await Task.sleep(for: .milliseconds(isTerminal ? 250 : 1000))
        }
    }
}
