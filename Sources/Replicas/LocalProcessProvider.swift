import Foundation
import InferenceCore
import Subprocess
#if canImport(Glibc)
import Glibc
#endif
#if canImport(System)
import System
#else
import SystemPackage
#endif

/// Replicas as local processes: each in its own session and process group, output appended to a log file.
public struct LocalProcessProvider: ReplicaProvider {
    /// This machine's GPUs (and the simulator's named devices), by profile.
    public let devices: DevicePool? = DevicePool()

    public init() {}

    public func run(
        _ command: EngineCommand, logPath: String, started: @escaping @Sendable (ReplicaStarted) async -> Void
    ) async throws -> ProcessExit {
        let fd = try FileDescriptor.open(
            FilePath(logPath), .writeOnly, options: [.create, .append], permissions: [.ownerReadWrite, .groupRead]
        )
        var options = PlatformOptions()
        options.createSession = true
        // On cancellation (server shutdown) the group gets SIGTERM, then SIGKILL after 5 s.
        options.teardownSequence = [.gracefulShutDown(toProcessGroup: true, allowedDurationToNextStep: .seconds(5))]
        var env: [Environment.Key: String?] = [:]
        for (k, v) in command.environment { env[Environment.Key(rawValue: k)!] = v }
        let executable: Executable = command.executable.contains("/") ? .path(FilePath(command.executable)) : .name(command.executable)
        let result = try await Subprocess.run(
            executable,
            arguments: Arguments(command.arguments),
            environment: .inherit.updating(env),
            platformOptions: options,
            input: .none,
            output: .fileDescriptor(fd, closeAfterSpawningProcess: true),
            error: .combinedWithOutput
        ) { execution in
            await started(ReplicaStarted(handle: .process(execution.processIdentifier.value)))
        }
        switch result.terminationStatus {
        case .exited(let code): return ProcessExit(code: code, signal: nil)
        case .signaled(let sig): return ProcessExit(code: nil, signal: sig)
        }
    }

    public func stop(_ handle: ReplicaHandle, grace: Duration) async {
        guard let pid = handle.processId, pid > 1 else { return }
        _ = kill(-pid, SIGTERM)
        _ = kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + grace
        while ContinuousClock.now < deadline {
            if !Self.groupExists(pid) { return }
            try? await Task.sleep(for: .milliseconds(20))
        }
        _ = kill(-pid, SIGKILL)
        _ = kill(pid, SIGKILL)
        let hardDeadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < hardDeadline, Self.groupExists(pid) {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    public func isAlive(_ handle: ReplicaHandle, replicaId: String) -> Bool {
        guard let pid = handle.processId, Self.isRunning(pid) else { return false }
        return Self.replicaId(of: pid) == replicaId
    }

    /// Every engine process on this machine: the leaders of their own process groups whose environment
    /// names a replica.
    public func running() async -> [String: ReplicaHandle] {
        var found: [String: ReplicaHandle] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), getpgid(pid) == pid, Self.isRunning(pid), let replicaId = Self.replicaId(of: pid) else { continue }
            found[replicaId] = .process(pid)
        }
        return found
    }

    /// The replica id in a process's environment (`LYCEUM_REPLICA_ID`), if it has one.
    static func replicaId(of pid: Int32) -> String? {
        guard let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return nil }
        let prefix = Data("LYCEUM_REPLICA_ID=".utf8)
        guard let entry = environ.split(separator: 0).first(where: { $0.starts(with: prefix) }) else { return nil }
        return String(decoding: entry.dropFirst(prefix.count), as: UTF8.self)
    }

    /// True while the process exists and is not a zombie (a zombie is dead, waiting only to be reaped).
    static func isRunning(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
        return state != "Z" && state != "X"
    }

    /// Whether any live process is left in the group led by `pgid` (engines may fork workers).
    static func groupExists(_ pgid: Int32) -> Bool {
        if isRunning(pgid) { return true }
        guard kill(-pgid, 0) == 0 else { return false }
        // Members may all be zombies; look for a live one.
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = Int32(entry) else { continue }
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // fields: state, ppid, pgrp, ...
            if fields.count > 2, Int32(fields[2]) == pgid, fields[0] != "Z" { return true }
        }
        return false
    }
}

/// Asks the kernel for a free loopback port by binding port 0.
public func freeLoopbackPort() throws -> Int {
    try NodeLauncher.freePort(on: "127.0.0.1")
}

/// The last `maxLines` lines of a log file, for `fail_reason` and the replica logs endpoint. Lines in which an
/// engine quotes the bytes of the file it was given (llama.cpp's "invalid magic characters: '...'") are left
/// out, and control characters replaced: a model path must never become a way to read a file back.
public func logTail(path: String, maxLines: Int = 50, maxBytes: Int = 64 * 1024) -> String {
    guard let handle = FileHandle(forReadingAtPath: path) else { return "" }
    defer { try? handle.close() }
    let size = (try? handle.seekToEnd()) ?? 0
    let start = size > UInt64(maxBytes) ? size - UInt64(maxBytes) : 0
    try? handle.seek(toOffset: start)
    let data = (try? handle.readToEnd()) ?? Data()
    let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    return lastLines(text, maxLines: maxLines)
}

/// The last `maxLines` lines of an engine's output, safe to show (see `redactingFileBytes`).
public func lastLines(_ text: String, maxLines: Int) -> String {
    text.split(separator: "\n", omittingEmptySubsequences: false).suffix(maxLines).map(redactingFileBytes).joined(separator: "\n")
}

/// One log line, safe to show: a line quoting a model file's magic bytes is replaced, control characters become '?'.
func redactingFileBytes(_ line: Substring) -> String {
    if line.localizedCaseInsensitiveContains("magic") {
        return "[a line quoting the model file's first bytes was left out]"
    }
    return String(String.UnicodeScalarView(line.unicodeScalars.map { $0.properties.generalCategory == .control && $0 != "\t" ? "?" : $0 }))
}
