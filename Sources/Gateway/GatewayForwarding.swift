import AsyncHTTPClient
import DeploymentStore
import Foundation
import HTTPTypes
import Hummingbird
import InferenceCore
import Logging
import NIOCore
import NIOHTTP1
import Routing

extension Gateway {
    func upstreamRequest(_ endpoint: RouteTable.Endpoint, path: String, body: ByteBuffer) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: endpoint.address.baseURL + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(body)
        return request
    }

    func timeAmount(_ d: Duration) -> TimeAmount { .seconds(d.components.seconds) }

    /// A finished upstream answer, held whole: nothing reached the caller yet, so any failure could be retried.
    struct Answer: Sendable {
        var status: HTTPResponse.Status
        var contentType: String
        var body: ByteBuffer
        var replicaId: String

        var response: Response {
            Response(
                status: status,
                headers: [.contentType: contentType, HTTPField.Name.replicaID: replicaId],
                body: .init(byteBuffer: body))
        }
    }

    /// Non-streaming: the whole answer is read before anything is sent, so a replica that refuses, resets,
    /// dies mid-generation, answers 5xx, or answers something that is not the protocol's (a 404 for a wrong
    /// served model name, a 200 that is not a completion) is counted against and retried on another one.
    /// A request's own error (a 400 for too long a prompt) reaches the caller unchanged.
    func forwardBuffered(
        deploymentId: String, path: String, body: ByteBuffer, callerConnected: @escaping @Sendable () -> Bool = { true }
    ) async throws -> Answer {
        let start = ContinuousClock.now
        stats.begin(deploymentId: deploymentId)
        var failed = true
        defer { stats.end(deploymentId: deploymentId, latency: ContinuousClock.now - start, failed: failed) }
        var tried = Set<String>()
        var lastFailure: String?
        for _ in 1...configuration.maxAttempts {
            let endpoint = try await acquireReplica(deploymentId, excluding: tried, lastFailure: lastFailure, callerConnected: callerConnected)
            tried.insert(endpoint.replicaId)
            let attemptStart = ContinuousClock.now
            stats.begin(deploymentId: deploymentId, replicaId: endpoint.replicaId)
            do {
                let response = try await client.execute(upstreamRequest(endpoint, path: path, body: body), timeout: timeAmount(configuration.upstreamTimeout))
                let (status, contentType) = (response.status, response.headers.first(name: "content-type"))
                let data = try await response.body.collect(upTo: 64 << 20)
                let verdict = ReplicaVerdict.judge(status: Int(status.code), body: data.readableBytesView)
                if case .replicaFault(let why) = verdict {
                    lastFailure = attemptFailed(deploymentId, endpoint, since: attemptStart, why)
                    continue
                }
                picker.release(endpoint.replicaId)
                stats.end(deploymentId: deploymentId, replicaId: endpoint.replicaId, latency: ContinuousClock.now - attemptStart, failed: false)
                failed = false
                return Answer(
                    status: HTTPResponse.Status(code: Int(status.code)), contentType: contentType ?? "application/json", body: data,
                    replicaId: endpoint.replicaId)
            } catch is CancellationError {
                // Cancelled (the caller gave up its place, or the server is shutting down): the replica is not to blame.
                picker.release(endpoint.replicaId)
                stats.end(deploymentId: deploymentId, replicaId: endpoint.replicaId, latency: ContinuousClock.now - attemptStart, failed: false)
                throw CancellationError()
            } catch {
                lastFailure = attemptFailed(deploymentId, endpoint, since: attemptStart, "\(error)")
            }
        }
        throw Self.allAttemptsFailed(tried.count, lastFailure)
    }

    static func allAttemptsFailed(_ count: Int, _ lastFailure: String?) -> OpenAIError {
        OpenAIError(
            .badGateway, "The request failed on \(count) replica\(count == 1 ? "" : "s"); last: \(lastFailure ?? "unknown")",
            type: "server_error", code: "replicas_failed")
    }

    /// One attempt failed before anything reached the caller: count it against the replica, avoid that
    /// replica for a while and have the health checker probe it with a real request; returns the failure,
    /// for the message.
    func attemptFailed(_ deploymentId: String, _ endpoint: RouteTable.Endpoint, since: ContinuousClock.Instant, _ why: String) -> String {
        picker.release(endpoint.replicaId)
        stats.end(deploymentId: deploymentId, replicaId: endpoint.replicaId, latency: ContinuousClock.now - since, failed: true)
        picker.markSuspect(endpoint.replicaId)
        fleet.reportSuspect(replicaId: endpoint.replicaId, reason: why)
        return "replica \(endpoint.replicaId): \(why)"
    }

    /// Streaming: retried only until the replica's answer head arrives (a head that is not an event stream,
    /// or a misconfigured replica's 404, is retried too); from then on bytes pass straight through. A
    /// replica that dies mid-stream ends the stream with an error event in OpenAI's shape.
    func forwardStreaming(
        deploymentId: String, path: String, body: ByteBuffer, requestId: String,
        callerConnected: @escaping @Sendable () -> Bool = { true }, admission: OrgAdmission? = nil
    ) async throws -> Response {
        let start = ContinuousClock.now
        stats.begin(deploymentId: deploymentId)
        var tried = Set<String>()
        var lastFailure: String?
        for _ in 1...configuration.maxAttempts {
            let endpoint: RouteTable.Endpoint
            do {
                endpoint = try await acquireReplica(deploymentId, excluding: tried, lastFailure: lastFailure, callerConnected: callerConnected)
            } catch {
                stats.end(deploymentId: deploymentId, latency: ContinuousClock.now - start, failed: true)
                admission?.leave()
                throw error
            }
            tried.insert(endpoint.replicaId)
            let attemptStart = ContinuousClock.now
            stats.begin(deploymentId: deploymentId, replicaId: endpoint.replicaId)
            let upstream: HTTPClientResponse
            do {
                upstream = try await client.execute(upstreamRequest(endpoint, path: path, body: body), timeout: timeAmount(configuration.upstreamTimeout))
            } catch {
                lastFailure = attemptFailed(deploymentId, endpoint, since: attemptStart, "\(error)")
                continue
            }
            let contentType = upstream.headers.first(name: "content-type")
            if case .replicaFault(let why) = ReplicaVerdict.judgeStreamHead(status: Int(upstream.status.code), contentType: contentType) {
                _ = try? await upstream.body.collect(upTo: 1 << 20)
                lastFailure = attemptFailed(deploymentId, endpoint, since: attemptStart, why)
                continue
            }
            let (picker, stats) = (self.picker, self.stats)
            let ok = upstream.status.code < 500
            let responseBody = ResponseBody { writer in
                var broken = false
                defer {
                    picker.release(endpoint.replicaId)
                    let now = ContinuousClock.now
                    stats.end(deploymentId: deploymentId, replicaId: endpoint.replicaId, latency: now - attemptStart, failed: broken || !ok)
                    stats.end(deploymentId: deploymentId, latency: now - start, failed: broken || !ok)
                    admission?.leave()
                }
                var iterator = upstream.body.makeAsyncIterator()
                var endsCleanly = true
                while true {
                    let chunk: ByteBuffer?
                    do {
                        chunk = try await iterator.next()
                    } catch {
                        broken = true
                        break
                    }
                    guard let chunk else { break }
                    endsCleanly = chunk.readableBytesView.suffix(2).elementsEqual([10, 10])
                    // Throws when the caller has gone; leaving the loop drops the upstream request.
                    try await writer.write(chunk)
                }
                if broken {
                    let error = OpenAIError(.badGateway, "The replica serving this stream failed mid-stream; the answer is incomplete.", type: "server_error", code: "replica_failed")
                    try await writer.write(ByteBuffer(string: (endsCleanly ? "" : "\n\n") + "data: \(error.body)\n\n"))
                }
                try await writer.finish(nil)
            }
            return Response(
                status: HTTPResponse.Status(code: Int(upstream.status.code)),
                headers: [
                    .contentType: contentType ?? "text/event-stream",
                    .cacheControl: "no-cache",
                    HTTPField.Name.replicaID: endpoint.replicaId,
                ],
                body: responseBody)
        }
        stats.end(deploymentId: deploymentId, latency: ContinuousClock.now - start, failed: true)
        admission?.leave()
        throw Self.allAttemptsFailed(tried.count, lastFailure)
    }

    /// `X-Timeout-S`: wait that long; past it, answer 202 with a request id and let the request finish
    /// in the background, its result kept in the store (within the organisation's stored-results limits).
    func forwardWithDeadline(deploymentId: String, orgId: String, path: String, body: ByteBuffer, requestId: String, wait: Duration) async throws -> Response {
        let usage = try await store.resultUsage(orgId: orgId)
        guard usage.count < configuration.maxStoredResultsPerOrg, usage.bytes < configuration.maxStoredResultBytesPerOrg else {
            throw OpenAIError(
                .tooManyRequests,
                "Your organisation holds \(usage.count) stored results (\(usage.bytes >> 10) KiB), at its limit of \(configuration.maxStoredResultsPerOrg) results or \(configuration.maxStoredResultBytesPerOrg >> 20) MiB; results are kept 24 hours. Send the request without X-Timeout-S, or retry later.",
                type: "rate_limit_error", code: "stored_results_limit", retryAfter: 60)
        }
        let box = ResultBox<Result<Answer, OpenAIError>>()
        let logger = Logger(label: "lyceum.gateway")
        background.submit { [self] in
            let outcome: Result<Answer, OpenAIError>
            do {
                outcome = .success(try await forwardBuffered(deploymentId: deploymentId, path: path, body: body))
            } catch let error as OpenAIError {
                outcome = .failure(error)
            } catch {
                outcome = .failure(OpenAIError(.internalServerError, "\(error)", type: "server_error"))
            }
            if !box.deliver(outcome) {
                let (status, data): (Int, ByteBuffer) = switch outcome {
                case .success(let a): (Int(a.status.code), a.body)
                case .failure(let e): (Int(e.status.code), ByteBuffer(string: e.body))
                }
                do {
                    try await store.saveResult(
                        RequestResultRecord(
                            id: requestId, orgId: orgId, deploymentId: deploymentId,
                            status: (200..<300).contains(status) ? "completed" : "failed", httpStatus: status,
                            body: Data(buffer: data), createdAt: Date(), completedAt: Date()))
                } catch {
                    logger.error("could not store a request's result", metadata: ["request.id": "\(requestId)", "error": "\(error)"])
                }
            }
        }
        if let outcome = await box.wait(timeout: wait) {
            return try outcome.get().response
        }
        try await store.insertPendingResult(id: requestId, orgId: orgId, deploymentId: deploymentId)
        if lastPrune.withLock({ last in
            guard ContinuousClock.now - last > .seconds(3600) else { return false }
            last = ContinuousClock.now
            return true
        }) {
            do {
                try await store.pruneResults(olderThan: Date().addingTimeInterval(-86400))
            } catch {
                logger.error("could not prune stored results", metadata: ["error": "\(error)"])
            }
        }
        return Response(
            status: .accepted, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: #"{"request_id":"\#(requestId)","status":"pending"}"#)))
    }
}
