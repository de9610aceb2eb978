import Synchronization

/// Counters and histograms under vLLM's metric names, rendered in Prometheus text format.
final class SimMetrics: Sendable {
    struct Histogram {
        let buckets: [Double]
        var counts: [Int]
        var sum = 0.0
        var count = 0

        init(_ buckets: [Double]) {
            self.buckets = buckets
            self.counts = Array(repeating: 0, count: buckets.count)
        }

        mutating func observe(_ v: Double) {
            for (i, b) in buckets.enumerated() where v <= b { counts[i] += 1 }
            sum += v
            count += 1
        }
    }

    struct State {
        var promptTokens = 0
        var generationTokens = 0
        var success = 0
        var failures = 0
        var ttft = Histogram([0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80])
        var itl = Histogram([0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5])
        var e2e = Histogram([0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120])
    }

    let state = Mutex(State())

    func render(model: String, running: Int, waiting: Int) -> String {
        let s = state.withLock { $0 }
        let label = "model_name=\"\(model)\""
        var out = ""
        func line(_ name: String, _ type: String, _ value: String) {
            out += "# TYPE \(name) \(type)\n\(name){\(label)} \(value)\n"
        }
        func histogram(_ name: String, _ h: Histogram) {
            out += "# TYPE \(name) histogram\n"
            for (b, c) in zip(h.buckets, h.counts) { out += "\(name)_bucket{\(label),le=\"\(b)\"} \(c)\n" }
            out += "\(name)_bucket{\(label),le=\"+Inf\"} \(h.count)\n\(name)_sum{\(label)} \(h.sum)\n\(name)_count{\(label)} \(h.count)\n"
        }
        line("vllm:num_requests_running", "gauge", "\(running)")
        line("vllm:num_requests_waiting", "gauge", "\(waiting)")
        line("vllm:prompt_tokens_total", "counter", "\(s.promptTokens)")
        line("vllm:generation_tokens_total", "counter", "\(s.generationTokens)")
        line("vllm:request_success_total", "counter", "\(s.success)")
        line("lyceum_sim:request_failures_total", "counter", "\(s.failures)")
        histogram("vllm:time_to_first_token_seconds", s.ttft)
        histogram("vllm:inter_token_latency_seconds", s.itl)
        histogram("vllm:e2e_request_latency_seconds", s.e2e)
        return out
    }
}
