import ArgumentParser

/// `lyceum`: the server, the client (`lyceum infer ...`) and the engines, in one binary.
public struct Lyceum: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "lyceum",
        abstract: "Dedicated LLM deployments: reserved replicas behind one OpenAI-compatible endpoint.",
        subcommands: [ServerCommand.self, Infer.self, Keys.self, Login.self, Engine.self]
    )

    public init() {}
}

/// `lyceum infer ...`: the commands of the hosted service's published client.
struct Infer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, follow, call and stop deployments.",
        subcommands: [
            Deploy.self, Status.self, Deployments.self, Stop.self, Models.self, Chat.self, ReplicaGroup.self, Events.self, Usage.self,
        ]
    )
}

struct ReplicaGroup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replica", abstract: "Inspect replicas.", subcommands: [ReplicaLogs.self])
}
