/// What a replica's answer says about the replica (not about the request): a healthy `/health` is not
/// enough, since a misconfigured engine (wrong served model name, wrong route, a proxy page in front of
/// it) answers health checks and fails every request, and fails them fastest.
public enum ReplicaVerdict: Sendable, Equatable {
    /// A protocol answer: pass it on.
    case ok
    /// The request's own fault (too long a prompt, a bad parameter): pass it on unchanged.
    case requestError
    /// The replica is wrong: count it against the replica and, when nothing reached the caller, retry elsewhere.
    case replicaFault(String)

    /// Judges a non-streaming answer: its status, and for a 200 whether the body is a completion
    /// (a JSON object with `choices`). Checked on bytes, without parsing: this runs on every answer.
    public static func judge(status: Int, body: some Collection<UInt8>) -> ReplicaVerdict {
        switch status {
        case 200..<300:
            guard let first = body.first(where: { !isSpace($0) }), first == UInt8(ascii: "{") else {
                return .replicaFault("answered \(status) with a body that is not a JSON object")
            }
            guard containsChoices(body) else { return .replicaFault("answered \(status) without `choices`") }
            return .ok
        case 404, 405, 401, 403, 407, 421:
            // The route or the served model name is wrong, or something else answers on the replica's port.
            return .replicaFault("answered \(status)")
        case 400..<500:
            return .requestError
        default:
            return .replicaFault("answered \(status)")
        }
    }

    /// Judges a streaming answer's head: a 200 must be a server-sent event stream.
    public static func judgeStreamHead(status: Int, contentType: String?) -> ReplicaVerdict {
        switch status {
        case 200..<300:
            guard let contentType, contentType.lowercased().hasPrefix("text/event-stream") else {
                return .replicaFault("answered a stream request with \(contentType ?? "no content type"), not text/event-stream")
            }
            return .ok
        default:
            return judge(status: status, body: [UInt8(ascii: "{")] + Array(#""choices""#.utf8))
        }
    }

    static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 }

    static let choicesKey = Array(#""choices""#.utf8)

    static func containsChoices(_ body: some Collection<UInt8>) -> Bool {
        // Searched in place where the bytes are contiguous (a ByteBuffer's are): no copy on the hot path.
        body.withContiguousStorageIfAvailable { search($0) } ?? Array(body).withUnsafeBufferPointer { search($0) }
    }

    static func search(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        let key = choicesKey
        guard bytes.count >= key.count else { return false }
        var i = 0
        while i <= bytes.count - key.count {
            if bytes[i] == key[0] {
                var j = 1
                while j < key.count, bytes[i + j] == key[j] { j += 1 }
                if j == key.count { return true }
            }
            i += 1
        }
        return false
    }
}
