import ArgumentParser
import Foundation
import InferenceCore

/// `lyceum infer deploy MODEL`: create a deployment, and with `-w` follow it until a replica is healthy.
struct Deploy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a deployment of a Hugging Face model.")

    @OptionGroup var client: ClientOptions
    @Argument(help: "Hugging Face model id, e.g. meta-llama/Llama-3.1-8B-Instruct.") var model: String
    @Option(name: [.customShort("g"), .customLong("gpu-type")], help: "Hardware profile, e.g. gpu.a100, gpu.h100, sim.h100, cpu.")
    var gpuType: String = "gpu.a100"
    @Option(name: .customLong("gpu-count"), help: "GPUs per replica; above 1 selects the profile '<gpu-type>x<N>'.") var gpuCount: Int = 1
    @Option(name: .customLong("hf-token"), help: "Token for gated models (or $HF_TOKEN).") var hfToken: String?
    @Option(name: .customLong("min-replicas")) var minReplicas: Int = 1
    @Option(name: .customLong("max-replicas"), help: "Default: the minimum.") var maxReplicas: Int?
    @Option(name: .customLong("target-rps"), help: "Requests per second per replica.") var targetRps: Double = 10
    @Option(name: .customLong("target-latency"), help: "Target p95 latency, ms.") var targetLatency: Double = 5000
    @Option(name: .customLong("stabilisation"), help: "Seconds before scaling down.") var stabilisation: Int = 300
    @Flag(name: .shortAndLong, help: "Do not ask for confirmation.") var yes = false
    @Flag(name: [.customShort("w"), .customLong("wait")], help: "Wait, showing progress, until a replica is healthy.") var wait = false
    @Option(help: "With -w: seconds to wait for a healthy replica after any model download (default: the profile's ready timeout).")
    var timeout: Double?
    @Flag var json = false

    struct Body: Encodable {
        var hfModelId: String
        var hardwareProfile: String
        var targetRps: Double
        var targetLatencyP95Ms: Double
        var stabilisationWindow: Int
        var minReplicas: Int
        var maxReplicas: Int
        var hfToken: String?
    }

    func validate() throws {
        guard gpuCount >= 1 else { throw ValidationError("--gpu-count must be at least 1") }
    }

    func run() async throws {
        let api = client.client()
        var profile = gpuType.contains(".") || gpuType == "cpu" ? gpuType : "gpu.\(gpuType)"
        if gpuCount > 1 { profile += "x\(gpuCount)" }
        let body = Body(
            hfModelId: model, hardwareProfile: profile, targetRps: targetRps, targetLatencyP95Ms: targetLatency,
            stabilisationWindow: stabilisation, minReplicas: minReplicas, maxReplicas: maxReplicas ?? max(minReplicas, 1),
            hfToken: hfToken ?? ProcessInfo.processInfo.environment["HF_TOKEN"])
        let catalogue = try? await api.get("/api/v2/external/inference/models", as: CatalogueResponse.self)
        let entry = catalogue?.models.first { $0.hardwareProfile == profile }
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
