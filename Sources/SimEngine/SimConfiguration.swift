/// How the simulator behaves: a latency model in the spirit of llm-d's inference simulator.
public struct SimConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8000
    /// The name requests must use as `model` (vLLM's `--served-model-name`).
    public var servedModelName = "sim"
    /// The model it stands in for; shown in `/v1/models`, never answered as if it were that model.
    public var model = "sim"
    /// Time to first token for an empty prompt.
    public var ttftMs: Double = 20
    /// Extra time to first token per prompt token (prefill).
    public var prefillMsPerToken: Double = 0.02
    /// Time between output tokens.
    public var itlMs: Double = 5
    /// Sequences generated at once; more requests wait in a FIFO queue.
    public var maxNumSeqs = 64
    /// `/health` answers 503 for this long after start.
    public var startupS: Double = 0
    /// Fraction of requests answered with a 500.
    public var failRate: Double = 0
    /// Relative spread of every delay (0.1 = plus or minus 10%).
    public var jitter: Double = 0.1
    /// Prompt plus output tokens above this are refused with a 400, as vLLM does.
    public var maxModelLen = 32768
    /// Output length when the request names no `max_tokens`.
    public var defaultMaxTokens: Int?
    /// Print this and exit with status 1 shortly after start: a crash-looping engine for tests.
    public var crashOnStart: String?

    /// The devices this replica was given (the launcher passes them), for device-dependent failures.
    public var devices: [String] = []
    /// A stand-in for a broken GPU or a misconfigured engine: on these devices the simulator still answers
    /// `/health` but answers requests wrongly, as `brokenMode` says (`404`: a wrong served model name;
    /// `junk`: a 200 whose body is not a completion; `500`).
    public var brokenDevices: [String] = []
    public var brokenMode = "404"
    /// Requests answered correctly before a broken device starts answering wrongly (so a replica can pass
    /// its readiness probe and then go bad under traffic).
    public var brokenAfterRequests = 0

    /// Whether this replica is on a broken device.
    public var isOnBrokenDevice: Bool { !Set(devices).isDisjoint(with: brokenDevices) }

    public init() {}
}
