import InferenceCore

/// What the gateway may ask of the fleet, whoever runs it: the controller in-process today, the leader
/// through the store when several instances share one. The gateway and the fleet meet here and never import
/// each other.
public protocol FleetCommands: Sendable {
    /// A request arrived for a paused deployment: bring it back to `min_replicas`. A no-op otherwise.
    func resumeDeployment(id: String) async throws
    /// A replica answered a request wrongly (or not at all): probe it with a real request now.
    func reportSuspect(replicaId: String, reason: String)
}

/// What the control plane's routes ask of the fleet: the controller in-process, or the leader through the
/// store when this instance does not lead.
public protocol FleetControl: Sendable {
    /// Something changed this deployment (created, scaled): reconcile it soon.
    func poke(deploymentId: String)
    /// Stops every replica of a deployment and marks it `stopped`; returns once they are gone (bounded).
    func stopDeployment(id: String) async throws
    /// Devices of a profile no replica holds, for the catalogue's availability answer.
    func freeDeviceCount(profile: HardwareProfile) async -> Int
    /// Where this instance keeps a replica's log, if it ran the replica.
    func logPath(replicaId: String) -> String
    /// A replica's last log lines: from its provider by handle where the provider serves them (a cluster job's
    /// output, read from the cluster by any instance), else this instance's log file.
    func replicaLogs(replicaId: String, handle: String?, maxLines: Int) async -> String
}
