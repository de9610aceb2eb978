import Controller
import Routing
import DeploymentStore
import Foundation
import Hummingbird
import InferenceCore
import ModelHub
import Replicas

/// The contract's control-plane API under `/api/v2/external`, plus key administration.
public struct ControlPlaneRoutes: Sendable {
    let store: any DeploymentStore
    let fleet: any FleetControl
    let authenticator: Authenticator
    let sealer: SecretSealer
    let profiles: [HardwareProfile]
    /// Checks Hub model ids at create time; nil skips the check.
    let hub: HubClient?
    let hubCheckTimeout: Duration
    let policy: TenantPolicy

    public init(
        store: any DeploymentStore, fleet: any FleetControl, authenticator: Authenticator, sealer: SecretSealer,
        profiles: [HardwareProfile], hub: HubClient? = nil, hubCheckTimeout: Duration = .seconds(5), policy: TenantPolicy = .init()
    ) {
        self.policy = policy
        self.hub = hub
        self.hubCheckTimeout = hubCheckTimeout
        self.store = store
        self.fleet = fleet
        self.authenticator = authenticator
        self.sealer = sealer
        self.profiles = profiles
    }

    public func add(to router: Router<LyceumRequestContext>) {
        let api = router.group("api/v2/external")
            .add(middleware: DetailErrorMiddleware())
            .add(middleware: DetailAuthMiddleware(authenticator: authenticator))
        api.post("inference/create") { request, context in try await create(request, context) }
        api.get("inference/get") { request, context in try await get(request, context) }
        api.get("inference/list") { request, context in try await list(request, context) }
        api.delete("inference/stop") { request, context in try await stop(request, context) }
        api.get("inference/models") { _, _ in try await catalogue() }
        api.get("inference/replica/:replica_id/logs") { _, context in try await replicaLogs(context) }
        api.get("inference/events") { request, context in try await events(request, context) }
        api.get("inference/usage") { request, context in try await usage(request, context) }
        api.get("pricing") { _, _ in pricing() }
        api.post("admin/keys") { request, context in try await createKey(request, context) }
        addCompatibilityRoutes(to: api)
    }

    // MARK: Deployments

    func create(_ request: Request, _ context: LyceumRequestContext) async throws -> Response {
        let caller = try context.requireCaller()
        let body = try await request.body.collect(upTo: context.maxUploadSize)
        let spec = try DeploymentSpec.validate(body: Data(buffer: body), profiles: profiles, limits: policy.createLimits)
        let engine = profiles.first(where: { $0.name == spec.hardwareProfile })?.engine ?? .sim
        if case .local(let path) = ModelReference(spec.hfModelId), engine != .sim,
            let refusal = policy.localModels.refusal(path: path, isAdmin: caller.isAdmin)
        {
            throw ValidationFailure([ValidationIssue(field: "hf_model_id", msg: "Value error, \(refusal)", type: "value_error")])
        }
        if !caller.isAdmin {
            let asked = try await store.desiredReplicaCount(orgId: caller.orgId)
            if saturatingAdd(asked, spec.minReplicas) > policy.quota.maxReplicas {
                throw ValidationFailure([ValidationIssue(
                    field: "min_replicas",
                    msg: "Value error, your organisation's active deployments already ask for \(asked) replicas; its limit is \(policy.quota.maxReplicas)",
                    type: "value_error")])
            }
        }
        let hubNote = try await checkHub(spec, engine: engine, caller: caller)
        let sealed = try spec.hfToken.map { try sealer.seal($0) }
        let record = DeploymentRecord(
            id: UUID().uuidString.lowercased(), orgId: caller.orgId, spec: spec, hfTokenSealed: sealed, now: Date())
        try await store.insert(
            record,
            event: "created: \(spec.hfModelId) on \(spec.hardwareProfile), \(spec.minReplicas) to \(spec.maxReplicas) replicas")
        if let hubNote { try await store.addEvent(deploymentId: record.id, kind: "hub_check", message: hubNote) }
        fleet.poke(deploymentId: record.id)
        return DetailErrorMiddleware.respond(.ok, CreateDeploymentResponse(deploymentId: record.id, status: .created))
    }

    /// Engines that load weights need the model from the Hub: it must exist and the token must read it. An
    /// organisation that passes the check is recorded as granted the model; when the Hub cannot be reached, a
    /// model already in the cache is served only to an organisation granted it before.
    func checkHub(_ spec: DeploymentSpec, engine: EngineKind, caller: Caller) async throws -> String? {
        guard let hub, let (repo, format) = Controller.hubFiles(modelId: spec.hfModelId, engine: engine) else { return nil }
        switch await hub.check(repo: repo, format: format, token: spec.hfToken, timeout: hubCheckTimeout) {
        case .ok(let model, let files):
            try await store.grantModel(orgId: caller.orgId, repo: repo)
            return "checked on the Hub: \(repo) at \(model.sha.prefix(12))\(model.gated ? " (gated; the token grants access)" : ""), will fetch \(files.count == 1 ? files[0] : "\(files.count) files")"
        case .refused(let field, let message):
            throw ValidationFailure([ValidationIssue(field: field, msg: message, type: "value_error")])
        case .skipped(let reason):
            if policy.isModelCached(repo), try await !store.hasModelGrant(orgId: caller.orgId, repo: repo) {
                throw ValidationFailure([ValidationIssue(
                    field: "hf_model_id",
                    msg: "Value error, the Hugging Face Hub cannot be reached to check your access to \(repo) (\(reason)), and your organisation has not been granted it before; retry when the Hub is reachable",
                    type: "value_error")])
            }
            return "Hub check skipped: \(reason); the model will be fetched when a replica starts"
        }
    }

    func get(_ request: Request, _ context: LyceumRequestContext) async throws -> Response {
        let caller = try context.requireCaller()
        let id = try request.uri.queryParameters.required("deployment_id")
        let includeTerminated = try request.uri.queryParameters.flag("include_terminated")
        let deployment = try await ownedDeployment(id, caller: caller, includeTerminated: includeTerminated)
        let replicas = try await store.replicas(deploymentId: deployment.id)
        return DetailErrorMiddleware.respond(.ok, info(deployment, replicas, includeTerminated: includeTerminated))
    }

    func list(_ request: Request, _ context: LyceumRequestContext) async throws -> Response {
        let caller = try context.requireCaller()
        let includeTerminated = try request.uri.queryParameters.flag("include_terminated")
        // Optional pages (newest first): the published client reads the whole list; large fleets page it.
        let limit = try request.uri.queryParameters.bounded("limit", 1...1000)
        let offset = try request.uri.queryParameters.bounded("offset", 0...10_000_000) ?? 0
        let deployments = try await store.deployments(orgId: caller.orgId, includeTerminated: includeTerminated, limit: limit, offset: offset)
        let replicas = try await store.replicas(deploymentIds: deployments.map(\.id))
        let infos = deployments.map { info($0, replicas[$0.id] ?? [], includeTerminated: includeTerminated) }
        return DetailErrorMiddleware.respond(.ok, DeploymentList(deployments: infos))
    }

    func stop(_ request: Request, _ context: LyceumRequestContext) async throws -> Response {
        let caller = try context.requireCaller()
        let body = try await request.body.collect(upTo: context.maxUploadSize)
        let json: JSONValue
        do {
            json = try JSONDecoder().decode(JSONValue.self, from: Data(buffer: body))
        } catch {
            throw ValidationFailure([ValidationIssue(loc: ["body"], msg: "JSON decode error: the body is not valid JSON", type: "json_invalid")])
        }
        guard let value = json["deployment_id"], value != .null else {
            throw ValidationFailure([ValidationIssue(field: "deployment_id", msg: "Field required", type: "missing")])
        }
        guard let id = value.stringValue else {
            throw ValidationFailure([ValidationIssue(field: "deployment_id", msg: "Input should be a valid string", type: "string_type")])
        }
        let deployment = try await ownedDeployment(id, caller: caller, includeTerminated: true)
        if deployment.status != .stopped {
            try await fleet.stopDeployment(id: deployment.id)
        }
        return DetailErrorMiddleware.respond(.ok, StopResponse(deploymentId: deployment.id, status: .stopped))
    }

    /// The caller's deployment, or 404: unknown, another organisation's, and (unless asked) stopped look the same.
    func ownedDeployment(_ id: String, caller: Caller, includeTerminated: Bool) async throws -> DeploymentRecord {
        // Ids with NUL or control characters never reach the store (SQLite cuts a string at its first NUL).
        guard id.isPlausibleIdentifier else { throw ControlPlaneError(.notFound, "Deployment not found: the id is not a deployment id") }
        guard let d = try await store.deployment(id: id.lowercased()), d.orgId == caller.orgId else {
            throw ControlPlaneError.notFound(id)
        }
        if d.status.isTerminated && !includeTerminated {
            throw ControlPlaneError(.notFound, "Deployment \(id) not found among active deployments (it is stopped; pass include_terminated=true to see it)")
        }
        return d
    }

    func info(_ d: DeploymentRecord, _ replicas: [ReplicaRecord], includeTerminated: Bool) -> DeploymentInfo {
        let shown = includeTerminated || d.status.isTerminated ? replicas : replicas.filter { $0.status != .stopped }
        return DeploymentInfo(
            deploymentId: d.id, hfModelId: d.hfModelId, hardwareProfile: d.hardwareProfile, status: d.status,
            currentReplicas: replicas.filter { $0.status == .running && $0.healthy }.count,
            desiredReplicas: d.desiredReplicas, minReplicas: d.minReplicas, maxReplicas: d.maxReplicas,
            targetRps: d.targetRps, targetLatencyP95Ms: d.targetLatencyP95Ms, stabilisationWindow: d.stabilisationWindow,
            createdAt: WireJSON.timestamp(d.createdAt),
            replicas: shown.map {
                ReplicaInfo(
                    replicaId: $0.id, status: $0.status, healthy: $0.healthy,
                    lastHealthCheck: $0.lastHealthCheck.map(WireJSON.timestamp), failReason: $0.failReason,
                    restartCount: $0.restartCount, createdAt: WireJSON.timestamp($0.createdAt), progress: $0.progress,
                    node: Self.node(of: $0))
            })
    }

    /// Where a replica runs, for `get`: `local` for a process of the server, else the node's address.
    static func node(of replica: ReplicaRecord) -> String? {
        guard let handle = replica.handle else { return nil }
        return handle.hasPrefix("pid:") ? "local" : replica.host ?? "unknown"
    }

    // MARK: Catalogue, logs, events, pricing

    func catalogue() async throws -> Response {
        var models: [CatalogueModel] = []
        for profile in profiles {
            let available: Bool? = profile.gpuCount == 0 ? nil : await fleet.freeDeviceCount(profile: profile) >= profile.gpuCount
            for model in profile.catalogue {
                models.append(
                    CatalogueModel(
                        servingName: Catalogue.servingName(model), hfModelId: model,
                        hardwareProfile: profile.name, gpuType: profile.gpuType, gpuCount: profile.gpuCount,
                        pricePerHour: profile.pricePerHour, isGpuAvailable: available, readyTimeoutS: profile.readyTimeoutS))
            }
        }
        return DetailErrorMiddleware.respond(.ok, CatalogueResponse(models: models))
    }

    func replicaLogs(_ context: LyceumRequestContext) async throws -> Response {
        let caller = try context.requireCaller()
        let replicaId = try context.parameters.require("replica_id").lowercased()
        guard replicaId.isPlausibleIdentifier, let replica = try await store.replica(id: replicaId),
            let deployment = try await store.deployment(id: replica.deploymentId), deployment.orgId == caller.orgId
        else {
            throw ControlPlaneError(.notFound, "Replica \(replicaId) not found")
        }
        var text = await fleet.replicaLogs(replicaId: replicaId, handle: replica.handle, maxLines: 200)
        if let sealed = deployment.hfTokenSealed, let token = try? sealer.open(sealed), !token.isEmpty {
            text = text.replacingOccurrences(of: token, with: "[hf_token redacted]")
        }
        return DetailErrorMiddleware.respond(.ok, ReplicaLogsResponse(errorLogs: text))
    }

    func events(_ request: Request, _ context: LyceumRequestContext) async throws -> Response {
        let caller = try context.requireCaller()
        let id = try request.uri.queryParameters.required("deployment_id")
        let deployment = try await ownedDeployment(id, caller: caller, includeTerminated: true)
        let events = try await store.events(deploymentId: deployment.id)
        return DetailErrorMiddleware.respond(
            .ok,
            EventList(
                deploymentId: deployment.id,
                events: events.map { EventInfo(at: WireJSON.timestamp($0.at), kind: $0.kind, message: $0.message) }))
    }

    /// Replica-seconds and cost per deployment over `[from, to]` (ISO 8601; default: the last 30 days to now).
    func usage(_ request: Request, _ context: LyceumRequestContext) async throws -> Response {
        let caller = try context.requireCaller()
        let now = Date()
        let query = request.uri.queryParameters
        func date(_ name: String, _ fallback: Date) throws -> Date {
            guard let text = query.get(name), !text.isEmpty else { return fallback }
            if let d = try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)) { return d }
            if let d = try? Date(text, strategy: Date.ISO8601FormatStyle()) { return d }
            if let d = try? Date(text + "T00:00:00Z", strategy: Date.ISO8601FormatStyle()) { return d }
            throw ValidationFailure([ValidationIssue(loc: ["query", name], msg: "Input should be an ISO 8601 date or date-time", type: "datetime_parsing")])
        }
        let from = try date("from", now.addingTimeInterval(-30 * 86400))
        let to = try date("to", now)
        var deploymentId: String?
        if let id = query.get("deployment_id"), !id.isEmpty {
            deploymentId = try await ownedDeployment(id, caller: caller, includeTerminated: true).id
        }
        let runs = try await store.runs(orgId: caller.orgId, deploymentId: deploymentId, from: from, to: to)
        var perDeployment: [String: (profile: String, seconds: Double, cost: Decimal)] = [:]
        for run in runs {
            let seconds = run.seconds(from: from, to: to, now: now)
            let price = Decimal(string: run.pricePerHour) ?? 0
            var entry = perDeployment[run.deploymentId] ?? (run.hardwareProfile, 0, 0)
            entry.seconds += seconds
            entry.cost += price * Decimal(seconds) / 3600
            perDeployment[run.deploymentId] = entry
        }
        let rows = perDeployment.sorted { $0.key < $1.key }.map {
            DeploymentUsage(deploymentId: $0.key, hardwareProfile: $0.value.profile, replicaSeconds: ($0.value.seconds * 1000).rounded() / 1000, cost: money($0.value.cost))
        }
        let totalSeconds = perDeployment.values.reduce(0) { $0 + $1.seconds }
        let totalCost = perDeployment.values.reduce(Decimal(0)) { $0 + $1.cost }
        return DetailErrorMiddleware.respond(
            .ok,
            UsageResponse(
                from: WireJSON.timestamp(from), to: WireJSON.timestamp(to), currency: "USD",
                replicaSeconds: (totalSeconds * 1000).rounded() / 1000, cost: money(totalCost), deployments: rows))
    }

    func money(_ value: Decimal) -> String {
        var v = value
        var rounded = Decimal()
        NSDecimalRound(&rounded, &v, 4, .plain)
        return String(format: "%.4f", NSDecimalNumber(decimal: rounded).doubleValue)
    }

    func pricing() -> Response {
        DetailErrorMiddleware.respond(
            .ok,
            PricingResponse(prices: profiles.map {
                PriceEntry(hardwareProfile: $0.name, gpuType: $0.gpuType, gpuCount: $0.gpuCount, pricePerHour: $0.pricePerHour)
            }))
    }

    // MARK: Keys

    func createKey(_ request: Request, _ context: LyceumRequestContext) async throws -> Response {
        let caller = try context.requireCaller()
        guard caller.isAdmin else { throw ControlPlaneError(.forbidden, "Only an admin key can create keys") }
        let body = try await request.body.collect(upTo: context.maxUploadSize)
        guard let json = try? JSONDecoder().decode(JSONValue.self, from: Data(buffer: body)) else {
            throw ValidationFailure([ValidationIssue(loc: ["body"], msg: "JSON decode error: the body is not valid JSON", type: "json_invalid")])
        }
        guard let org = json["org"]?.stringValue?.trimmingCharacters(in: .whitespaces), !org.isEmpty, org.count <= 100 else {
            throw ValidationFailure([ValidationIssue(field: "org", msg: "Field required: an organisation name of 1 to 100 characters", type: "missing")])
        }
        let key = try await authenticator.createKey(org: org, isAdmin: false)
        return DetailErrorMiddleware.respond(.ok, CreateKeyResponse(apiKey: key, org: org))
    }
}

extension LyceumRequestContext {
    func requireCaller() throws -> Caller {
        guard let caller else { throw ControlPlaneError.unauthorized }
        return caller
    }
}

extension Parameters {
    /// A required query parameter, or a 422 naming it.
    func required(_ name: String) throws -> String {
        guard let value = self.get(name), !value.isEmpty else {
            throw ValidationFailure([ValidationIssue(loc: ["query", name], msg: "Field required", type: "missing")])
        }
        return value
    }

    /// An optional integer query parameter within `range`, or a 422 naming it and the bound.
    func bounded(_ name: String, _ range: ClosedRange<Int>) throws -> Int? {
        guard let text = self.get(name), !text.isEmpty else { return nil }
        guard let value = Int(text), range.contains(value) else {
            throw ValidationFailure([ValidationIssue(
                loc: ["query", name], msg: "Input should be an integer from \(range.lowerBound) to \(range.upperBound)", type: "int_parsing")])
        }
        return value
    }

    /// A boolean query parameter (absent means false), or a 422 for anything but true/false/1/0.
    func flag(_ name: String) throws -> Bool {
        guard let value = self.get(name) else { return false }
        switch value.lowercased() {
        case "true", "1", "yes", "on": return true
        case "false", "0", "no", "off", "": return false
        default:
            throw ValidationFailure([ValidationIssue(loc: ["query", name], msg: "Input should be a valid boolean", type: "bool_parsing")])
        }
    }
}
