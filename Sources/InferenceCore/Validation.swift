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

extension FieldReader {
    /// A number within `range`, or an issue that states the bound.
    mutating func bounded<T: Comparable & CustomStringConvertible>(_ field: String, _ value: T?, _ range: ClosedRange<T>) {
        guard let value else { return }
        let show = { (v: T) in (v as? Double).map(Self.format) ?? v.description }
        if value < range.lowerBound {
            fail(field, "Input should be greater than or equal to \(show(range.lowerBound))", "greater_than_equal")
        } else if value > range.upperBound {
            fail(field, "Input should be less than or equal to \(show(range.upperBound))", "less_than_equal")
        }
    }

    /// A string of at most `maxLength` characters with no control characters (NUL included).
    mutating func plainText(_ field: String, _ value: String?, maxLength: Int) {
        guard let value else { return }
        if value.utf8.count > maxLength {
            fail(field, "String should have at most \(maxLength) characters", "string_too_long")
        } else if value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            fail(field, "String should not contain control characters", "string_pattern_mismatch")
        }
    }

    static func format(_ v: Double) -> String {
        v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : "\(v)"
    }
}

extension String {
    /// True for ids that may be looked up: printable ASCII without spaces, at most 128 bytes. NUL and control
    /// characters are refused before they reach SQLite, which cuts a string at its first NUL.
    public var isPlausibleIdentifier: Bool {
        !isEmpty && utf8.count <= 128 && utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }
}
