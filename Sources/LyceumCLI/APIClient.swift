import AsyncHTTPClient
import Foundation
import InferenceCore
import NIOCore
import NIOHTTP1

/// A command failed; the message is what the user reads (the server's own message where there is one).
struct CLIFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The platform's HTTP API as the CLI uses it, over async-http-client (which also streams on Linux).
struct APIClient {
    let baseURL: String
    let apiKey: String?
    /// Where chat completions and stored results go (`iris_url`): the same server unless configured.
    var dataPlaneURL: String

    init(baseURL: String, apiKey: String?, dataPlaneURL: String? = nil) {
        self.baseURL = baseURL
        self.apiKey = apiKey
        self.dataPlaneURL = dataPlaneURL ?? baseURL
    }

    func request(
        _ method: HTTPMethod, _ path: String, json body: (any Encodable)? = nil, timeout: TimeAmount = .seconds(60), dataPlane: Bool = false
    ) async throws -> Data {
        let base = dataPlane ? dataPlaneURL : baseURL
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        if let apiKey { request.headers.add(name: "Authorization", value: "Bearer \(apiKey)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try WireJSON.encoder.encode(body)))
        }
        let response: HTTPClientResponse
        do {
            response = try await Self.http.execute(request, timeout: timeout)
        } catch {
            throw CLIFailure(Self.unreachable(base, error))
        }
        let data = Data(buffer: try await response.body.collect(upTo: 64 << 20))
        guard (200..<300).contains(response.status.code) else {
            throw CLIFailure("server answered \(response.status.code): \(Self.message(from: data))")
        }
        return data
    }

    func get<T: Decodable>(_ path: String, as type: T.Type) async throws -> T {
        try decode(type, from: try await request(.GET, path))
    }

    func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        do {
            return try WireJSON.decoder.decode(type, from: data)
        } catch {
            throw CLIFailure("unexpected answer from the server: \(error)")
        }
    }

    /// The CLI's HTTP client: a refused or unreachable server is reported within seconds, not retried until the
    /// request's deadline (async-http-client's default for servers, which a person at a terminal should not wait for).
    static let http: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(5)
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// One plain sentence for a server that cannot be reached, naming the URL and what to check.
    static func unreachable(_ url: String, _ error: any Error) -> String {
        let why: String
        switch "\(error)" {
        case let text where text.contains("connectTimeout") || text.contains("deadlineExceeded"): why = "it did not answer in time"
        case let text where text.contains("refused") || text.contains("connect"): why = "nothing is listening there"
        default: why = "\(error)"
        }
        return "Cannot reach the lyceum server at \(url) (\(why)); is `lyceum server` running there? Set --base-url or LYCEUM_BASE_URL."
    }

    /// The readable part of an error body in either plane's shape.
    static func message(from data: Data) -> String {
        guard let json = try? JSONDecoder().decode(JSONValue.self, from: data) else {
            return String(decoding: data.prefix(500), as: UTF8.self)
        }
        if let detail = json["detail"]?.stringValue { return detail }
        if case .array(let issues)? = json["detail"] {
            return issues.map { issue in
                let loc: String
                if case .array(let parts)? = issue["loc"] {
                    loc = parts.compactMap { $0.stringValue ?? $0.intValue.map(String.init) }.filter { $0 != "body" }.joined(separator: ".")
                } else {
                    loc = ""
                }
                return (loc.isEmpty ? "" : "\(loc): ") + (issue["msg"]?.stringValue ?? "invalid")
            }.joined(separator: "; ")
        }
        if let message = json["error"]?["message"]?.stringValue { return message }
        return String(decoding: data.prefix(500), as: UTF8.self)
    }
}

/// Escapes a value for a URL query.
func queryEscape(_ s: String) -> String {
    s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? s
}
