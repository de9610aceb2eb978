import Foundation

/// A valid request to create a deployment.
public struct DeploymentSpec: Sendable, Equatable {
    public var hfModelId: String
    public var hardwareProfile: String
    public var targetRps: Double
    public var targetLatencyP95Ms: Double
    public var stabilisationWindow: Int
    public var minReplicas: Int
    public var maxReplicas: Int
    public var hfToken: String?

    public init(
        hfModelId: String, hardwareProfile: String, targetRps: Double, targetLatencyP95Ms: Double,
        stabilisationWindow: Int, minReplicas: Int = 1, maxReplicas: Int = 1, hfToken: String? = nil
    ) {
        self.hfModelId = hfModelId
        self.hardwareProfile = hardwareProfile
        self.targetRps = targetRps
        self.targetLatencyP95Ms = targetLatencyP95Ms
        self.stabilisationWindow = stabilisationWindow
        self.minReplicas = minReplicas
        self.maxReplicas = maxReplicas
        self.hfToken = hfToken
    }
}

/// The bounds a create request is held to: every number a tenant sends is bounded before anything computes
/// with it, so no value can trap the server or jam the fleet.
public struct CreateLimits: Sendable, Equatable {
    /// The operator's ceiling on `max_replicas` (config `max_replicas_per_deployment`).
    public var maxReplicasPerDeployment = 64
    public static let targetRps: ClosedRange<Double> = 0.001...1_000_000
    public static let targetLatencyP95Ms: ClosedRange<Double> = 1...3_600_000
    /// One day: a longer window would hold replicas (and their bill) for longer than any traffic pattern needs.
    public static let stabilisationWindow: ClosedRange<Int> = 0...86_400
    public static let modelIdLength = 512
    public static let tokenLength = 4096

    /// The published client's defaults, used when a target is left out.
    public static let defaultTargetRps = 10.0
    public static let defaultTargetLatencyP95Ms = 5000.0
    public static let defaultStabilisationWindow = 300

    public init(maxReplicasPerDeployment: Int = 64) {
        self.maxReplicasPerDeployment = max(1, maxReplicasPerDeployment)
    }
}

extension DeploymentSpec {
    /// Parses and checks a create request body in either shape clients send (the documented one with
    /// `hardware_profile` and every target; the published CLI's with `gpu_type`/`gpu_count`, a catalogue
    /// `serving_name` and targets left out), collecting every problem with its field and bound.
    public static func validate(
        body: Data, profiles: [HardwareProfile], limits: CreateLimits = .init()
    ) throws(ValidationFailure) -> DeploymentSpec {
        let json: JSONValue
        do {
            json = try JSONDecoder().decode(JSONValue.self, from: body)
        } catch {
            throw ValidationFailure([
                ValidationIssue(loc: ["body"], msg: "JSON decode error: the body is not valid JSON", type: "json_invalid")
            ])
        }
        guard case .object = json else {
            throw ValidationFailure([
                ValidationIssue(loc: ["body"], msg: "Input should be a valid JSON object", type: "model_attributes_type")
            ])
        }
        var reader = FieldReader(json: json)
        let rawModel = reader.string("hf_model_id", required: true)
        let profileName = reader.string("hardware_profile", required: false)
        let gpuType = reader.string("gpu_type", required: false)
        let gpuCount = reader.integer("gpu_count", required: false)
        let rps = reader.number("target_rps", required: false) ?? CreateLimits.defaultTargetRps
        let latency = reader.number("target_latency_p95_ms", required: false) ?? CreateLimits.defaultTargetLatencyP95Ms
        let window = reader.integer("stabilisation_window", required: false) ?? CreateLimits.defaultStabilisationWindow
        let token = reader.string("hf_token", required: false)
        let minReplicas = reader.integer("min_replicas", required: false) ?? 1
        let maxReplicas = reader.integer("max_replicas", required: false) ?? 1

        reader.plainText("hf_model_id", rawModel, maxLength: CreateLimits.modelIdLength)
        reader.plainText("hf_token", token, maxLength: CreateLimits.tokenLength)
        var model = rawModel?.trimmingCharacters(in: .whitespaces)
        if let m = model, m.isEmpty {
            reader.fail("hf_model_id", "String should have at least 1 character", "string_too_short")
            model = nil
        }
        let catalogue = Catalogue(profiles: profiles)
        if let m = model { model = catalogue.hfModelId(forServingName: m) ?? m }
        var profile: HardwareProfile?
        if let profileName {
            profile = profiles.first { $0.name == profileName }
            if profile == nil {
                reader.fail(
                    "hardware_profile",
                    "Value error, unknown hardware profile '\(profileName)'; known profiles: \(profiles.map(\.name).joined(separator: ", "))",
                    "value_error")
            }
        } else if let gpuType {
            reader.bounded("gpu_count", gpuCount, 0...64)
            profile = catalogue.profile(gpuType: gpuType, gpuCount: gpuCount, model: model)
            if profile == nil {
                reader.fail(
                    "gpu_type",
                    "Value error, no hardware profile offers gpu_type '\(gpuType)'\(gpuCount.map { " with gpu_count \($0)" } ?? ""); known profiles: \(catalogue.shapes.joined(separator: ", "))",
                    "value_error")
            }
        } else if let m = model {
            // The published client names only the model: its default shape is the first profile listing it.
            profile = profiles.first { $0.catalogue.contains(m) && (gpuCount == nil || $0.gpuCount == gpuCount) }
            if profile == nil {
                reader.fail(
                    "hardware_profile",
                    "Field required: give hardware_profile, or gpu_type (and gpu_count); '\(m)' is not in the catalogue, so it has no default",
                    "missing")
            }
        }
        reader.bounded("target_rps", rps, CreateLimits.targetRps)
        reader.bounded("target_latency_p95_ms", latency, CreateLimits.targetLatencyP95Ms)
        reader.bounded("stabilisation_window", window, CreateLimits.stabilisationWindow)
        reader.bounded("min_replicas", minReplicas, 1...limits.maxReplicasPerDeployment)
        reader.bounded("max_replicas", maxReplicas, 1...limits.maxReplicasPerDeployment)
        if (1...limits.maxReplicasPerDeployment).contains(minReplicas), maxReplicas >= 1, maxReplicas < minReplicas {
            reader.fail(
                "max_replicas",
                "Value error, max_replicas (\(maxReplicas)) must be greater than or equal to min_replicas (\(minReplicas))",
                "value_error")
        }
        guard reader.issues.isEmpty, let model, let profile else {
            throw ValidationFailure(reader.issues)
        }
        return DeploymentSpec(
            hfModelId: model, hardwareProfile: profile.name, targetRps: rps, targetLatencyP95Ms: latency,
            stabilisationWindow: window, minReplicas: minReplicas, maxReplicas: maxReplicas,
            hfToken: token?.isEmpty == true ? nil : token)
    }
}

/// The catalogue as clients see it: each profile's models with a short `serving_name`, in the operator's
/// profile order (which decides the profile a bare GPU type picks).
public struct Catalogue: Sendable {
    public let profiles: [HardwareProfile]

    public init(profiles: [HardwareProfile]) { self.profiles = profiles }

    /// The short name the catalogue lists a model under: the repository's name, lower-cased.
    public static func servingName(_ hfModelId: String) -> String {
        hfModelId.split(separator: "/").last.map { $0.lowercased() } ?? hfModelId.lowercased()
    }

    /// The Hub id a catalogue `serving_name` stands for; nil for anything else (a Hub id, a path).
    public func hfModelId(forServingName name: String) -> String? {
        guard !name.contains("/"), !name.contains(":") else { return nil }
        let wanted = name.lowercased()
        for profile in profiles {
            if let model = profile.catalogue.first(where: { Self.servingName($0) == wanted }) { return model }
        }
        return nil
    }

    /// The profile for a GPU shape: a profile's own name, or its `gpu_type` (and `gpu_count` when given).
    /// Of several, the first whose catalogue lists the model, else the first.
    public func profile(gpuType: String, gpuCount: Int?, model: String?) -> HardwareProfile? {
        if let named = profiles.first(where: { $0.name == gpuType }) {
            return gpuCount.map { $0 == named.gpuCount } == false ? nil : named
        }
        let wanted = gpuType.lowercased()
        let matching = profiles.filter { $0.gpuType.lowercased() == wanted && (gpuCount == nil || $0.gpuCount == gpuCount) }
        if let model, let listed = matching.first(where: { $0.catalogue.contains(model) }) { return listed }
        return matching.first
    }

    /// The shapes a create may name, for error messages: each profile's name with its `type x count`.
    public var shapes: [String] {
        var seen: [String] = []
        for p in profiles {
            let shape = "\(p.name) (\(p.gpuType) x \(p.gpuCount))"
            if !seen.contains(shape) { seen.append(shape) }
        }
        return seen
    }
}
