import ArgumentParser
import SimEngine

/// `lyceum engine sim`: the OpenAI-compatible simulator used for tests and benchmarks without GPUs.
struct SimCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sim",
        abstract: "Run the model-server simulator (OpenAI chat completions with a latency model; not a model).")

    @Option var host: String = "127.0.0.1"
    @Option var port: Int
    @Option(name: .customLong("served-model-name"), help: "Name requests must give as `model`.") var servedModelName: String = "sim"
    @Option(help: "Model id it stands in for (shown in /v1/models).") var model: String = "sim"
    @Option(name: .customLong("ttft-ms"), help: "Time to first token for an empty prompt.") var ttftMs: Double = 20
    @Option(name: .customLong("prefill-ms-per-token"), help: "Extra time to first token per prompt token.") var prefillMsPerToken: Double = 0.02
    @Option(name: .customLong("itl-ms"), help: "Inter-token latency.") var itlMs: Double = 5
    @Option(name: .customLong("max-num-seqs"), help: "Sequences at once; more wait in a queue.") var maxNumSeqs: Int = 64
    @Option(name: .customLong("startup-s"), help: "Seconds /health answers 503 after start.") var startupS: Double = 0
    @Option(name: .customLong("fail-rate"), help: "Fraction of requests answered 500.") var failRate: Double = 0
    @Option(help: "Relative jitter of every delay.") var jitter: Double = 0.1
    @Option(name: .customLong("max-model-len"), help: "Prompt plus output tokens above this get a 400.") var maxModelLen: Int = 32768
    @Option(name: .customLong("default-max-tokens"), help: "Output tokens when a request names none.") var defaultMaxTokens: Int?
    @Option(name: .customLong("crash-on-start"), help: "Print this and exit 1 at start (a crash-looping engine).") var crashOnStart: String?

    @Option(help: "Comma-separated devices given to this replica.") var devices: String = ""
    @Option(name: .customLong("broken-devices"), help: "Comma-separated devices on which requests are answered wrongly (a broken-GPU stand-in).") var brokenDevices: String = ""
    @Option(name: .customLong("broken-mode"), help: "How a broken device answers: 404, junk or 500.") var brokenMode: String = "404"
    @Option(name: .customLong("broken-after-requests"), help: "Requests answered correctly before a broken device goes wrong.") var brokenAfterRequests: Int = 0

    func validate() throws {
        guard ["404", "junk", "500"].contains(brokenMode) else { throw ValidationError("--broken-mode must be 404, junk or 500") }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0...65535") }
        guard maxNumSeqs >= 1 else { throw ValidationError("--max-num-seqs must be at least 1") }
        guard (0...1).contains(failRate) else { throw ValidationError("--fail-rate must be between 0 and 1") }
        guard ttftMs >= 0, itlMs >= 0, startupS >= 0, jitter >= 0 else { throw ValidationError("latencies must not be negative") }
    }

    func run() async throws {
        var c = SimConfiguration()
        c.host = host
        c.port = port
        c.servedModelName = servedModelName
        c.model = model
        c.ttftMs = ttftMs
        c.prefillMsPerToken = prefillMsPerToken
        c.itlMs = itlMs
        c.maxNumSeqs = maxNumSeqs
        c.startupS = startupS
        c.failRate = failRate
        c.jitter = jitter
        c.maxModelLen = maxModelLen
        c.defaultMaxTokens = defaultMaxTokens
        c.crashOnStart = crashOnStart
        c.devices = devices.split(separator: ",").map(String.init)
        c.brokenDevices = brokenDevices.split(separator: ",").map(String.init)
        c.brokenMode = brokenMode
        c.brokenAfterRequests = max(0, brokenAfterRequests)
        try await SimServer(config: c).run()
    }
}
