import Foundation

/// Escapes a string for a JSON string literal; the hot paths (gateway errors, simulator chunks) build JSON
/// text directly instead of going through an encoder.
public func jsonEscape(_ s: String) -> String {
    var out = ""
    out.reserveCapacity(s.utf8.count)
    for c in s.unicodeScalars {
        switch c {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where c.value < 0x20: out += String(format: "\\u%04x", c.value)
        default: out.unicodeScalars.append(c)
        }
    }
    return out
}

extension Duration {
    /// The duration in seconds, as a floating-point number.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
