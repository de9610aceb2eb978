import ArgumentParser
import AsyncHTTPClient
import Foundation
import Histogram
import NIOCore
import Synchronization

/// `lyceum-bench`: an open-loop load generator for OpenAI chat endpoints.
///
/// Requests leave on a fixed schedule whether or not earlier ones were answered, and each latency is
/// measured from its scheduled time, so a slow proxy's queueing shows instead of hiding (no coordinated
/// omission). Percentiles come from HdrHistogram. Output is one JSON object per run, for scripts.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lyceum-bench", abstract: "Open-loop load for OpenAI-compatible chat endpoints.",
        subcommands: [Rate.self, Streams.self, Replay.self])
}

struct Target: ParsableArguments {
    @Option(help: "Base URL up to and including /v1 (e.g. http://127.0.0.1:8080/openai/v1).") var url: String
    @Option(help: "API key, if the endpoint needs one.") var key: String?
    @Option(help: "Model name to send.") var model: String
    @Option(name: .customLong("max-tokens")) var maxTokens = 4
    @Option(help: "Words in the prompt.") var promptWords = 16

    func request(stream: Bool) throws -> HTTPClientRequest {
        var r = HTTPClientRequest(url: url + "/chat/completions")
        r.method = .POST
        r.headers.add(name: "Content-Type", value: "application/json")
        if let key { r.headers.add(name: "Authorization", value: "Bearer \(key)") }
        let prompt = Array(repeating: "word", count: promptWords).joined(separator: " ")
        let body: [String: Any] = [
            "model": model, "messages": [["role": "user", "content": prompt]], "max_tokens": maxTokens, "stream": stream,
        ]
        r.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        return r
    }
}

func makeClient() -> HTTPClient {
    var config = HTTPClient.Configuration()
    config.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 4096)
    config.timeout = .init(connect: .seconds(5), read: .seconds(60))
    return HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
}

func micros(_ d: Duration) -> UInt64 {
    UInt64(max(1, d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000))
}

func ms(_ h: Histogram<UInt64>, _ p: Double) -> Double {
    h.totalCount == 0 ? 0 : Double(h.valueAtPercentile(p)) / 1000
}

func emit(_ object: [String: Any]) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

/// Non-streaming requests at a fixed rate.
struct Rate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Send non-streaming requests at a fixed rate (open loop).")
    @OptionGroup var target: Target
    @Option var rps: Double
    @Option var duration: Double = 10
    @Option(help: "Seconds of load before measuring.") var warmup: Double = 2
    @Option(help: "Seconds a request may take before it counts as an error.") var timeout: Double = 60
    @Option var label = ""

    struct State {
        var histogram = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        var ok = 0
        var errors = 0
    }

    func run() async throws {
        let client = makeClient()
        let request = try target.request(stream: false)
        let state = Shared(State())
        let total = Int((warmup + duration) * rps)
        let measuredFrom = Int(warmup * rps)
        let start = ContinuousClock.now + .milliseconds(50)
        let limit = TimeAmount.microseconds(Int64(timeout * 1_000_000))
        let timeoutMicros = UInt64(timeout * 1_000_000)
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<total {
                let due = start + .microseconds(Int64(Double(i) / rps * 1_000_000))
                try? await Task.sleep(until: due, clock: .continuous)
                group.addTask {
                    var ok = false
                    do {
                        let response = try await client.execute(request, timeout: limit)
                        _ = try await response.body.collect(upTo: 1 << 20)
                        ok = response.status.code == 200
                    } catch {}
                    let latency = ContinuousClock.now - due
                    // Counted from the scheduled send time: a request the client could not even start in time is late too.
                    if micros(latency) > timeoutMicros { ok = false }
                    guard i >= measuredFrom else { return }
                    state.mutex.withLock { s in
                        if ok {
                            s.ok += 1
                            _ = s.histogram.record(micros(latency))
                        } else {
                            s.errors += 1
                        }
                    }
                }
            }
        }
        try await client.shutdown()
        let s = state.mutex.withLock { $0 }
        try emit([
            "label": label, "mode": "rate", "rps": rps, "duration_s": duration, "sent": total - measuredFrom, "ok": s.ok,
            "errors": s.errors, "p50_ms": ms(s.histogram, 50), "p90_ms": ms(s.histogram, 90), "p99_ms": ms(s.histogram, 99),
            "p999_ms": ms(s.histogram, 99.9), "max_ms": Double(s.histogram.max) / 1000, "sent_with_warmup": total, "timeout_s": timeout,
        ])
    }
}

/// Concurrent streams: time to first token and gaps between chunks; optionally the RSS of a process
/// (the gateway) while every stream is open.
struct Streams: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run concurrent streams; report TTFT, chunk gaps, chunk counts.")
    @OptionGroup var target: Target
    @Option var concurrency = 16
    @Option(help: "Streams in all (each worker runs requests back to back).") var requests = 160
    @Option(name: .customLong("rss-pid"), help: "Report this process's resident memory before and while all streams are open.") var rssPid: Int32?
    @Option var label = ""

    struct State {
        var ttft = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        var gaps = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        var chunks: [Int] = []
        var errors = 0
        var open = 0
        var peakOpen = 0
        var peakRSSKiB = 0
    }

    func run() async throws {
        let client = makeClient()
        let request = try target.request(stream: true)
        let state = Shared(State())
        let baseline = rssPid.map(rssKiB) ?? 0
        let perWorker = max(1, requests / concurrency)
        let pid = rssPid
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    for _ in 0..<perWorker {
                        let sent = ContinuousClock.now
                        do {
                            let response = try await client.execute(request, timeout: .seconds(60))
                            guard response.status.code == 200 else { throw CancellationError() }
                            var last: ContinuousClock.Instant?
                            var events = 0
                            var sse = SSEContentCounter()
                            for try await chunk in response.body {
                                let now = ContinuousClock.now
                                let content = sse.feed(chunk)
                                guard content > 0 else { continue }
                                events += content
                                state.mutex.withLock { s in
                                    if let last {
                                        _ = s.gaps.record(micros(now - last))
                                    } else {
                                        _ = s.ttft.record(micros(now - sent))
                                        s.open += 1
                                        // Resident memory at the most streams open at once.
                                        if let pid, s.open > s.peakOpen {
                                            s.peakOpen = s.open
                                            s.peakRSSKiB = rssKiB(pid)
                                        }
                                    }
                                }
                                last = now
                            }
                            state.mutex.withLock { s in
                                s.chunks.append(events)
                                s.open -= 1
                            }
                        } catch {
                            state.mutex.withLock { $0.errors += 1 }
                        }
                    }
                }
            }
        }
        try await client.shutdown()
        let s = state.mutex.withLock { $0 }
        var out: [String: Any] = [
            "label": label, "mode": "streams", "concurrency": concurrency, "streams": s.chunks.count, "errors": s.errors,
            "ttft_p50_ms": ms(s.ttft, 50), "ttft_p99_ms": ms(s.ttft, 99), "gap_p50_ms": ms(s.gaps, 50), "gap_p99_ms": ms(s.gaps, 99),
            "chunks_min": s.chunks.min() ?? 0, "chunks_max": s.chunks.max() ?? 0,
        ]
        if rssPid != nil {
            out["rss_before_kib"] = baseline
            out["rss_at_peak_kib"] = s.peakRSSKiB
            out["peak_open"] = s.peakOpen
        }
        try emit(out)
    }
}

/// Counts the server-sent events of a chat stream that carry text (`"content":"..."`, not empty), fed
/// the body as it arrives: events split across reads are joined, several in one read all count.
struct SSEContentCounter {
    var pending = ""

    mutating func feed(_ chunk: ByteBuffer) -> Int {
        pending += String(buffer: chunk)
        var content = 0
        while let r = pending.range(of: "\n\n") {
            let event = pending[..<r.lowerBound]
            if event.contains("\"content\":\""), !event.contains("\"content\":\"\"") { content += 1 }
            pending.removeSubrange(..<r.upperBound)
        }
        return content
    }
}

/// Resident set size of a process, from /proc.
func rssKiB(_ pid: Int32) -> Int {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0") ?? 0
    }
    return 0
}

/// A lock-protected value shared by the load's tasks.
final class Shared<Value: Sendable>: Sendable {
    let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
}
