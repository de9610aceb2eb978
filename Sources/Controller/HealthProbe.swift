import AsyncHTTPClient
import Foundation
import InferenceCore
import NIOCore

/// What a real tiny request to a replica showed.
public enum AnswerCheck: Sendable, Equatable {
    /// A chat completion came back.
    case ok
    /// An answer came back that is not one: the replica is misconfigured or broken.
    case wrong(String)
    /// No answer in time (busy, starting): proves nothing.
    case inconclusive(String)
}

/// Probes a replica's health URL and its real chat route. One protocol so the controller can be
/// exercised without a network.
public protocol HealthProbing: Sendable {
    func isHealthy(at address: ReplicaAddress, path: String, timeout: Duration) async -> Bool
    /// Sends a one-token chat completion as a client would and judges the answer.
    func checkAnswer(at address: ReplicaAddress, servedModelName: String, timeout: Duration) async -> AnswerCheck
    /// The engine's own load from its `/metrics` page; nil when it has none or does not answer in time.
    func engineLoad(at address: ReplicaAddress, timeout: Duration) async -> EngineLoad?
}

extension HealthProbing {
    public func engineLoad(at address: ReplicaAddress, timeout: Duration) async -> EngineLoad? { nil }
}

/// Health over HTTP at the replica's address: healthy means a 2xx answer within the timeout.
public struct HTTPHealthProbe: HealthProbing {
    let client: HTTPClient

    public init(client: HTTPClient) { self.client = client }

    public func isHealthy(at address: ReplicaAddress, path: String, timeout: Duration) async -> Bool {
        let request = HTTPClientRequest(url: address.baseURL + path)
        do {
            let response = try await client.execute(request, timeout: timeAmount(timeout))
            _ = try? await response.body.collect(upTo: 64 * 1024)
            return (200..<300).contains(response.status.code)
        } catch {
            return false
        }
    }

    public func checkAnswer(at address: ReplicaAddress, servedModelName: String, timeout: Duration) async -> AnswerCheck {
        var request = HTTPClientRequest(url: address.baseURL + "/v1/chat/completions")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(
            string: #"{"model":"\#(jsonEscape(servedModelName))","messages":[{"role":"user","content":"ping"}],"max_tokens":1,"temperature":0}"#))
        do {
            let response = try await client.execute(request, timeout: timeAmount(timeout))
            let body = try await response.body.collect(upTo: 1 << 20)
            switch ReplicaVerdict.judge(status: Int(response.status.code), body: body.readableBytesView) {
            case .ok: return .ok
            case .replicaFault(let why): return .wrong(why)
            case .requestError: return .wrong("answered \(response.status.code) to a one-token request")
            }
        } catch {
            return .inconclusive("\(error)")
        }
    }

    public func engineLoad(at address: ReplicaAddress, timeout: Duration) async -> EngineLoad? {
        let request = HTTPClientRequest(url: address.baseURL + "/metrics")
        do {
            let response = try await client.execute(request, timeout: timeAmount(timeout))
            let body = try await response.body.collect(upTo: 4 << 20)
            guard response.status.code == 200 else { return nil }
            return EngineLoad.parse(prometheusText: Substring(String(buffer: body)))
        } catch {
            return nil
        }
    }

    func timeAmount(_ d: Duration) -> TimeAmount {
        .nanoseconds(Int64(d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000))
    }
}
