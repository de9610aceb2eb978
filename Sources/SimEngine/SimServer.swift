import Foundation
import Hummingbird
import InferenceCore
import ServiceLifecycle
import Synchronization

/// `lyceum engine sim`: an OpenAI-compatible model-server simulator.
///
/// Deterministic text derived from the prompt, real `usage` counts (one token per word, plus 3 per message),
/// a latency model with queueing, `/health` that is 503 until start-up is done, and vLLM-named metrics.
/// It is how the platform is tested and benchmarked without GPUs; it never claims to be a model.
public struct SimServer: Sendable {
    let config: SimConfiguration
    let scheduler: SimScheduler
    let metrics = SimMetrics()
    let startedAt = ContinuousClock.now
    /// Requests seen on a broken device, for `brokenAfterRequests`.
    let brokenRequests = SimCounter()

    public init(config: SimConfiguration) {
        self.config = config
        self.scheduler = SimScheduler(capacity: config.maxNumSeqs)
    }

    var isReady: Bool { ContinuousClock.now - startedAt >= .milliseconds(Int64(config.startupS * 1000)) }

    public func buildApplication() -> some ApplicationProtocol {
        let router = Router()
        router.get("/health") { _, _ -> Response in
            Response(status: isReady ? .ok : .serviceUnavailable)
        }
        router.get("/v1/models") { _, _ -> Response in
            let body = #"{"object":"list","data":[{"id":"\#(jsonEscape(config.servedModelName))","object":"model","created":0,"owned_by":"lyceum-sim","root":"\#(jsonEscape(config.model))"}]}"#
            return json(.ok, body)
        }
        router.get("/metrics") { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(string: metrics.render(model: config.servedModelName, running: scheduler.running, waiting: scheduler.waiting))))
        }
        router.post("/v1/chat/completions") { request, _ -> Response in
            try await complete(request, chat: true)
        }
        router.post("/v1/completions") { request, _ -> Response in
            try await complete(request, chat: false)
        }
        return Application(
            router: router,
            configuration: .init(address: .hostname(config.host, port: config.port), serverName: "lyceum-sim", backlog: 4096))
    }

    /// Runs the simulator until SIGTERM/SIGINT.
    public func run() async throws {
        if let message = config.crashOnStart {
            try await Task.sleep(for: .milliseconds(200))
            FileHandle.standardError.write(Data("\(message)\n".utf8))
            exit(1)
        }
        print("lyceum engine sim: serving \(config.servedModelName) (simulating \(config.model)) on \(config.host):\(config.port)")
        fflush(nil)
        let app = buildApplication()
        // A stuck drain must not keep the process alive: after 5 s, shutdown turns into cancellation.
        var group = ServiceGroupConfiguration(services: [.init(service: app)], gracefulShutdownSignals: [.sigterm, .sigint], logger: app.logger)
        group.maximumGracefulShutdownDuration = .seconds(5)
        try await ServiceGroup(configuration: group).run()
    }

    // MARK: Completions

    struct Parsed {
        var promptTokens: Int
        var maxTokens: Int?
        var stream: Bool
        var includeUsage: Bool
        var seed: UInt64
        /// Stop sequences (`stop`): generation ends before the first one, as vLLM does.
        var stop: [String] = []
    }

    /// The words up to the first stop sequence (the last one cut where the sequence begins), and which
    /// sequence matched; the words unchanged and nil when none occurs.
    static func applyStop(_ words: [String], _ stops: [String]) -> (words: [String], matched: String?) {
        let text = words.joined()
        var best: (Range<String.Index>, String)?
        for stop in stops where !stop.isEmpty {
            if let r = text.range(of: stop), best.map({ r.lowerBound < $0.0.lowerBound }) ?? true { best = (r, stop) }
        }
        guard let (range, matched) = best else { return (words, nil) }
        let keep = text.distance(from: text.startIndex, to: range.lowerBound)
        var out: [String] = []
        var used = 0
        for word in words where used < keep {
            let take = min(word.count, keep - used)
            out.append(String(word.prefix(take)))
            used += take
        }
        return (out, matched)
    }

    private func complete(_ request: Request, chat: Bool) async throws -> Response {
        guard isReady else { return error(.serviceUnavailable, "the engine is still starting", "ServiceUnavailableError") }
        let requestBody = try await request.body.collect(upTo: 32 * 1024 * 1024)
        guard let payload = try? JSONDecoder().decode(JSONValue.self, from: Data(buffer: requestBody)), case .object = payload else {
            return error(.badRequest, "request body is not a JSON object", "BadRequestError")
        }
        if config.isOnBrokenDevice, brokenRequests.next() > config.brokenAfterRequests {
            switch config.brokenMode {
            case "junk":
                return Response(status: .ok, headers: [.contentType: "text/html"], body: .init(byteBuffer: ByteBuffer(string: "<html><body>502 upstream device error</body></html>")))
            case "500":
                return error(.internalServerError, "simulated device failure on \(config.devices.joined(separator: ","))", "InternalServerError")
            default:
                return error(.notFound, "The model `\(payload["model"]?.stringValue ?? "")` does not exist.", "NotFoundError")
            }
        }
        if let model = payload["model"]?.stringValue, model != config.servedModelName {
            return error(.notFound, "The model `\(model)` does not exist.", "NotFoundError")
        }
        guard let parsed = parse(payload, chat: chat) else {
            return error(.badRequest, chat ? "'messages' must be a non-empty list of messages" : "'prompt' is required", "BadRequestError")
        }
        let maxTokens = parsed.maxTokens ?? config.defaultMaxTokens ?? Int(16 + parsed.seed % 48)
        guard maxTokens >= 1 else { return error(.badRequest, "max_tokens must be at least 1, got \(maxTokens).", "BadRequestError") }
        if parsed.promptTokens + maxTokens > config.maxModelLen {
            return error(
                .badRequest,
                "This model's maximum context length is \(config.maxModelLen) tokens. However, you requested \(parsed.promptTokens + maxTokens) tokens (\(parsed.promptTokens) in the messages, \(maxTokens) in the completion). Please reduce the length of the messages or completion.",
                "BadRequestError")
        }
        if config.failRate > 0, Double.random(in: 0..<1) < config.failRate {
            metrics.state.withLock { $0.failures += 1 }
            return error(.internalServerError, "simulated engine failure (--fail-rate \(config.failRate))", "InternalServerError")
        }
        let id = (chat ? "chatcmpl-" : "cmpl-") + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let created = Int(Date().timeIntervalSince1970)
        let generated = (0..<maxTokens).map { Self.vocabulary[Int((parsed.seed &+ UInt64($0) &* 7919) % UInt64(Self.vocabulary.count))] }
        let (words, matchedStop) = Self.applyStop(generated, parsed.stop)
        let outputTokens = matchedStop == nil ? maxTokens : words.count
        let finish = matchedStop != nil || parsed.maxTokens == nil ? "stop" : "length"
        // vLLM names the stop sequence that ended generation in the choice's `stop_reason`.
        let stopReason = matchedStop.map { "\"\(jsonEscape($0))\"" } ?? "null"
        let usage = #"{"prompt_tokens":\#(parsed.promptTokens),"completion_tokens":\#(outputTokens),"total_tokens":\#(parsed.promptTokens + outputTokens)}"#
        let ttft = config.ttftMs + config.prefillMsPerToken * Double(parsed.promptTokens)
        let model = jsonEscape(config.servedModelName)
        let object = chat ? "chat.completion" : "text_completion"

        if !parsed.stream {
            let arrived = ContinuousClock.now
            await scheduler.acquire()
            defer { scheduler.release() }
            try await sleep(ms: ttft)
            let first = ContinuousClock.now
            if outputTokens > 1 { try await sleep(ms: config.itlMs * Double(outputTokens - 1)) }
            record(prompt: parsed.promptTokens, output: outputTokens, arrived: arrived, first: first)
            let text = words.joined()
            let choice = chat
                ? #"{"index":0,"message":{"role":"assistant","content":"\#(text)"},"logprobs":null,"finish_reason":"\#(finish)","stop_reason":\#(stopReason)}"#
                : #"{"index":0,"text":"\#(text)","logprobs":null,"finish_reason":"\#(finish)","stop_reason":\#(stopReason)}"#
            return json(.ok, #"{"id":"\#(id)","object":"\#(object)","created":\#(created),"model":"\#(model)","choices":[\#(choice)],"usage":\#(usage)}"#)
        }

        let chunkObject = chat ? "chat.completion.chunk" : "text_completion"
        let head = #"data: {"id":"\#(id)","object":"\#(chunkObject)","created":\#(created),"model":"\#(model)","choices":["#
        let stream = ResponseBody { writer in
            let arrived = ContinuousClock.now
            await scheduler.acquire()
            defer { scheduler.release() }
            try await sleep(ms: ttft)
            let first = ContinuousClock.now
            if chat {
                try await writer.write(ByteBuffer(string: head + #"{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"# + "\n\n"))
            }
            var last = first
            for (i, word) in words.enumerated() {
                if i > 0 {
                    // Sleep to an absolute schedule so per-chunk overhead does not stretch the stream.
                    let due = first + .microseconds(Int64(config.itlMs * 1000 * Double(i)))
                    try await Task.sleep(until: due, clock: .continuous)
                    last = ContinuousClock.now
                }
                let delta = chat
                    ? #"{"index":0,"delta":{"content":"\#(word)"},"logprobs":null,"finish_reason":null}"#
                    : #"{"index":0,"text":"\#(word)","logprobs":null,"finish_reason":null}"#
                try await writer.write(ByteBuffer(string: head + delta + "]}\n\n"))
            }
            _ = last
            let end = chat
                ? #"{"index":0,"delta":{},"logprobs":null,"finish_reason":"\#(finish)","stop_reason":\#(stopReason)}"#
                : #"{"index":0,"text":"","logprobs":null,"finish_reason":"\#(finish)","stop_reason":\#(stopReason)}"#
            try await writer.write(ByteBuffer(string: head + end + "]}\n\n"))
            if parsed.includeUsage {
                try await writer.write(ByteBuffer(string: head + "],\"usage\":" + usage + "}\n\n"))
            }
            try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
            record(prompt: parsed.promptTokens, output: outputTokens, arrived: arrived, first: first)
            try await writer.finish(nil)
        }
        return Response(
            status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: stream)
    }

    private func parse(_ json: JSONValue, chat: Bool) -> Parsed? {
        var text = ""
        var promptTokens = 0
        if chat {
            guard case .array(let messages)? = json["messages"], !messages.isEmpty else { return nil }
            for m in messages {
                guard case .object = m else { return nil }
                let content: String
                switch m["content"] {
                case .string(let s)?: content = s
                case .array(let parts)?: content = parts.compactMap { $0["text"]?.stringValue }.joined(separator: " ")
                default: content = ""
                }
                text += (m["role"]?.stringValue ?? "") + ":" + content + "\n"
                promptTokens += Self.countTokens(content) + 3
            }
        } else {
            switch json["prompt"] {
            case .string(let s)?: text = s
            case .array(let a)?: text = a.compactMap(\.stringValue).joined(separator: "\n")
            default: return nil
            }
            promptTokens = Self.countTokens(text)
        }
        let maxTokens = json["max_completion_tokens"]?.intValue ?? json["max_tokens"]?.intValue
        let stream = json["stream"]?.boolValue ?? false
        let includeUsage = json["stream_options"]?["include_usage"]?.boolValue ?? false
        var stop: [String] = []
        switch json["stop"] {
        case .string(let s)?: stop = [s]
        case .array(let a)?: stop = a.compactMap(\.stringValue)
        default: break
        }
        return Parsed(promptTokens: promptTokens, maxTokens: maxTokens, stream: stream, includeUsage: includeUsage, seed: fnv1a(text), stop: Array(stop.prefix(16)))
    }

    private func record(prompt: Int, output: Int, arrived: ContinuousClock.Instant, first: ContinuousClock.Instant) {
        let now = ContinuousClock.now
        metrics.state.withLock { m in
            m.promptTokens += prompt
            m.generationTokens += output
            m.success += 1
            m.ttft.observe((first - arrived).seconds)
            m.e2e.observe((now - arrived).seconds)
            if output > 1 { m.itl.observe((now - first).seconds / Double(output - 1)) }
        }
    }

    private func sleep(ms: Double) async throws {
        guard ms > 0 else { return }
        let spread = config.jitter > 0 ? Double.random(in: -config.jitter...config.jitter) : 0
        try await Task.sleep(for: .microseconds(Int64(ms * (1 + spread) * 1000)))
    }

    static func countTokens(_ s: String) -> Int { s.split(whereSeparator: \.isWhitespace).count }

    static let vocabulary: [String] = [
        " the", " model", " replica", " answers", " with", " simulated", " tokens", " while", " latency", " grows",
        " under", " load", " and", " every", " request", " is", " served", " by", " one", " of", " several",
        " engines", " behind", " a", " gateway", " that", " balances", " traffic", " across", " healthy", " copies",
        " so", " nothing", " here", " was", " generated", " by", " a", " real", " network", ".", ",",
    ]
}

private func json(_ status: HTTPResponse.Status, _ body: String) -> Response {
    Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body)))
}

/// An error in OpenAI's shape, as current vLLM answers.
private func error(_ status: HTTPResponse.Status, _ message: String, _ type: String) -> Response {
    json(status, #"{"error":{"message":"\#(jsonEscape(message))","type":"\#(type)","param":null,"code":\#(status.code)}}"#)
}

func fnv1a(_ s: String) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in s.utf8 {
        h ^= UInt64(b)
        h = h &* 0x100_0000_01b3
    }
    return h
}

/// A shared counter a value-type server can hold.
final class SimCounter: Sendable {
    private let value = Atomic<Int>(0)
    func next() -> Int { value.add(1, ordering: .relaxed).newValue }
}
