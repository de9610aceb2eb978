/// Where a replica's engine listens: the host its provider placed it on (loopback for local processes, a
/// node's address on a cluster) and its port. The gateway and the health checker connect here, never to a
/// host they assume.
public struct ReplicaAddress: Sendable, Hashable, Codable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `http://host:port`, with an IPv6 host in brackets.
    public var baseURL: String { "http://\(host.contains(":") ? "[\(host)]" : host):\(port)" }

    public var description: String { "\(host):\(port)" }
}
