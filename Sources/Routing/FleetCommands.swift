/// What the gateway may ask of the fleet, whoever runs it: the controller in-process today, the leader
/// through the store when several instances share one. The gateway and the fleet meet here and never import
/// each other.
public protocol FleetCommands: Sendable {
    /// A request arrived for a paused deployment: bring it back to `min_replicas`. A no-op otherwise.
    func resumeDeployment(id: String) async throws
    /// A replica answered a request wrongly (or not at all): probe it with a real request now.
    func reportSuspect(replicaId: String, reason: String)
}
