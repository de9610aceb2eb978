/// What an engine says about its own load on its Prometheus `/metrics` page: requests queued (admitted by
/// the server but not yet scheduled), requests running, and how full its KV cache is. The autoscaler reads
/// queueing as a leading signal: a queue that grows is demand the arrival rate has not shown yet.
public struct EngineLoad: Sendable, Equatable {
    public var waiting: Int
    public var running: Int
    /// KV-cache use, 0 to 1, where the engine reports it.
    public var kvCacheUsage: Double?

    public init(waiting: Int, running: Int, kvCacheUsage: Double? = nil) {
        self.waiting = waiting
        self.running = running
        self.kvCacheUsage = kvCacheUsage
    }

    /// Reads the load from Prometheus text in the names vLLM (and the simulator) and llama.cpp (`--metrics`)
    /// use. Series with several label sets are summed (KV-cache use takes the highest). Nil when the page
    /// names neither a queue nor running requests: that engine does not say.
    public static func parse(prometheusText text: Substring) -> EngineLoad? {
        var waiting: Double?
        var running: Double?
        var kvCache: Double?
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) where line.first != "#" {
            let name = line.prefix { $0 != "{" && $0 != " " }
            guard let kind = Self.series[name], let value = Self.sampleValue(line), value.isFinite, value >= 0 else { continue }
            switch kind {
            case .waiting: waiting = (waiting ?? 0) + value
            case .running: running = (running ?? 0) + value
            case .kvCache: kvCache = max(kvCache ?? 0, min(1, value))
            case .kvCachePercent: kvCache = max(kvCache ?? 0, min(1, value / 100))
            }
        }
        guard waiting != nil || running != nil else { return nil }
        // Bounded before converting: a replica's page is not trusted to hold sane numbers.
        let bound = { (v: Double?) in Int(min(v ?? 0, 1_000_000)) }
        return EngineLoad(waiting: bound(waiting), running: bound(running), kvCacheUsage: kvCache)
    }

    private enum Kind { case waiting, running, kvCache, kvCachePercent }

    private static let series: [Substring: Kind] = [
        "vllm:num_requests_waiting": .waiting,
        "vllm:num_requests_running": .running,
        "vllm:gpu_cache_usage_perc": .kvCache,  // a fraction despite its name
        "vllm:kv_cache_usage_perc": .kvCache,
        "llamacpp:requests_deferred": .waiting,
        "llamacpp:requests_processing": .running,
        "llamacpp:kv_cache_usage_ratio": .kvCache,
        "sglang:num_queue_reqs": .waiting,
        "sglang:num_running_reqs": .running,
        "sglang:token_usage": .kvCache,
    ]

    /// The value of one sample line: the first field after the name and labels (a timestamp may follow).
    private static func sampleValue(_ line: Substring) -> Double? {
        var rest = line[...]
        if let close = rest.lastIndex(of: "}") { rest = rest[rest.index(after: close)...] } else { rest = rest.drop { $0 != " " } }
        guard let field = rest.split(separator: " ", omittingEmptySubsequences: true).first else { return nil }
        return Double(field)
    }
}

extension EngineLoad {
    /// The sum over several replicas of one deployment.
    public static func total(_ loads: some Sequence<EngineLoad>) -> EngineLoad? {
        var out: EngineLoad?
        for load in loads {
            var sum = out ?? EngineLoad(waiting: 0, running: 0)
            sum.waiting = saturatingAdd(sum.waiting, load.waiting)
            sum.running = saturatingAdd(sum.running, load.running)
            if let kv = load.kvCacheUsage { sum.kvCacheUsage = max(sum.kvCacheUsage ?? 0, kv) }
            out = sum
        }
        return out
    }
}
