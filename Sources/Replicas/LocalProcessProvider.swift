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

/// How a replica's process ended.
public struct ProcessExit: Sendable, CustomStringConvertible {
    public var code: Int32?
    public var signal: Int32?

    public var description: String {
        if let code { return "exited with code \(code)" }
        if let signal { return "killed by signal \(signal)" }
        return "ended"
    }
}

/// Starts and stops replica processes. One protocol so a Ray (or other) provider can stand beside the local one.
public protocol ReplicaProvider: Sendable {
    /// Runs the engine until it exits, calling `started` with its pid once it is spawned.
    func run(
        _ command: EngineCommand, logPath: String, started: @escaping @Sendable (Int32) async -> Void
    ) async throws -> ProcessExit

    /// Stops a process group: SIGTERM, then SIGKILL after `grace`. Returns once nothing of it is left.
    func terminate(pid: Int32, grace: Duration) async

    /// Whether `pid` is a live (not zombie) process started for `replicaId`, so a pid reused by the OS is never adopted.
    func isAlive(pid: Int32, replicaId: String) -> Bool

    /// The host the replicas it starts listen on, for the gateway and the health checker.
    var replicaHost: String { get }
}

extension ReplicaProvider {
    public var replicaHost: String { "127.0.0.1" }
}

/// Replicas as local processes: each in its own session and process group, output appended to a log file.
public struct LocalProcessProvider: ReplicaProvider {
    public init() {}

    public func run(
        _ command: EngineCommand, logPath: String, started: @escaping @Sendable (Int32) async -> Void
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
            await started(execution.processIdentifier.value)
        }
        switch result.terminationStatus {
        case .exited(let code): return ProcessExit(code: code, signal: nil)
        case .signaled(let sig): return ProcessExit(code: nil, signal: sig)
        }
    }

    public func terminate(pid: Int32, grace: Duration) async {
        guard pid > 1 else { return }
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

    public func isAlive(pid: Int32, replicaId: String) -> Bool {
        guard Self.isRunning(pid) else { return false }
        guard let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
        let marker = Data("LYCEUM_REPLICA_ID=\(replicaId)".utf8)
        return environ.split(separator: 0).contains { Data($0) == marker }
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
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw EngineUnavailable("socket() failed: errno \(errno)") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw EngineUnavailable("bind() failed: errno \(errno)") }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    return Int(UInt16(bigEndian: addr.sin_port))
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
    return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(maxLines).map(redactingFileBytes).joined(separator: "\n")
}

/// One log line, safe to show: a line quoting a model file's magic bytes is replaced, control characters become '?'.
func redactingFileBytes(_ line: Substring) -> String {
    if line.localizedCaseInsensitiveContains("magic") {
        return "[a line quoting the model file's first bytes was left out]"
    }
    return String(String.UnicodeScalarView(line.unicodeScalars.map { $0.properties.generalCategory == .control && $0 != "\t" ? "?" : $0 }))
}
