import Foundation

/// One entry of a 422 answer, in the shape FastAPI gives: `{"loc": [...], "msg": "...", "type": "..."}`.
public struct ValidationIssue: Codable, Sendable, Equatable, CustomStringConvertible {
    public var loc: [String]
    public var msg: String
    public var type: String

    public init(field: String, msg: String, type: String) {
        self.loc = ["body", field]
        self.msg = msg
        self.type = type
    }

    public init(loc: [String], msg: String, type: String) {
        self.loc = loc
        self.msg = msg
        self.type = type
    }

    public var description: String { "\(loc.joined(separator: ".")): \(msg)" }
}

/// A request refused for bad input; rendered as 422 with every issue found, not just the first.
public struct ValidationFailure: Error, Sendable, CustomStringConvertible {
    public var issues: [ValidationIssue]
    public init(_ issues: [ValidationIssue]) { self.issues = issues }
    public var description: String { issues.map(\.description).joined(separator: "; ") }
}

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

    /// Parses and checks a create request body, collecting every problem with its field.
    ///
    /// `knownProfiles` is the operator's list, so an unknown profile's message can name the known ones.
    public static func validate(body: Data, knownProfiles: [String]) throws(ValidationFailure) -> DeploymentSpec {
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
        let model = reader.string("hf_model_id", required: true)
        let profile = reader.string("hardware_profile", required: true)
        let rps = reader.number("target_rps", required: true)
        let latency = reader.number("target_latency_p95_ms", required: true)
        let window = reader.integer("stabilisation_window", required: true)
        let token = reader.string("hf_token", required: false)
        let minReplicas = reader.integer("min_replicas", required: false) ?? 1
        let maxReplicas = reader.integer("max_replicas", required: false) ?? 1

        if let model, model.trimmingCharacters(in: .whitespaces).isEmpty {
            reader.fail("hf_model_id", "String should have at least 1 character", "string_too_short")
        }
        if let profile, !knownProfiles.contains(profile) {
            reader.fail(
                "hardware_profile",
                "Value error, unknown hardware profile '\(profile)'; known profiles: \(knownProfiles.joined(separator: ", "))",
                "value_error"
            )
        }
        if let rps, !(rps > 0) { reader.fail("target_rps", "Input should be greater than 0", "greater_than") }
        if let latency, !(latency > 0) {
            reader.fail("target_latency_p95_ms", "Input should be greater than 0", "greater_than")
        }
        if let window, window < 0 {
            reader.fail("stabilisation_window", "Input should be greater than or equal to 0", "greater_than_equal")
        }
        if minReplicas < 1 {
            reader.fail("min_replicas", "Input should be greater than or equal to 1", "greater_than_equal")
        }
        if maxReplicas < 1 {
            reader.fail("max_replicas", "Input should be greater than or equal to 1", "greater_than_equal")
        } else if minReplicas >= 1, maxReplicas < minReplicas {
            reader.fail(
                "max_replicas",
                "Value error, max_replicas (\(maxReplicas)) must be greater than or equal to min_replicas (\(minReplicas))",
                "value_error"
            )
        }
        guard reader.issues.isEmpty, let model, let profile, let rps, let latency, let window else {
            throw ValidationFailure(reader.issues)
        }
        return DeploymentSpec(
            hfModelId: model.trimmingCharacters(in: .whitespaces), hardwareProfile: profile, targetRps: rps,
            targetLatencyP95Ms: latency, stabilisationWindow: window, minReplicas: minReplicas,
            maxReplicas: maxReplicas, hfToken: token?.isEmpty == true ? nil : token
        )
    }
}

/// Reads typed fields from a JSON object, recording a pydantic-style issue for each bad one.
struct FieldReader {
    let json: JSONValue
    var issues: [ValidationIssue] = []

    mutating func fail(_ field: String, _ msg: String, _ type: String) {
        issues.append(ValidationIssue(field: field, msg: msg, type: type))
    }

    /// The field's value, or nil (recording "missing" when required). JSON null counts as absent.
    private mutating func value(_ field: String, required: Bool) -> JSONValue? {
        switch json[field] {
        case .none, .some(.null):
            if required { fail(field, "Field required", "missing") }
            return nil
        case .some(let v):
            return v
        }
    }

    mutating func string(_ field: String, required: Bool) -> String? {
        guard let v = value(field, required: required) else { return nil }
        guard let s = v.stringValue else {
            fail(field, "Input should be a valid string", "string_type")
            return nil
        }
        return s
    }

    mutating func number(_ field: String, required: Bool) -> Double? {
        guard let v = value(field, required: required) else { return nil }
        guard let n = v.doubleValue, n.isFinite else {
            fail(field, "Input should be a valid number", "float_type")
            return nil
        }
        return n
    }

    mutating func integer(_ field: String, required: Bool) -> Int? {
        guard let v = value(field, required: required) else { return nil }
        guard let n = v.intValue else {
            fail(field, "Input should be a valid integer", "int_type")
            return nil
        }
        return n
    }
}
