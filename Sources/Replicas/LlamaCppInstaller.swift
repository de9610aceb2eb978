import Foundation
import Subprocess
#if canImport(System)
import System
#else
import SystemPackage
#endif

/// Builds llama.cpp's `llama-server` from the llama.cpp source that PyPI's `llama-cpp-python` sdist carries
/// (llama.cpp is not packaged in Debian 12), and caches the binary per version outside the repository.
///
/// Portable (`GGML_NATIVE=OFF`), static, no curl, no OpenSSL; only the `llama-server` target is built.
public struct LlamaCppInstaller: Sendable {
    public static let defaultVersion = "0.3.36"

    /// `$XDG_CACHE_HOME/lyceum` or `~/.cache/lyceum`.
    public var cacheRoot: String
    public var version: String

    public init(cacheRoot: String? = nil, version: String = LlamaCppInstaller.defaultVersion) {
        let env = ProcessInfo.processInfo.environment
        self.cacheRoot = cacheRoot ?? env["XDG_CACHE_HOME"].map { $0 + "/lyceum" } ?? (env["HOME"] ?? "/tmp") + "/.cache/lyceum"
        self.version = version
    }

    public var binaryPath: String { "\(cacheRoot)/llama.cpp/\(version)/llama-server" }

    /// The `llama-server` to use: an explicit path, else one on PATH, else a cached build; nil if none.
    public static func locate(configured: String?, cacheRoot: String? = nil) -> String? {
        let fm = FileManager.default
        if let configured, configured.contains("/") { return fm.isExecutableFile(atPath: configured) ? configured : nil }
        let name = configured ?? "llama-server"
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") where fm.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        let installer = LlamaCppInstaller(cacheRoot: cacheRoot)
        if fm.isExecutableFile(atPath: installer.binaryPath) { return installer.binaryPath }
        let versions = (try? fm.contentsOfDirectory(atPath: "\(installer.cacheRoot)/llama.cpp")) ?? []
        for v in versions.sorted(by: >) where fm.isExecutableFile(atPath: "\(installer.cacheRoot)/llama.cpp/\(v)/llama-server") {
            return "\(installer.cacheRoot)/llama.cpp/\(v)/llama-server"
        }
        return nil
    }

    /// Downloads and builds, printing progress; returns the binary's path. Instant when already cached.
    public func install(jobs: Int = ProcessInfo.processInfo.activeProcessorCount) async throws -> String {
        let fm = FileManager.default
        if fm.isExecutableFile(atPath: binaryPath) {
            print("llama-server \(version) is already installed: \(binaryPath)")
            return binaryPath
        }
        let work = "\(cacheRoot)/build/llama.cpp-\(version)"
        try? fm.removeItem(atPath: work)
        try fm.createDirectory(atPath: work, withIntermediateDirectories: true)
        let venv = "\(cacheRoot)/build/venv"
        if !fm.isExecutableFile(atPath: "\(venv)/bin/cmake") {
            print("==> Build tools (cmake, ninja) from PyPI into \(venv)")
            try await step("python3", ["-m", "venv", venv])
            try await step("\(venv)/bin/pip", ["install", "--quiet", "cmake", "ninja", "scikit-build-core"])
        }
        print("==> llama-cpp-python \(version) source distribution (carries llama.cpp under vendor/llama.cpp)")
        try await step("\(venv)/bin/pip", [
            "download", "--quiet", "--no-deps", "--no-build-isolation", "--no-binary", "llama-cpp-python",
            "llama-cpp-python==\(version)", "-d", work,
        ])
        try await step("tar", ["xzf", "\(work)/llama_cpp_python-\(version).tar.gz", "-C", work])
        let source = "\(work)/llama_cpp_python-\(version)/vendor/llama.cpp"
        let build = "\(work)/build"
        print("==> Configuring (portable, static, no curl/OpenSSL)")
        try await step("\(venv)/bin/cmake", [
            "-S", source, "-B", build, "-G", "Ninja", "-DCMAKE_MAKE_PROGRAM=\(venv)/bin/ninja", "-DCMAKE_BUILD_TYPE=Release",
            "-DGGML_NATIVE=OFF", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON",
        ])
        print("==> Building llama-server with \(jobs) jobs (a few minutes on 2 cores)")
        try await step("\(venv)/bin/ninja", ["-C", build, "-j", String(jobs), "llama-server"])
        let dest = (binaryPath as NSString).deletingLastPathComponent
        try fm.createDirectory(atPath: dest, withIntermediateDirectories: true)
        try? fm.removeItem(atPath: binaryPath)
        try fm.copyItem(atPath: "\(build)/bin/llama-server", toPath: binaryPath)
        try? fm.removeItem(atPath: work)
        print("==> Installed \(binaryPath)")
        return binaryPath
    }

    private func step(_ executable: String, _ arguments: [String]) async throws {
        let exe: Executable = executable.contains("/") ? .path(FilePath(executable)) : .name(executable)
        let result = try await Subprocess.run(
            exe, arguments: Arguments(arguments), output: .fileDescriptor(.standardOutput, closeAfterSpawningProcess: false),
            error: .fileDescriptor(.standardError, closeAfterSpawningProcess: false))
        guard result.terminationStatus.isSuccess else {
            throw EngineUnavailable("`\(executable) \(arguments.joined(separator: " "))` failed (\(result.terminationStatus))")
        }
    }
}
