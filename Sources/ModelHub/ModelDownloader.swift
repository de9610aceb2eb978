import AsyncHTTPClient
import Crypto
import Foundation
import InferenceCore
import Logging
import NIOCore
import Synchronization

/// Model files ready on disk.
public struct PreparedModel: Sendable, Equatable {
    /// The snapshot folder (`<cache>/models--org--name/snapshots/<commit>`).
    public var snapshot: String
    /// The file to load, for single-file formats (GGUF): its path inside the snapshot.
    public var primaryFile: String?
    /// The cache folder to hand to engines as `HF_HUB_CACHE`.
    public var cacheDir: String
}

/// How far a download has got, for the replica status.
public struct DownloadProgress: Sendable, Equatable {
    public var file: String
    public var bytesDone: Int64
    public var bytesTotal: Int64

    public var description: String {
        let mb = { (b: Int64) in String(format: "%.1f", Double(b) / 1_048_576) }
        guard bytesTotal > 0 else { return "downloading \(file): \(mb(bytesDone)) MB" }
        return "downloading \(file): \(mb(bytesDone)) of \(mb(bytesTotal)) MB (\(Int(Double(bytesDone) / Double(bytesTotal) * 100))%)"
    }
}

/// Downloads model files from the Hub into a cache with the Hub's own layout, so that engines (vLLM,
/// `huggingface_hub`) find them offline:
///
///     <cache>/models--org--name/blobs/<sha256 or blob id>
///     <cache>/models--org--name/snapshots/<commit>/<file>  -> ../../blobs/<...>
///     <cache>/models--org--name/refs/main                  (the commit)
///
/// A download goes to `<blob>.incomplete` and resumes from there with `Range` after an interruption
/// (within one attempt's retries, or a later attempt). Sizes are always checked, SHA-256 too for LFS
/// files; a mismatch discards the file. Replicas asking for the same files at once share one download.
public actor ModelDownloader {
    public let cacheDir: String
    public nonisolated let hub: HubClient
    let logger: Logger
    /// Attempts per file when the connection breaks; each resumes where the last one stopped.
    let attempts: Int
    private var inFlight: [String: SharedDownload] = [:]
    private var progress: [String: DownloadProgress] = [:]

    public init(cacheDir: String, hub: HubClient, attempts: Int = 5, logger: Logger) {
        self.cacheDir = cacheDir
        self.hub = hub
        self.attempts = attempts
        self.logger = logger
    }

    /// The default cache: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`, as the Hub's
    /// own tools use, so models already downloaded by them are found.
    public static var defaultCacheDir: String {
        let env = ProcessInfo.processInfo.environment
        if let v = env["HF_HUB_CACHE"], !v.isEmpty { return v }
        if let v = env["HF_HOME"], !v.isEmpty { return v + "/hub" }
        return (env["HOME"] ?? NSTemporaryDirectory()) + "/.cache/huggingface/hub"
    }

    public func repoFolder(_ repo: String) -> String { Self.repoFolder(cacheDir: cacheDir, repo: repo) }

    /// `<cache>/models--org--name`: the Hub cache's folder for a repository.
    public static func repoFolder(cacheDir: String, repo: String) -> String {
        cacheDir + "/models--" + repo.replacingOccurrences(of: "/", with: "--")
    }

    /// Progress of the download `key` (from `key(repo:format:)`), while one runs.
    public func progress(repo: String, format: ModelFormat) -> DownloadProgress? { progress[Self.key(repo, format)] }

    static func key(_ repo: String, _ format: ModelFormat) -> String {
        switch format {
        case .gguf(let file): "\(repo):\(file ?? "*.gguf")"
        case .checkpoint: repo
        }
    }

    /// The files `format` needs from `repo`, downloaded (or found in the cache). Concurrent callers for the
    /// same files share one download; a caller that is cancelled stops waiting at once, and the download
    /// itself stops when no caller is left (its partial file stays, to be resumed).
    public func prepare(repo: String, format: ModelFormat, token: String?) async throws -> PreparedModel {
        let key = Self.key(repo, format)
        if let shared = inFlight[key], !shared.abandoned { return try await shared.wait() }
        let shared = SharedDownload()
        inFlight[key] = shared
        shared.start {
            let result = await Result { try await self.download(repo: repo, format: format, token: token, key: key) }
            await self.finished(key, shared)
            return result
        }
        return try await shared.wait()
    }

    private func finished(_ key: String, _ shared: SharedDownload) {
        guard inFlight[key] === shared else { return }
        inFlight[key] = nil
        progress[key] = nil
    }

    private func setProgress(_ key: String, _ value: DownloadProgress) { progress[key] = value }

    private func download(repo: String, format: ModelFormat, token: String?, key: String) async throws -> PreparedModel {
        let model: HubModel
        do {
            model = try await hub.model(repo, token: token)
        } catch {
            // Offline: serve what an earlier download left in the cache, if it is all there.
            guard Self.isUnreachable(error), let cached = cachedSnapshot(repo: repo, format: format) else { throw error }
            logger.warning("the Hub is unreachable; using the cached snapshot", metadata: ["model": "\(repo)", "error": "\(error)"])
            return cached
        }
        let names = try HubClient.files(for: format, in: model, repo: repo)
        let folder = repoFolder(repo)
        let snapshot = "\(folder)/snapshots/\(model.sha)"
        let fm = FileManager.default
        try fm.createDirectory(atPath: folder + "/blobs", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: folder + "/refs", withIntermediateDirectories: true)
        let files = names.compactMap { name in model.files.first { $0.name == name } }
        let total = files.reduce(Int64(0)) { $0 + ($1.size ?? 0) }
        var done: Int64 = 0
        for file in files {
            let blobName = file.sha256 ?? file.blobId ?? Self.sha256Hex(Data((model.sha + "/" + file.name).utf8))
            let blob = "\(folder)/blobs/\(blobName)"
            let link = "\(snapshot)/\(file.name)"
            if !Self.isComplete(blob, file) {
                let base = done
                try await fetch(
                    file, url: hub.fileURL(repo: repo, revision: model.sha, file: file.name), to: blob, token: token
                ) { bytes in
                    await self.setProgress(key, DownloadProgress(file: file.name, bytesDone: base + bytes, bytesTotal: total))
                }
            }
            done += file.size ?? 0
            // The snapshot entry is a relative symlink to the blob, as the Hub's tools make it.
            try fm.createDirectory(atPath: (link as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let depth = file.name.split(separator: "/").count - 1
            let target = String(repeating: "../", count: depth + 2) + "blobs/" + blobName
            if (try? fm.destinationOfSymbolicLink(atPath: link)) != target {
                try? fm.removeItem(atPath: link)
                try fm.createSymbolicLink(atPath: link, withDestinationPath: target)
            }
        }
        try Data(model.sha.utf8).write(to: URL(fileURLWithPath: folder + "/refs/main"), options: .atomic)
        let primary: String? = if case .gguf = format, let first = names.first { "\(snapshot)/\(first)" } else { nil }
        logger.info("model files ready", metadata: ["model": "\(repo)", "files": "\(names.count)", "snapshot": "\(snapshot)"])
        return PreparedModel(snapshot: snapshot, primaryFile: primary, cacheDir: cacheDir)
    }

    /// The snapshot `refs/main` points at, if it holds what `format` needs.
    func cachedSnapshot(repo: String, format: ModelFormat) -> PreparedModel? {
        let folder = repoFolder(repo)
        guard let sha = try? String(contentsOfFile: folder + "/refs/main", encoding: .utf8) else { return nil }
        let snapshot = "\(folder)/snapshots/\(sha.trimmingCharacters(in: .whitespacesAndNewlines))"
        let names = (FileManager.default.enumerator(atPath: snapshot)?.allObjects as? [String]) ?? []
        let present = { (name: String) in FileManager.default.fileExists(atPath: "\(snapshot)/\(name)") }
        switch format {
        case .gguf(let file):
            guard let name = file ?? chooseGGUF(names), present(name) else { return nil }
            return PreparedModel(snapshot: snapshot, primaryFile: "\(snapshot)/\(name)", cacheDir: cacheDir)
        case .checkpoint:
            guard present("config.json") else { return nil }
            return PreparedModel(snapshot: snapshot, primaryFile: nil, cacheDir: cacheDir)
        }
    }

    static func isUnreachable(_ error: HubError) -> Bool {
        if case .unreachable = error { return true }
        return false
    }

    static func isComplete(_ blob: String, _ file: HubFile) -> Bool {
        guard FileManager.default.fileExists(atPath: blob) else { return false }
        return file.size.map { size(of: blob) == $0 } ?? true
    }

    /// Downloads one file to `blob`, resuming `<blob>.incomplete`, then verifies it.
    private func fetch(
        _ file: HubFile, url: String, to blob: String, token: String?, progress: @Sendable (Int64) async -> Void
    ) async throws {
        let partial = blob + ".incomplete"
        let fm = FileManager.default
        if !fm.fileExists(atPath: partial) { _ = fm.createFile(atPath: partial, contents: nil) }
        var lastError: (any Error)?
        for attempt in 1...attempts {
            let have = Self.size(of: partial)
            if let size = file.size, have >= size { break }
            do {
                try await fetchOnce(url: url, to: partial, from: have, token: token, progress: progress)
                lastError = nil
                break
            } catch let error as HubError {
                throw error
            } catch {
                lastError = error
                logger.warning(
                    "download interrupted; resuming",
                    metadata: ["file": "\(file.name)", "attempt": "\(attempt)", "bytes": "\(Self.size(of: partial))", "error": "\(error)"])
                try await Task.sleep(for: .milliseconds(200 * attempt))
            }
        }
        if let lastError { throw HubError.unreachable("download of \(file.name) failed after \(attempts) attempts: \(lastError)") }
        let got = Self.size(of: partial)
        if let size = file.size, got != size {
            try? fm.removeItem(atPath: partial)
            throw HubError.sizeMismatch(file: file.name, expected: size, actual: got)
        }
        if let expected = file.sha256?.lowercased() {
            let actual = try await Self.sha256Hex(file: partial)
            guard actual == expected else {
                try? fm.removeItem(atPath: partial)
                throw HubError.checksumMismatch(file: file.name, expected: expected, actual: actual)
            }
        }
        try? fm.removeItem(atPath: blob)
        try fm.moveItem(atPath: partial, toPath: blob)
    }

    /// One request: `Range: bytes=<from>-` when resuming; appends to `partial` as bytes arrive.
    private func fetchOnce(url: String, to partial: String, from offset: Int64, token: String?, progress: @Sendable (Int64) async -> Void) async throws {
        var request = hub.request(url, token: token)
        if offset > 0 { request.headers.add(name: "Range", value: "bytes=\(offset)-") }
        let response = try await hub.http.execute(request, timeout: .hours(6))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: partial))
        defer { try? handle.close() }
        switch response.status.code {
        case 206:
            try handle.seekToEnd()
        case 200:
            // The server ignored the range: start over.
            try handle.truncate(atOffset: 0)
        case 401 where token == nil:
            throw HubError.gatedNeedsToken(repo: url)
        case 401, 403:
            throw HubError.accessDenied(repo: url)
        case 404:
            throw HubError.noSuchFile(repo: url, file: partial)
        default:
            throw HubError.unexpectedStatus(Int(response.status.code), url: url)
        }
        var written = Int64(try handle.offset())
        var reported = ContinuousClock.now
        for try await chunk in response.body {
            try handle.write(contentsOf: Data(chunk.readableBytesView))
            written += Int64(chunk.readableBytes)
            if ContinuousClock.now - reported > .milliseconds(250) {
                reported = .now
                await progress(written)
            }
        }
        await progress(written)
    }

    static func size(of path: String) -> Int64 {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else { return 0 }
        return (attributes[.size] as? NSNumber)?.int64Value ?? 0
    }

    static func sha256Hex(_ data: Data) -> String { hexString(SHA256.hash(data: data)) }

    /// Hashes a file on a dispatch thread: gigabytes of weights must not hold up an event loop (Swift
    /// concurrency runs on NIO's event loops in this server).
    static func sha256Hex(file path: String) async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global(qos: .utility).async {
                continuation.resume(with: Result { try sha256HexBlocking(file: path) })
            }
        }
    }

    private static func sha256HexBlocking(file path: String) throws -> String {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        var hasher = SHA256()
        while let chunk = try handle.read(upToCount: 4 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
        return hexString(hasher.finalize())
    }
}

/// One download and the callers waiting for it. Waiting is cancellable per caller; the download is
/// cancelled when the last waiter leaves. A lock, not the actor, guards the waiters, because a
/// cancellation handler runs synchronously.
final class SharedDownload: Sendable {
    private struct State {
        var task: Task<Void, Never>?
        var nextId = 0
        var waiters: [Int: CheckedContinuation<PreparedModel, any Error>] = [:]
        var cancelledEarly: Set<Int> = []
        var result: Result<PreparedModel, any Error>?
        var abandoned = false
    }
    private let state = Mutex(State())

    /// Every waiter left and the download was cancelled: a new caller starts a new one.
    var abandoned: Bool { state.withLock { $0.abandoned } }

    func start(_ work: @escaping @Sendable () async -> Result<PreparedModel, any Error>) {
        let task = Task {
            let result = await work()
            let waiters = self.state.withLock { s in
                s.result = result
                defer { s.waiters = [:] }
                return Array(s.waiters.values)
            }
            for waiter in waiters { waiter.resume(with: result) }
        }
        state.withLock { $0.task = task }
    }

    func wait() async throws -> PreparedModel {
        let id = state.withLock { s in
            s.nextId += 1
            return s.nextId
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let ready: Result<PreparedModel, any Error>? = state.withLock { s in
                    if let result = s.result { return result }
                    if s.cancelledEarly.remove(id) != nil { return .failure(CancellationError()) }
                    s.waiters[id] = continuation
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            let (waiter, orphaned, task) = state.withLock { s in
                let waiter = s.waiters.removeValue(forKey: id)
                if waiter == nil, s.result == nil { s.cancelledEarly.insert(id) }
                let orphaned = s.waiters.isEmpty && s.result == nil
                if orphaned { s.abandoned = true }
                return (waiter, orphaned, s.task)
            }
            waiter?.resume(throwing: CancellationError())
            if orphaned { task?.cancel() }
        }
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}

extension ModelDownloader {
    /// Whether any snapshot of `repo` has files in the cache: a model another organisation may have downloaded.
    public static func hasCachedSnapshot(cacheDir: String, repo: String) -> Bool {
        let snapshots = repoFolder(cacheDir: cacheDir, repo: repo) + "/snapshots"
        let fm = FileManager.default
        let commits = (try? fm.contentsOfDirectory(atPath: snapshots)) ?? []
        return commits.contains { !((try? fm.contentsOfDirectory(atPath: snapshots + "/" + $0)) ?? []).isEmpty }
    }
}
