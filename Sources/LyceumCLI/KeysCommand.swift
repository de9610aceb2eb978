import ArgumentParser
import Foundation
import InferenceCore

/// `lyceum keys create --org NAME`: a key for another organisation (needs the admin key).
struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Manage API keys.", subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an API key for an organisation (admin key required).")
        @OptionGroup var client: ClientOptions
        @Option(help: "Organisation name; created if new.") var org: String
        @Flag var json = false

        func run() async throws {
            let api = client.client()
            let data = try await api.request(.POST, "/api/v2/external/admin/keys", json: CreateKeyRequest(org: org))
            if json { return printJSON(data) }
            let answer = try api.decode(CreateKeyResponse.self, from: data)
            print("API key for organisation '\(answer.org)' (shown once):\n  \(answer.apiKey)")
        }
    }
}

/// `lyceum login`: saves the server URL and key for later commands.
struct Login: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Save the server URL and API key to the client config file.")
    @OptionGroup var client: ClientOptions

    func run() async throws {
        let api = client.client()
        guard let key = api.apiKey else { throw CLIFailure("no API key: pass --api-key lk_...") }
        // Check the key before saving it.
        _ = try await api.request(.GET, "/api/v2/external/inference/list")
        // `iris_url` too, so the hosted service's published client sends prompts here, not to the hosted service.
        try ClientConfigFile(baseUrl: api.baseURL, irisUrl: api.dataPlaneURL, apiKey: key).save()
        print("Logged in to \(api.baseURL); saved to \(ClientConfigFile.path)")
    }
}
