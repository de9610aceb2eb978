import AsyncHTTPClient
import Foundation
import NIOCore

/// Probes a replica's health URL. One protocol so the controller can be exercised without a network.
public protocol HealthProbing: Sendable {
    func isHealthy(port: Int, path: String, timeout: Duration) async -> Bool
}

/// Health over HTTP on loopback: healthy means a 2xx answer within the timeout.
public struct HTTPHealthProbe: HealthProbing {
    let client: HTTPClient

    public init(client: HTTPClient) { self.client = client }

    public func isHealthy(port: Int, path: String, timeout: Duration) async -> Bool {
        let request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        do {
            let response = try await client.execute(request, timeout: .nanoseconds(Int64(timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)))
            _ = try? await response.body.collect(upTo: 64 * 1024)
            return (200..<300).contains(response.status.code)
        } catch {
            return false
        }
    }
}
