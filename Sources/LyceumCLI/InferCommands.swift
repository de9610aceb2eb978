import ArgumentParser
import Foundation
import InferenceCore

/// `lyceum infer status ID`: one deployment with its replica table.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a deployment and its replicas.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String
    @Flag(help: "Include stopped deployments and replicas.") var all = false
    @Flag var json = false

    func run() async throws {
        let api = client.client()
        let data = try await api.request(.GET, "/api/v2/external/inference/get?deployment_id=\(queryEscape(id))&include_terminated=\(all)")
        if json { return printJSON(data) }
        let d = try api.decode(DeploymentInfo.self, from: data)
        var rows = [
            ["deployment_id", d.deploymentId], ["model", d.hfModelId], ["hardware_profile", d.hardwareProfile],
            ["status", d.status.rawValue], ["replicas", "\(d.currentReplicas) healthy, \(d.desiredReplicas) desired (min \(d.minReplicas), max \(d.maxReplicas))"],
            ["target", "\(formatNumber(d.targetRps)) req/s per replica, p95 \(formatNumber(d.targetLatencyP95Ms)) ms, stabilisation \(d.stabilisationWindow) s"],
            ["created_at", shortTime(d.createdAt)],
        ]
        if let leader = await controlPlane(api) { rows.append(["control_plane", leader]) }
        print(table(["FIELD", "VALUE"], rows))
        guard !d.replicas.isEmpty else { return print("\nNo replicas.") }
        print("")
        print(table(["REPLICA", "STATUS", "HEALTHY", "NODE", "LAST CHECK", "RESTARTS", "REASON"], d.replicas.map {
            [$0.replicaId, $0.status.rawValue, $0.healthy ? "yes" : "no", $0.node ?? "-", shortTime($0.lastHealthCheck), "\($0.restartCount)", oneLine($0.failReason ?? "")]
        }))
    }
}

/// Which instance leads the fleet and which one answered, from `/cluster`; nil where the server has no
/// such route (the hosted service) or did not answer.
func controlPlane(_ api: APIClient) async -> String? {
    struct Cluster: Decodable {
        struct Leader: Decodable { var instanceId: String; var epoch: Int }
        var instanceId: String
        var store: String?
        var leader: Leader?
    }
    guard let data = try? await api.request(.GET, "/cluster", timeout: .seconds(5)),
        let cluster = try? api.decode(Cluster.self, from: data)
    else { return nil }
    guard let leader = cluster.leader else { return cluster.store == "sqlite" ? "one server (embedded store)" : "no leader yet (answered by \(cluster.instanceId))" }
    return "leader \(leader.instanceId) (epoch \(leader.epoch)), answered by \(cluster.instanceId)"
}

/// `lyceum infer deployments`: the caller's deployments.
struct Deployments: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List your deployments.")
    @OptionGroup var client: ClientOptions
    @Flag(help: "Include stopped deployments.") var all = false
    @Flag var json = false

    func run() async throws {
        let api = client.client()
        let data = try await api.request(.GET, "/api/v2/external/inference/list?include_terminated=\(all)")
        if json { return printJSON(data) }
        let list = try api.decode(DeploymentList.self, from: data)
        guard !list.deployments.isEmpty else { return print("No deployments\(all ? "" : " (use --all to include stopped ones)").") }
        print(table(["DEPLOYMENT", "MODEL", "PROFILE", "STATUS", "REPLICAS", "CREATED"], list.deployments.map {
            [$0.deploymentId, $0.hfModelId, $0.hardwareProfile, $0.status.rawValue, "\($0.currentReplicas)/\($0.maxReplicas)", shortTime($0.createdAt)]
        }))
    }
}

/// `lyceum infer stop ID`.
struct Stop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop a deployment and all its replicas.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String
    @Flag var json = false

    func run() async throws {
        let api = client.client()
        let data = try await api.request(.DELETE, "/api/v2/external/inference/stop", json: StopRequest(deploymentId: id), timeout: .seconds(120))
        if json { return printJSON(data) }
        let answer = try api.decode(StopResponse.self, from: data)
        print("Deployment \(answer.deploymentId) \(answer.status.rawValue).")
    }
}

/// `lyceum infer models`: the catalogue, and with `--dedicated` your deployments.
struct Models: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List deployable models and your deployments.")
    @OptionGroup var client: ClientOptions
    @Flag(help: "Only your deployments.") var dedicated = false
    @Flag var json = false

    func run() async throws {
        let api = client.client()
        if !dedicated {
            let data = try await api.request(.GET, "/api/v2/external/inference/models")
            if json { return printJSON(data) }
            let catalogue = try api.decode(CatalogueResponse.self, from: data)
            print(table(["MODEL", "PROFILE", "GPU", "PRICE/HOUR", "AVAILABLE", "READY TIMEOUT"], catalogue.models.map {
                [$0.hfModelId, $0.hardwareProfile, "\($0.gpuCount)x \($0.gpuType)", "$\($0.pricePerHour)",
                 $0.isGpuAvailable.map { $0 ? "yes" : "no" } ?? "-", "\($0.readyTimeoutS) s"]
            }))
            print("")
        }
        let data = try await api.request(.GET, "/api/v2/external/inference/list")
        if json { return printJSON(data) }
        let list = try api.decode(DeploymentList.self, from: data)
        print("Your deployments (call with model=<deployment_id>):")
        print(list.deployments.isEmpty ? "  none" : table(["DEPLOYMENT", "MODEL", "STATUS"], list.deployments.map {
            [$0.deploymentId, $0.hfModelId, $0.status.rawValue]
        }))
    }
}

/// `lyceum infer replica logs RID`.
struct ReplicaLogs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "Show a replica's last log lines.")
    @OptionGroup var client: ClientOptions
    @Argument var replicaId: String
    @Flag var json = false

    func run() async throws {
        let api = client.client()
        let data = try await api.request(.GET, "/api/v2/external/inference/replica/\(queryEscape(replicaId))/logs")
        if json { return printJSON(data) }
        print(try api.decode(ReplicaLogsResponse.self, from: data).errorLogs)
    }
}

/// `lyceum infer events ID`: what the platform decided about a deployment, and why.
struct Events: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a deployment's events.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String
    @Flag var json = false

    func run() async throws {
        let api = client.client()
        let data = try await api.request(.GET, "/api/v2/external/inference/events?deployment_id=\(queryEscape(id))")
        if json { return printJSON(data) }
        let list = try api.decode(EventList.self, from: data)
        print(table(["TIME", "EVENT", "MESSAGE"], list.events.map { [shortTime($0.at), $0.kind, oneLine($0.message)] }))
    }
}

func formatNumber(_ x: Double) -> String {
    x.rounded() == x ? String(Int(x)) : String(x)
}

func oneLine(_ s: String, limit: Int = 100) -> String {
    let flat = s.replacingOccurrences(of: "\n", with: " | ")
    return flat.count > limit ? String(flat.prefix(limit - 1)) + "…" : flat
}

/// `lyceum infer usage [ID]`: replica time and cost.
struct Usage: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show replica-seconds and cost, per deployment.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "A deployment id; all your deployments if omitted.") var id: String?
    @Option(help: "Start (ISO 8601 date or date-time; default 30 days ago).") var from: String?
    @Option(help: "End (default now).") var to: String?
    @Flag var json = false

    func run() async throws {
        let api = client.client()
        var query: [String] = []
        if let id { query.append("deployment_id=\(queryEscape(id))") }
        if let from { query.append("from=\(queryEscape(from))") }
        if let to { query.append("to=\(queryEscape(to))") }
        let data = try await api.request(.GET, "/api/v2/external/inference/usage" + (query.isEmpty ? "" : "?" + query.joined(separator: "&")))
        if json { return printJSON(data) }
        let usage = try api.decode(UsageResponse.self, from: data)
        print("From \(shortTime(usage.from)) to \(shortTime(usage.to)) UTC")
        print(table(["DEPLOYMENT", "PROFILE", "REPLICA-SECONDS", "COST (\(usage.currency))"], usage.deployments.map {
            [$0.deploymentId, $0.hardwareProfile, String(format: "%.1f", $0.replicaSeconds), $0.cost]
        } + [["total", "", String(format: "%.1f", usage.replicaSeconds), usage.cost]]))
    }
}
