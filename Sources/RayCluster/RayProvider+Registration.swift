import Foundation
import InferenceCore
import Replicas

extension RayProvider {
    /// A launcher's registration: accepted once per run, with the run's token, from the node Ray ran the job
    /// on. Answers the run's secrets.
    public func register(replicaId: String, token: String, _ registration: ReplicaRegistration) async throws(RegistrationRefused)
        -> ReplicaRegistrationAnswer
    {
        guard let run = expected.withLock({ $0[replicaId] }) else {
            // Another instance may lead the fleet and wait for it: the launcher tries again.
            throw RegistrationRefused(503, "this instance waits for no run of replica \(replicaId); try again")
        }
        guard Self.sameToken(run.token, token) else { throw RegistrationRefused(403, "wrong token for replica \(replicaId)") }
        guard run.registered == nil else { throw RegistrationRefused(409, "replica \(replicaId) has registered already") }
        guard (1...65535).contains(registration.port), Self.isAddressLiteral(registration.host) else {
            throw RegistrationRefused(400, "host must be an IP address and port from 1 to 65535")
        }
        // The host must be the node Ray ran the job on: a token read from the job's description is no use elsewhere.
        let nodeIP: String?
        do {
            guard let job = try await jobs.job(run.submissionId), let nodeId = job.driverNodeId else {
                throw RegistrationRefused(503, "Ray does not say yet which node runs job \(run.submissionId); try again")
            }
            nodeIP = try await jobs.nodes().first { $0.nodeId == nodeId }?.ip
        } catch let refused as RegistrationRefused {
            throw refused
        } catch {
            throw RegistrationRefused(503, "cannot ask Ray where job \(run.submissionId) runs: \(error); try again")
        }
        guard nodeIP == registration.host else {
            logger.warning(
                "a replica registered from a host that is not its job's node",
                metadata: ["replica.id": "\(replicaId)", "host": "\(registration.host)", "node": "\(nodeIP ?? "unknown")"])
            throw RegistrationRefused(403, "replica \(replicaId) runs on \(nodeIP ?? "an unknown node"), not on \(registration.host)")
        }
        let first = expected.withLock { e -> Bool in
            guard e[replicaId]?.registered == nil else { return false }
            e[replicaId]?.registered = ReplicaAddress(host: registration.host, port: registration.port)
            return true
        }
        guard first else { throw RegistrationRefused(409, "replica \(replicaId) has registered already") }
        logger.info(
            "replica registered", metadata: ["replica.id": "\(replicaId)", "address": "\(registration.host):\(registration.port)", "devices": "\(registration.devices)"])
        return ReplicaRegistrationAnswer(environment: run.secrets)
    }

    /// Why a job still waits: no node has what it asks for at all, or every node that has it is busy.
    func pendingReason(_ requirements: ReplicaRequirements) async -> String {
        let needs = requirements.clusterResources
        let wanted = needs.sorted { $0.key < $1.key }.map { "\($0.key): \(Self.amount($0.value))" }.joined(separator: ", ")
        guard let nodes = try? await jobs.nodes() else {
            return "waiting for cluster resources: needs {\(wanted)}; the Ray cluster does not say what it has"
        }
        let alive = nodes.filter(\.alive)
        let fits = alive.contains { node in needs.allSatisfy { node.resources[$0.key, default: 0] >= $0.value } }
        if !fits {
            return "waiting for cluster resources: no node of the Ray cluster (\(alive.count) alive) has {\(wanted)}; starts when one joins"
        }
        return "waiting for cluster resources: every node with {\(wanted)} is in use"
    }

    static func amount(_ v: Double) -> String {
        v.rounded() == v ? String(Int(v)) : String(v)
    }

    /// The job's shell command: the launcher, then the engine's command with its listen address left for the
    /// launcher to fill in on the node (`{host}`, `{port}`).
    static func entrypoint(launcher: String, controlPlane: String, replicaId: String, command: EngineCommand) -> String {
        var arguments = command.arguments
        for (flag, placeholder) in [("--host", "{host}"), ("--port", "{port}")] {
            if let i = arguments.firstIndex(of: flag), i + 1 < arguments.count { arguments[i + 1] = placeholder }
        }
        var words = [launcher, "replica", "run", "--control-plane", controlPlane, "--replica-id", replicaId]
        if let pull = command.nodePull {
            words += ["--pull", pull.repo, "--pull-format", pull.format, "--hub-endpoint", pull.hubEndpoint]
        }
        words += ["--", command.executable] + arguments
        return words.map(shellQuoted).joined(separator: " ")
    }

    static func shellQuoted(_ word: String) -> String {
        let plain = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,@%+")
        if !word.isEmpty, word.allSatisfy(plain.contains) { return word }
        return "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    static func sameToken(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }

    static func isAddressLiteral(_ host: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return host.count <= 64 && (inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1)
    }

    /// The job's output, read from Ray (from the node it ran on), by any instance.
    public func logs(_ handle: ReplicaHandle, maxLines: Int) async -> String? {
        guard let id = Self.submissionId(handle), let text = await output(id) else { return nil }
        return lastLines(text.trimmingCharacters(in: .whitespacesAndNewlines), maxLines: maxLines)
    }

    /// The last 256 KiB of a job's output, or nil when Ray does not answer.
    func output(_ id: String) async -> String? {
        guard let text = try? await jobs.logs(id) else { return nil }
        return text.utf8.count > 256 * 1024 ? String(decoding: Array(text.utf8.suffix(256 * 1024)), as: UTF8.self) : text
    }

    /// Writes the last part of the job's output to the replica's log file, where the logs endpoint and crash
    /// reasons read it.
    func mirrorLogs(_ id: String, to path: String, extra: String? = nil) async {
        var text = await output(id) ?? ""
        if let extra { text += (text.hasSuffix("\n") || text.isEmpty ? "" : "\n") + extra + "\n" }
        guard !text.isEmpty else { return }
        try? Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
