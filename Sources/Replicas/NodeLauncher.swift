import Foundation
import Subprocess
#if canImport(Glibc)
import Glibc
#endif
#if canImport(System)
import System
#else
import SystemPackage
#endif

/// What `lyceum replica run` does on a cluster node: find the address the control plane reaches this node
/// at, pick a port there, and run the engine so that it never outlives its launcher.
public enum NodeLauncher {
    /// This machine's address on the interface that routes to `host` (no packet is sent: a UDP socket is
    /// connected and asked for its own address).
    public static func routableAddress(toward host: String, port: Int) throws -> String {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &found) == 0, let info = found else {
            throw EngineUnavailable("cannot resolve the control plane's host \(host)")
        }
        defer { freeaddrinfo(found) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw EngineUnavailable("socket() failed: errno \(errno)") }
        defer { close(fd) }
        guard connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            throw EngineUnavailable("no route from this node to the control plane at \(host): errno \(errno)")
        }
        var local = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return try numericHost(&local)
    }

    /// A TCP port nobody listens on at `address`, from the kernel (bind to port 0).
    public static func freePort(on address: String) throws -> Int {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICHOST
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(address, "0", &hints, &found) == 0, let info = found else { throw EngineUnavailable("\(address) is not an address") }
        defer { freeaddrinfo(found) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw EngineUnavailable("socket() failed: errno \(errno)") }
        defer { close(fd) }
        guard bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else { throw EngineUnavailable("bind() on \(address) failed: errno \(errno)") }
        var local = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        let family = Int32(local.ss_family)
        return withUnsafePointer(to: &local) { p in
            if family == AF_INET6 {
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
            }
            return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
    }

    static func numericHost(_ address: inout sockaddr_storage) throws -> String {
        var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        let length = socklen_t(Int32(address.ss_family) == AF_INET6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getnameinfo($0, length, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) }
        }
        guard rc == 0 else { throw EngineUnavailable("getnameinfo() failed: \(rc)") }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Runs the engine in a session of its own, killed by the kernel if this launcher dies (`setpriv
    /// --pdeathsig`, where util-linux has it), with SIGTERM and SIGINT passed on to its process group and a
    /// SIGKILL `stopWait` later. Its output goes where the launcher's does (the cluster job's log). Returns
    /// its exit code (128 + the signal that ended it).
    public static func runEngine(executable: String, arguments: [String], environment: [String: String], stopWait: Duration) async throws -> Int32 {
        var options = PlatformOptions()
        options.createSession = true
        options.teardownSequence = [.gracefulShutDown(toProcessGroup: true, allowedDurationToNextStep: stopWait)]
        var env: [Environment.Key: String?] = [:]
        for (k, v) in environment { env[Environment.Key(rawValue: k)!] = v }
        env["LYCEUM_REPLICA_TOKEN"] = nil as String?
        let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].first { FileManager.default.isExecutableFile(atPath: $0) }
        let (program, argv) = setpriv.map { ($0, ["--pdeathsig", "KILL", "--", executable] + arguments) } ?? (executable, arguments)
        let forwarded = ForwardedSignals(stopWait: stopWait)
        let result = try await Subprocess.run(
            program.contains("/") ? .path(FilePath(program)) : .name(program),
            arguments: Arguments(argv),
            environment: .inherit.updating(env),
            platformOptions: options,
            input: .none,
            output: .fileDescriptor(.standardOutput, closeAfterSpawningProcess: false),
            error: .fileDescriptor(.standardError, closeAfterSpawningProcess: false)
        ) { execution in
            forwarded.start(group: execution.processIdentifier.value)
        }
        forwarded.cancel()
        switch result.terminationStatus {
        case .exited(let code): return code
        case .signaled(let signal): return 128 + signal
        }
    }
}

/// SIGTERM and SIGINT to the launcher, passed on to the engine's process group; SIGKILL after the wait.
final class ForwardedSignals: @unchecked Sendable {
    let stopWait: Duration
    var sources: [any DispatchSourceSignal] = []
    let queue = DispatchQueue(label: "lyceum.replica.signals")

    init(stopWait: Duration) { self.stopWait = stopWait }

    func start(group: Int32) {
        queue.sync {
            for sig in [SIGTERM, SIGINT] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
                source.setEventHandler { [stopWait] in
                    _ = kill(-group, SIGTERM)
                    let seconds = Double(stopWait.components.seconds) + Double(stopWait.components.attoseconds) / 1e18
                    DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { _ = kill(-group, SIGKILL) }
                }
                source.resume()
                sources.append(source)
            }
        }
    }

    func cancel() {
        queue.sync { sources.forEach { $0.cancel() } }
    }
}
