import ArgumentParser
import Foundation
import InferenceCore

/// `lyceum`: the server, the client (`lyceum infer ...`) and the engines, in one binary.
public struct Lyceum: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "lyceum",
        abstract: "Dedicated LLM deployments: reserved replicas behind one OpenAI-compatible endpoint.",
        version: lyceumVersion,
        subcommands: [ServerCommand.self, Infer.self, Keys.self, Login.self, Engine.self, ReplicaCommand.self]
    )

    public init() {}
}

/// `lyceum infer ...`: the commands of the hosted service's published client.
struct Infer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, follow, call and stop deployments.",
        subcommands: [
            Deploy.self, Status.self, Deployments.self, Stop.self, Models.self, Chat.self, RequestResult.self, ReplicaGroup.self, Events.self,
            Usage.self,
        ]
    )
}

struct ReplicaGroup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replica", abstract: "Inspect replicas.", subcommands: [ReplicaLogs.self])
}

/// The version `lyceum --version` prints.
let lyceumVersion = "0.9.0"

/// `lyceum infer result REQUEST_ID [--poll]`: a request that outlived its `X-Timeout-S` wait.
struct RequestResult: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "result", abstract: "Fetch the result of a request answered 'pending'.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The request id from the 'pending' answer.") var requestId: String
    @Flag(help: "Poll until the request is no longer pending.") var poll = false
    @Option(help: "With --poll: seconds between polls.") var interval: Double = 2
    @Option(help: "With --poll: seconds to give up after.") var timeout: Double = 600
    @Flag var json = false

    func run() async throws {
        let api = client.client()
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let data = try await api.request(.GET, "/openai/v1/chat/completions/\(queryEscape(requestId))", dataPlane: true)
            let answer = try JSONDecoder().decode(JSONValue.self, from: data)
            let status = answer["status"]?.stringValue ?? "unknown"
            if status == "pending", poll, Date() < deadline {
                try await Task.sleep(for: .milliseconds(Int64(max(0.1, interval) * 1000)))
                continue
            }
            if json { return printJSON(data) }
            switch status {
            case "completed":
                if case .array(let choices)? = answer["result"]?["choices"], let text = choices.first?["message"]?["content"]?.stringValue {
                    print(text)
                } else {
                    printJSON(data)
                }
            case "failed":
                throw CLIFailure("the request failed: \(answer["error"]?["message"]?.stringValue ?? "no reason given")")
            default:
                print("Request \(requestId) is \(status).")
            }
            return
        }
    }
}
