@testable import Controller
import DeploymentStore
import Foundation
import Hummingbird
import InferenceCore
import Logging
import ModelHub
import NIOCore
import Synchronization
import Testing

/// A local server standing in for the Hugging Face Hub (the Hub cannot be reached here): one repository's
/// metadata at `/api/models/{org}/{name}` and its files at `/{org}/{name}/resolve/{revision}/{file}`, each
/// answer held back a moment so that downloads overlap. It counts what it serves.
final class HubStandIn: Sendable {
    let repo: String
    let files: [String: String]
    let fetches = Mutex<[String: Int]>([:])
    private let port = Mutex<Int?>(nil)

    init(repo: String, files: [String: String]) {
        self.repo = repo
        self.files = files
    }

    var metadata: String {
        let siblings = files.keys.sorted().map { name -> String in
            let data = files[name]!
            let sha = APIKeys.hash(data)  // SHA-256 of the file's bytes
            return #"{"rfilename":"\#(name)","size":\#(data.utf8.count),"blobId":"\#(sha.prefix(40))","lfs":{"sha256":"\#(sha)","size":\#(data.utf8.count)}}"#
        }
        return #"{"id":"\#(repo)","sha":"0123456789abcdef0123456789abcdef01234567","private":false,"gated":false,"siblings":[\#(siblings.joined(separator: ","))]}"#
    }

    /// Serves until the returned task is cancelled; the base URL once it listens.
    func start() async throws -> (url: String, task: Task<Void, any Error>) {
        let router = Router()
        let (repo, files, metadata) = (repo, files, metadata)
        router.get("api/models/:org/:name") { _, context -> Response in
            guard "\(context.parameters.get("org") ?? "")/\(context.parameters.get("name") ?? "")" == repo else { return Response(status: .unauthorized) }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: metadata)))
        }
        let serve: @Sendable (Request, BasicRequestContext) async throws -> Response = { [self] request, context in
            let name = context.parameters.get("file") ?? ""
            guard let data = files[name] else { return Response(status: .notFound) }
            if request.method == .get {
                fetches.withLock { $0[name, default: 0] += 1 }
                try await Task.sleep(for: .milliseconds(300))
            }
            return Response(
                status: .ok, headers: [.contentType: "application/octet-stream", .init("X-Repo-Commit")!: "0123456789abcdef0123456789abcdef01234567"],
                body: .init(byteBuffer: ByteBuffer(string: data)))
        }
        router.get(":org/:name/resolve/:revision/:file", use: serve)
        router.head(":org/:name/resolve/:revision/:file", use: serve)
        var logger = Logger(label: "hub-stand-in")
        logger.logLevel = .critical
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { [self] channel in port.withLock { $0 = channel.localAddress?.port } }, logger: logger)
        let task = Task { try await app.runService() }
        let deadline = ContinuousClock.now + .seconds(10)
        while port.withLock({ $0 }) == nil, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        let bound = try #require(port.withLock { $0 }, "the Hub stand-in did not start")
        return ("http://127.0.0.1:\(bound)", task)
    }
}

@Suite("Model downloads on an in-memory store and provider", .serialized)
struct FleetDownloadTests {
    @Test("two replicas of one model share one download, then both launch from the cache (a local stand-in for the Hub)")
    func sharedDownload() async throws {
        let hub = HubStandIn(repo: "acme/tiny", files: [
            "config.json": #"{"model_type":"llama"}"#, "tokenizer.json": #"{"version":"1.0"}"#,
            "model.safetensors": String(repeating: "w", count: 4096),
        ])
        let (url, server) = try await hub.start()
        defer { server.cancel() }
        let cache = try temporaryDirectory()
        let downloader = ModelDownloader(cacheDir: cache, hub: HubClient(endpoint: url), logger: Logger(label: "download-test"))
        let gpu = HardwareProfile(
            name: "gpu.h100", engine: .vllm, gpuType: "h100", gpuCount: 1, pricePerHour: "2.00", devices: ["0", "1"], readyTimeoutS: 30)
        let rig = try await FleetRig(downloader: downloader, extraProfiles: [gpu])
        let spec = DeploymentSpec(
            hfModelId: "acme/tiny", hardwareProfile: "gpu.h100", targetRps: 10, targetLatencyP95Ms: 1000, stabilisationWindow: 30,
            minReplicas: 2, maxReplicas: 2)
        try await rig.store.insert(DeploymentRecord(id: "d", orgId: rig.orgId, spec: spec, hfTokenSealed: nil, now: Date()), event: "created")
        rig.controller.poke(deploymentId: "d")

        try await eventually("both replicas serving from the cache", within: 15) { try await rig.healthy("d") == 2 }
        let events = try await rig.store.events(deploymentId: "d")
        #expect(events.filter { $0.kind == "pulling" }.count == 2, "both replicas waited for the model")
        #expect(events.filter { $0.kind == "model_ready" }.count == 1)
        #expect(hub.fetches.withLock { $0 } == ["config.json": 1, "tokenizer.json": 1, "model.safetensors": 1], "each file fetched once")
        let launched = rig.provider.state.withLock { $0.launches.count }
        #expect(launched == 2)
        #expect(ModelDownloader.hasCachedSnapshot(cacheDir: cache, repo: "acme/tiny"))
        await rig.stop()
    }
}
