import ArgumentParser
import AsyncHTTPClient
import Foundation
import Histogram
import NIOCore

/// Replays a request trace (`TIMESTAMP,ContextTokens,GeneratedTokens`, as in ../shared/traces) open loop:
/// each request leaves at its (time-compressed) arrival time with a prompt of that many words and that many
/// output tokens, whatever happened to earlier ones.
struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Replay a request trace against an OpenAI chat endpoint (open loop).")
    @Option(help: "Base URL up to and including /v1.") var url: String
    @Option var key: String?
    @Option var model: String
    @Option(help: "CSV trace file.") var trace: String
    @Option(help: "Time compression: 10 replays 10 minutes of trace in 1.") var speedup: Double = 10
    @Option(help: "Skip this many seconds of the trace first.") var skip: Double = 0
    @Option(help: "Replay at most this many seconds of the trace (before compression).") var span: Double = .infinity
    @Option(help: "Prompt length is divided by this (the simulator's prefill cost is per word).") var promptScale: Double = 1
    @Option(help: "Latency target, ms: the result reports the fraction of requests within it.") var targetMs: Double = 5000
    @Option var label = ""

    struct Entry { var at: Double; var prompt: Int; var output: Int }

    static func load(_ path: String) throws -> [Entry] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var entries: [Entry] = []
        var first: Double?
        for line in text.split(whereSeparator: \.isNewline).dropFirst() {
            let fields = line.split(separator: ",")
            guard fields.count >= 3, let prompt = Int(fields[1]), let output = Int(fields[2].trimmingCharacters(in: .whitespacesAndNewlines)) else { continue }
            // "2023-11-16 18:17:03.9799600": whole seconds as ISO 8601, then the fraction.
            let stamp = fields[0]
            let whole = stamp.prefix(19).replacingOccurrences(of: " ", with: "T") + "Z"
            let fraction = stamp.count > 20 ? Double("0" + stamp.dropFirst(19)) ?? 0 : 0
            guard let date = try? Date(whole, strategy: .iso8601) else { continue }
            let t = date.timeIntervalSince1970 + fraction
            if first == nil { first = t }
            entries.append(Entry(at: t - first!, prompt: prompt, output: output))
        }
        return entries.sorted { $0.at < $1.at }
    }

    struct State {
        var histogram = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
        var ok = 0
        var errors = 0
        var withinTarget = 0
    }

    func run() async throws {
        let entries = try Self.load(trace).filter { $0.at >= skip && $0.at < skip + span }
        guard let firstAt = entries.first?.at else { throw ValidationError("no requests in that part of the trace") }
        let client = makeClient()
        let state = Shared(State())
        let start = ContinuousClock.now + .milliseconds(100)
        let target = UInt64(targetMs * 1000)
        await withTaskGroup(of: Void.self) { group in
            for entry in entries {
                let due = start + .microseconds(Int64((entry.at - firstAt) / speedup * 1_000_000))
                try? await Task.sleep(until: due, clock: .continuous)
                var request = HTTPClientRequest(url: url + "/chat/completions")
                request.method = .POST
                request.headers.add(name: "Content-Type", value: "application/json")
                if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
                let words = max(1, Int(Double(entry.prompt) / promptScale))
                let body: [String: Any] = [
                    "model": model, "messages": [["role": "user", "content": String(repeating: "w ", count: words)]],
                    "max_tokens": max(1, entry.output),
                ]
                request.body = .bytes(ByteBuffer(bytes: (try? JSONSerialization.data(withJSONObject: body)) ?? Data()))
                let sendable = request
                group.addTask {
                    var ok = false
                    do {
                        let response = try await client.execute(sendable, timeout: .seconds(300))
                        _ = try await response.body.collect(upTo: 8 << 20)
                        ok = response.status.code == 200
                    } catch {}
                    let latency = micros(ContinuousClock.now - due)
                    state.mutex.withLock { s in
                        if ok {
                            s.ok += 1
                            _ = s.histogram.record(latency)
                            if latency <= target { s.withinTarget += 1 }
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
            "label": label, "mode": "replay", "requests": entries.count, "ok": s.ok, "errors": s.errors,
            "within_target": Double(s.withinTarget) / Double(max(1, entries.count)), "target_ms": targetMs,
            "p50_ms": ms(s.histogram, 50), "p95_ms": ms(s.histogram, 95), "p99_ms": ms(s.histogram, 99),
            "trace_seconds": (entries.last!.at - firstAt), "wall_seconds": (entries.last!.at - firstAt) / speedup,
        ])
    }
}
