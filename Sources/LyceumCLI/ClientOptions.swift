import ArgumentParser
import Foundation
import InferenceCore

/// Where the server is and which key to use: flags, then LYCEUM_BASE_URL / LYCEUM_API_KEY, then the config
/// file written by `lyceum login`, then the local default server's admin key.
struct ClientOptions: ParsableArguments {
    @Option(name: .customLong("base-url"), help: "Server URL (default: $LYCEUM_BASE_URL, the login config, or http://127.0.0.1:8080).")
    var baseURL: String?

    @Option(name: .customLong("api-key"), help: "API key (default: $LYCEUM_API_KEY, the login config, or ~/.lyceum/admin.key).")
    var apiKey: String?

    func client() -> APIClient {
        let env = ProcessInfo.processInfo.environment
        let saved = ClientConfigFile.load()
        let url = baseURL ?? env["LYCEUM_BASE_URL"] ?? saved?.baseUrl ?? "http://127.0.0.1:8080"
        var key = apiKey ?? env["LYCEUM_API_KEY"] ?? saved?.apiKey
        if key == nil, let data = FileManager.default.contents(atPath: ServerDefaults.dataDir + "/admin.key") {
            key = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let trimmed = url.hasSuffix("/") ? String(url.dropLast()) : url
        // The data plane (chat, results, Anthropic) is `iris_url` in the published client's config; our server
        // serves both planes, so it defaults to the control plane's URL when no flag or environment names one.
        let iris = baseURL ?? env["IRIS_PROXY_URL"] ?? (env["LYCEUM_BASE_URL"] == nil ? saved?.irisUrl : nil) ?? trimmed
        return APIClient(baseURL: trimmed, apiKey: key, dataPlaneURL: iris.hasSuffix("/") ? String(iris.dropLast()) : iris)
    }
}

enum ServerDefaults {
    static var dataDir: String {
        (ProcessInfo.processInfo.environment["HOME"] ?? ".") + "/.lyceum"
    }
}

/// `~/.lyceum/config.json` (or $LYCEUM_CONFIG): what `lyceum login` saved.
struct ClientConfigFile: Codable {
    var baseUrl: String?
    /// The data plane's URL, which the published client sends chat and results to.
    var irisUrl: String?
    var apiKey: String?

    static var path: String {
        ProcessInfo.processInfo.environment["LYCEUM_CONFIG"] ?? ServerDefaults.dataDir + "/config.json"
    }

    static func load() -> ClientConfigFile? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? WireJSON.decoder.decode(ClientConfigFile.self, from: data)
    }

    func save() throws {
        let dir = (Self.path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let data = try WireJSON.encoder.encode(self)
        guard FileManager.default.createFile(atPath: Self.path, contents: data, attributes: [.posixPermissions: 0o600]) else {
            throw CLIFailure("cannot write \(Self.path)")
        }
    }
}
