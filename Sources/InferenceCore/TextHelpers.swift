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

/// Lower-case hex of some bytes (digests). `String(format:)` per byte costs more than the digest itself,
/// and API keys are hashed on every gateway request.
public func hexString(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(64)
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
}
