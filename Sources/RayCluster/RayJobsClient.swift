import AsyncHTTPClient
import Foundation
import InferenceCore
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

/// Ray's Jobs REST API and state API (the head's dashboard port, 8265 by default), over HTTP only: no
/// Python in the server.
public struct RayJobsClient: Sendable {
    /// `http://HEAD:8265`, without a trailing slash.
    public let address: String
    let token: String?
    let client: HTTPClient
    let timeout: Duration

    public init(address: String, token: String?, client: HTTPClient, timeout: Duration = .seconds(10)) {
        self.address = address.hasSuffix("/") ? String(address.dropLast()) : address
        self.token = token
        self.client = client
        self.timeout = timeout
    }

    /// A job as the Jobs API describes it (the fields the platform reads).
    public struct Job: Sendable, Equatable {
        public var submissionId: String
        public var status: Status
        public var message: String
        public var driverNodeId: String?
        public var driverExitCode: Int?
        public var metadata: [String: String]
        /// What it asked Ray for: custom resources, with its GPUs as `GPU`.
        public var resources: [String: Double]

        public enum Status: String, Sendable {
            case pending = "PENDING", running = "RUNNING", stopped = "STOPPED", succeeded = "SUCCEEDED", failed = "FAILED"

            /// Whether the job is over: nothing of it runs any more.
            public var isTerminal: Bool { self == .stopped || self == .succeeded || self == .failed }
        }

        init?(_ json: JSONValue) {
            guard let id = json["submission_id"]?.stringValue, let status = json["status"]?.stringValue.flatMap(Status.init(rawValue:)) else {
                return nil
            }
            submissionId = id
            self.status = status
            message = json["message"]?.stringValue ?? ""
            driverNodeId = json["driver_node_id"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
            driverExitCode = json["driver_exit_code"]?.intValue
            var meta: [String: String] = [:]
            if case .object(let fields)? = json["metadata"] {
                for (k, v) in fields { if let s = v.stringValue { meta[k] = s } }
            }
            metadata = meta
            var asked: [String: Double] = [:]
            if case .object(let fields)? = json["entrypoint_resources"] {
                for (k, v) in fields { if let n = v.doubleValue { asked[k] = n } }
            }
            if let gpus = json["entrypoint_num_gpus"]?.doubleValue, gpus > 0 { asked["GPU"] = gpus }
            resources = asked
        }
    }

    /// A node as the state API describes it.
    public struct Node: Sendable, Equatable {
        public var nodeId: String
        public var ip: String
        public var alive: Bool
        public var isHead: Bool
        public var resources: [String: Double]
    }

    /// What a submission needs.
    public struct Submission: Sendable {
        public var submissionId: String
        public var entrypoint: String
        public var numCpus: Double = 0
        public var numGpus: Double = 0
        public var resources: [String: Double] = [:]
        public var environment: [String: String] = [:]
        public var metadata: [String: String] = [:]
        /// Node labels the job must land on (`{"ray.io/node-id": "in(ID)"}`).
        public var labelSelector: [String: String] = [:]

        public init(submissionId: String, entrypoint: String) {
            self.submissionId = submissionId
            self.entrypoint = entrypoint
        }

        var json: JSONValue {
            var body: [String: JSONValue] = [
                "submission_id": .string(submissionId),
                "entrypoint": .string(entrypoint),
                "entrypoint_num_cpus": .number(numCpus),
                "runtime_env": .object(["env_vars": .object(environment.mapValues { .string($0) })]),
                "metadata": .object(metadata.mapValues { .string($0) }),
            ]
            if numGpus > 0 { body["entrypoint_num_gpus"] = .number(numGpus) }
            if !resources.isEmpty { body["entrypoint_resources"] = .object(resources.mapValues { .number($0) }) }
            if !labelSelector.isEmpty { body["entrypoint_label_selector"] = .object(labelSelector.mapValues { .string($0) }) }
            return .object(body)
        }
    }

    /// What Ray answered that the platform cannot use: an HTTP error or a body that is not what the API promises.
    public struct Failure: Error, CustomStringConvertible {
        public var status: Int
        public var description: String
    }

    /// Submits a job. A submission id Ray already has is not an error: the job was submitted before (by this
    /// leader before a retry, or by another before a hand-over); `false` says so.
    @discardableResult
    public func submit(_ submission: Submission) async throws -> Bool {
        do {
            _ = try await call(.POST, "/api/jobs/", body: submission.json)
            return true
        } catch let failure as Failure where failure.description.contains("already exists") {
            return false
        }
    }

    /// The job, or nil when Ray does not know it.
    public func job(_ submissionId: String) async throws -> Job? {
        do {
            return Job(try await call(.GET, "/api/jobs/\(pathEscape(submissionId))"))
        } catch let failure as Failure where failure.status == 404 {
            return nil
        }
    }

    /// Every job the cluster knows (running and finished).
    public func jobs() async throws -> [Job] {
        guard case .array(let items) = try await call(.GET, "/api/jobs/") else {
            throw Failure(status: 200, description: "GET /api/jobs/ did not answer a list")
        }
        return items.compactMap(Job.init)
    }

    /// Asks Ray to stop a job (SIGTERM, then SIGKILL after `RAY_JOB_STOP_WAIT_TIME_S`).
    public func stop(_ submissionId: String) async throws {
        do {
            // Short: for a job on a lost node, Ray may not answer until it declares the node dead.
            _ = try await call(.POST, "/api/jobs/\(pathEscape(submissionId))/stop", body: .object([:]), timeout: .seconds(2))
        } catch let failure as Failure where failure.status == 404 {
            return
        }
    }

    /// The job driver's output: what its entrypoint (the launcher and the engine) printed.
    public func logs(_ submissionId: String) async throws -> String {
        try await call(.GET, "/api/jobs/\(pathEscape(submissionId))/logs")["logs"]?.stringValue ?? ""
    }

    /// The cluster's nodes with their total resources.
    public func nodes() async throws -> [Node] {
        let answer = try await call(.GET, "/api/v0/nodes?limit=10000&detail=true")
        guard case .array(let items)? = answer["data"]?["result"]?["result"] else {
            throw Failure(status: 200, description: "GET /api/v0/nodes did not answer data.result.result")
        }
        return items.compactMap { item in
            guard let id = item["node_id"]?.stringValue, let ip = item["node_ip"]?.stringValue else { return nil }
            var resources: [String: Double] = [:]
            if case .object(let fields)? = item["resources_total"] {
                for (k, v) in fields { if let n = v.doubleValue { resources[k] = n } }
            }
            return Node(
                nodeId: id, ip: ip, alive: item["state"]?.stringValue == "ALIVE", isHead: item["is_head_node"] == .bool(true),
                resources: resources)
        }
    }

    func call(_ method: HTTPMethod, _ path: String, body: JSONValue? = nil, timeout: Duration? = nil) async throws -> JSONValue {
        var request = HTTPClientRequest(url: address + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: try JSONEncoder().encode(body)))
        }
        let response = try await client.execute(request, timeout: .nanoseconds((timeout ?? self.timeout).nanoseconds))
        let bytes = try await response.body.collect(upTo: 32 << 20)
        let data = Data(buffer: bytes)
        guard (200..<300).contains(Int(response.status.code)) else {
            // Ray's errors are Python tracebacks: the message is at the end.
            let text = String(decoding: data.suffix(1500), as: UTF8.self)
            throw Failure(status: Int(response.status.code), description: "Ray answered \(method) \(path) with \(response.status.code): \(text)")
        }
        do {
            return try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw Failure(status: Int(response.status.code), description: "Ray answered \(method) \(path) with a body that is not JSON")
        }
    }

    func pathEscape(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-_."))) ?? s
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (s, atto) = components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }
}
