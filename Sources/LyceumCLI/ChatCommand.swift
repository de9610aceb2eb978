import ArgumentParser
import AsyncHTTPClient
import Foundation
import InferenceCore
import NIOCore

/// `lyceum infer chat -d ID -p "Hello"`: one chat completion through the gateway, printed as it streams.
struct Chat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Send a chat completion to a deployment and stream the answer.")
    @OptionGroup var client: ClientOptions
    @Option(name: [.customShort("d"), .customLong("deployment")], help: "Deployment id.") var deployment: String
    @Option(name: [.customShort("p"), .customLong("prompt")], help: "The prompt, or a file holding it.") var prompt: String
    @Option(name: [.customShort("s"), .customLong("system")], help: "A system message.") var system: String?
    @Option(name: [.customShort("t"), .customLong("tokens"), .customLong("max-tokens")], help: "Most tokens to generate.") var maxTokens: Int?
    @Option var temperature: Double?
    @Option(help: "Seconds to wait for the answer.") var timeout: Int = 300

    func run() async throws {
        let api = client.client()
        var text = prompt
        if FileManager.default.fileExists(atPath: prompt), let data = FileManager.default.contents(atPath: prompt) {
            text = String(decoding: data, as: UTF8.self)
        }
        var messages: [[String: String]] = []
        if let system { messages.append(["role": "system", "content": system]) }
        messages.append(["role": "user", "content": text])
        var body: [String: Any] = [
            "model": deployment, "messages": messages, "stream": true, "stream_options": ["include_usage": true],
        ]
        if let maxTokens { body["max_tokens"] = maxTokens }
        if let temperature { body["temperature"] = temperature }
        var request = HTTPClientRequest(url: api.dataPlaneURL + "/openai/v1/chat/completions")
        request.method = .POST
        if let key = api.apiKey { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        let response: HTTPClientResponse
        do {
            response = try await APIClient.http.execute(request, timeout: .seconds(Int64(timeout)))
        } catch {
            throw CLIFailure(APIClient.unreachable(api.dataPlaneURL, error))
        }
        guard response.status.code == 200 else {
            let data = Data(buffer: try await response.body.collect(upTo: 1 << 20))
            throw CLIFailure("server answered \(response.status.code): \(APIClient.message(from: data))")
        }
        var pending = ""
        var usage: JSONValue?
        for try await chunk in response.body {
            pending += String(buffer: chunk)
            while let range = pending.range(of: "\n\n") {
                let event = String(pending[..<range.lowerBound])
                pending.removeSubrange(..<range.upperBound)
                for line in event.split(separator: "\n") where line.hasPrefix("data: ") {
                    let payload = line.dropFirst(6)
                    if payload == "[DONE]" { continue }
                    guard let json = try? JSONDecoder().decode(JSONValue.self, from: Data(payload.utf8)) else { continue }
                    if let message = json["error"]?["message"]?.stringValue {
                        print("")
                        throw CLIFailure("the stream ended with an error: \(message)")
                    }
                    if case .array(let choices)? = json["choices"], let delta = choices.first?["delta"]?["content"]?.stringValue {
                        print(delta, terminator: "")
                        fflush(nil)
                    }
                    if let u = json["usage"], u != .null { usage = u }
                }
            }
        }
        print("")
        if let usage {
            print("[usage: \(usage["prompt_tokens"]?.intValue ?? 0) prompt + \(usage["completion_tokens"]?.intValue ?? 0) completion tokens; replica \(response.headers.first(name: "x-lyceum-replica-id") ?? "?")]")
        }
    }
}
