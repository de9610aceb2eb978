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
    @Option(help: "Replay this many trace seconds first, unmeasured, so every deployment meets the measured span warm.") var leadIn: Double = 0
    @Option(help: "Prompt length is divided by this (the simulator's prefill cost is per word).") var promptScale: Double = 1
    @Option(help: "Latency target, ms: the result reports the fraction of requests within it.") var targetMs: Double = 5000
    @Flag(help: "Stream each answer; report time to first token, time per output token and goodput.") var stream = false
    @Option(name: .customLong("ttft-slo-ms"), help: "With --stream: goodput counts requests whose first token came within this.") var ttftSloMs: Double = 1000
    @Option(name: .customLong("tpot-slo-ms"), help: "With --stream: ... and whose time per output token after the first was within this.") var tpotSloMs: Double = 50
    @Flag(help: "Start each prompt with a word of its own, so no two prompts share a prefix (fair to prefix-cache routing).") var uniquePrompts = false
    @Option(help: "Seconds a request may take before it counts as an error.") var timeout: Double = 300
    @Option var label = ""

    struct Entry { var at: Double; var prompt: Int; var output: Int }

    static func iso(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }

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
        // Streaming only.
        var ttft = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
        var tpot = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
        var good = 0
        var ttftMet = 0
        var tpotMet = 0
        var chunkMismatches = 0
    }

    /// One streamed answer: when its first and last text events came, and how many there were.
    struct StreamResult {
        var first: ContinuousClock.Instant?
        var last: ContinuousClock.Instant?
        var events = 0
    }

    static func readStream(_ response: HTTPClientResponse) async throws -> StreamResult {
        var result = StreamResult()
        var sse = SSEContentCounter()
        for try await chunk in response.body {
            let now = ContinuousClock.now
            let content = sse.feed(chunk)
            guard content > 0 else { continue }
            if result.first == nil { result.first = now }
            result.last = now
            result.events += content
        }
        return result
    }

    func run() async throws {
        let all = try Self.load(trace).filter { $0.at >= skip && $0.at < skip + leadIn + span }
        guard let firstAt = all.first?.at else { throw ValidationError("no requests in that part of the trace") }
        let measuredFrom = skip + leadIn
        let entries = all.filter { $0.at >= measuredFrom }
        guard !entries.isEmpty else { throw ValidationError("no requests in the measured part of the trace") }
        let client = makeClient()
        let state = Shared(State())
        let start = ContinuousClock.now + .milliseconds(100)
        // Wall-clock times of the measured part, for the usage API.
        let measuredFromDate = Date().addingTimeInterval(0.1 + (measuredFrom - firstAt) / speedup)
        let target = UInt64(targetMs * 1000)
        let (ttftSlo, tpotSlo) = (UInt64(ttftSloMs * 1000), UInt64(tpotSloMs * 1000))
        let limit = TimeAmount.microseconds(Int64(timeout * 1_000_000))
        let stream = stream
        await withTaskGroup(of: Void.self) { group in
            for (index, entry) in all.enumerated() {
                let measured = entry.at >= measuredFrom
                let due = start + .microseconds(Int64((entry.at - firstAt) / speedup * 1_000_000))
                try? await Task.sleep(until: due, clock: .continuous)
                var request = HTTPClientRequest(url: url + "/chat/completions")
                request.method = .POST
                request.headers.add(name: "Content-Type", value: "application/json")
                if let key { request.headers.add(name: "Authorization", value: "Bearer \(key)") }
                let words = max(1, Int(Double(entry.prompt) / promptScale))
                let prompt = (uniquePrompts ? "r\(index)x\(UInt32.random(in: 0...UInt32.max)) " : "") + String(repeating: "w ", count: words)
                let outputTokens = max(1, entry.output)
                var body: [String: Any] = [
                    "model": model, "messages": [["role": "user", "content": prompt]], "max_tokens": outputTokens,
                ]
                if stream { body["stream"] = true }
                request.body = .bytes(ByteBuffer(bytes: (try? JSONSerialization.data(withJSONObject: body)) ?? Data()))
                let sendable = request
                group.addTask {
                    var ok = false
                    var streamed = StreamResult()
                    do {
                        let response = try await client.execute(sendable, timeout: limit)
                        if stream {
                            guard response.status.code == 200 else { throw CancellationError() }
                            streamed = try await Self.readStream(response)
                            ok = streamed.first != nil
                        } else {
                            _ = try await response.body.collect(upTo: 8 << 20)
                            ok = response.status.code == 200
                        }
                    } catch {}
                    let latency = micros(ContinuousClock.now - due)
                    guard measured else { return }
                    state.mutex.withLock { s in
                        guard ok else {
                            s.errors += 1
                            return
                        }
                        s.ok += 1
                        _ = s.histogram.record(latency)
                        if latency <= target { s.withinTarget += 1 }
                        guard stream, let first = streamed.first, let last = streamed.last else { return }
                        // Time to first token from the scheduled send time; time per output token after the first.
                        let ttft = micros(first - due)
                        let tpot = streamed.events > 1 ? micros(last - first) / UInt64(streamed.events - 1) : 0
                        _ = s.ttft.record(ttft)
                        _ = s.tpot.record(max(1, tpot))
                        if ttft <= ttftSlo { s.ttftMet += 1 }
                        if tpot <= tpotSlo { s.tpotMet += 1 }
                        if ttft <= ttftSlo && tpot <= tpotSlo { s.good += 1 }
                        if streamed.events != outputTokens { s.chunkMismatches += 1 }
                    }
                }
            }
        }
        try await client.shutdown()
        let s = state.mutex.withLock { $0 }
        var out: [String: Any] = [
            "label": label, "mode": "replay", "requests": entries.count, "ok": s.ok, "errors": s.errors,
            "within_target": Double(s.withinTarget) / Double(max(1, entries.count)), "target_ms": targetMs,
            "p50_ms": ms(s.histogram, 50), "p95_ms": ms(s.histogram, 95), "p99_ms": ms(s.histogram, 99),
            "trace_seconds": (entries.last!.at - measuredFrom), "wall_seconds": (entries.last!.at - measuredFrom) / speedup,
            "lead_in_requests": all.count - entries.count, "measured_from": Self.iso(measuredFromDate), "measured_to": Self.iso(Date()),
        ]
        if stream {
            // Goodput: the fraction of all requests (failed ones included, as misses) that met both targets.
            let n = Double(max(1, entries.count))
            out["stream"] = true
            out["goodput"] = Double(s.good) / n
            out["ttft_met"] = Double(s.ttftMet) / n
            out["tpot_met"] = Double(s.tpotMet) / n
            out["ttft_slo_ms"] = ttftSloMs
            out["tpot_slo_ms"] = tpotSloMs
            out["ttft_p50_ms"] = ms(s.ttft, 50)
            out["ttft_p90_ms"] = ms(s.ttft, 90)
            out["ttft_p99_ms"] = ms(s.ttft, 99)
            out["tpot_p50_ms"] = ms(s.tpot, 50)
            out["tpot_p99_ms"] = ms(s.tpot, 99)
            out["chunk_mismatches"] = s.chunkMismatches
        }
        try emit(out)
    }
}
