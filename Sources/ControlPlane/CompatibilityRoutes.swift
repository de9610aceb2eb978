import DeploymentStore
import Foundation
import Hummingbird
import InferenceCore

/// Routes the hosted service's published CLI calls before or around its work (`lyceum-cli` 1.2.2), in the
/// shapes it parses: who the key acts for, the machine types that prove a key works, and its serverless
/// model list (here: the deployments the key can call).
extension ControlPlaneRoutes {
    func addCompatibilityRoutes(to api: RouterGroup<LyceumRequestContext>) {
        api.get("user/org") { _, context in try await userOrg(context) }
        api.get("machine-types") { _, _ in machineTypes() }
        api.get("serverless/models") { _, context in try await serverlessModels(context) }
    }

    /// The organisation the key acts for. Keys belong to one organisation, so they are always key-scoped.
    func userOrg(_ context: LyceumRequestContext) async throws -> Response {
        let caller = try context.requireCaller()
        let org = try await store.organization(id: caller.orgId)
        let name = org?.name ?? caller.orgId
        return DetailErrorMiddleware.respond(
            .ok, UserOrg(orgId: caller.orgId, slug: Self.slug(name), name: name, isPersonal: false, isKeyScoped: true))
    }

    /// Hardware profiles as machine types: `price_per_hour` is a number here, as the client formats it.
    func machineTypes() -> Response {
        DetailErrorMiddleware.respond(
            .ok,
            MachineTypes(machineTypes: profiles.map {
                MachineType(
                    hardwareProfile: $0.name, pricePerHour: Double($0.pricePerHour) ?? 0, gpuType: $0.gpuType, gpuCount: $0.gpuCount,
                    engine: $0.engine.rawValue)
            }))
    }

    /// An OpenAI model list of the deployments this key can call.
    func serverlessModels(_ context: LyceumRequestContext) async throws -> Response {
        let caller = try context.requireCaller()
        let deployments = try await store.deployments(orgId: caller.orgId, includeTerminated: false)
        return DetailErrorMiddleware.respond(
            .ok,
            ModelList(data: deployments.map {
                ModelEntry(id: $0.id, created: Int($0.createdAt.timeIntervalSince1970), ownedBy: "lyceum", root: $0.hfModelId)
            }))
    }

    /// A slug from an organisation's name: lower-case letters, digits and dashes.
    static func slug(_ name: String) -> String {
        let mapped = name.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "-" }
        return String(mapped).split(separator: "-").joined(separator: "-")
    }
}

struct UserOrg: Encodable {
    var orgId: String
    var slug: String
    var name: String
    var isPersonal: Bool
    var isKeyScoped: Bool
}

struct MachineTypes: Encodable {
    var machineTypes: [MachineType]
}

struct MachineType: Encodable {
    var hardwareProfile: String
    var pricePerHour: Double
    var gpuType: String
    var gpuCount: Int
    var engine: String
}

struct ModelList: Encodable {
    var object = "list"
    var data: [ModelEntry]
}

struct ModelEntry: Encodable {
    var id: String
    var object = "model"
    var created: Int
    var ownedBy: String
    var root: String
}
