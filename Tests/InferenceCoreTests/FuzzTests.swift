import Foundation
import PropertyBased
import Testing
@testable import InferenceCore

/// Bounded property-based fuzzing of what tenants control: no input traps, and what is accepted is within bounds.
@Suite("Fuzzed create bodies and scaling inputs")
struct FuzzTests {
    static let profiles = [
        HardwareProfile(name: "sim.h100", engine: .sim, gpuType: "h100", gpuCount: 1, pricePerHour: "2.50", devices: ["a"], readyTimeoutS: 60, catalogue: ["m/x"])
    ]

    /// Numbers a hostile tenant would send: extremes, tiny, negative, fractions, huge integers.
    static let numbers: [String] = [
        "0", "-0", "1", "-1", "1e-300", "-1e-300", "1e300", "1e308", "-1e308", "0.0001", "0.001", "1000000", "1000001",
        "3600000", "3600001", "9223372036854775807", "9223372036854775808", "18446744073709551616", "1e15", "1.5", "64", "65",
        "100000000000000", "\"10\"", "true", "null", "[]", "{}",
    ]

    @Test("any create body is accepted within bounds or refused with a 422, never a trap")
    func createBodies() async {
        let fields = ["target_rps", "target_latency_p95_ms", "stabilisation_window", "min_replicas", "max_replicas", "gpu_count"]
        await propertyCheck(count: 2000, input: Gen.int(in: 0..<Self.numbers.count).array(of: fields.count), Gen.bool) { picks, named in
            var parts = [#""hf_model_id":"m/x""#]
            if named { parts.append(#""hardware_profile":"sim.h100""#) } else { parts.append(#""gpu_type":"h100""#) }
            for (field, pick) in zip(fields, picks) { parts.append("\"\(field)\":\(Self.numbers[pick])") }
            let body = Data(("{" + parts.joined(separator: ",") + "}").utf8)
            do {
                let spec = try DeploymentSpec.validate(body: body, profiles: Self.profiles)
                #expect(CreateLimits.targetRps.contains(spec.targetRps))
                #expect(CreateLimits.targetLatencyP95Ms.contains(spec.targetLatencyP95Ms))
                #expect(CreateLimits.stabilisationWindow.contains(spec.stabilisationWindow))
                #expect((1...64).contains(spec.minReplicas) && (spec.minReplicas...64).contains(spec.maxReplicas))
            } catch let error as ValidationFailure {
                #expect(!error.issues.isEmpty)
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
    }

    @Test("the scaling policy never traps, whatever the signals, and stays within min and max")
    func scalingExtremes() async {
        let doubles = Gen.oneOf(
            Gen.double(in: -1e300...1e300), Gen.always(Double.infinity), Gen.always(-Double.infinity), Gen.always(Double.nan),
            Gen.always(1e-300), Gen.always(0), Gen.double(in: 0...1e6))
        let ints = Gen.oneOf(Gen.int(in: -1_000_000...1_000_000), Gen.always(Int.max), Gen.always(Int.min), Gen.always(0))
        await propertyCheck(count: 3000, input: doubles, doubles, doubles, ints, ints, Gen.int(in: 1...64)) { rps, target, p95, ready, starting, maxReplicas in
            let input = ScalingInput(
                requestsPerSecond: rps, burstRequestsPerSecond: rps * 2, inBurst: true, p95Ms: p95, inFlight: 1, ready: ready, starting: starting,
                minReplicas: 1, maxReplicas: maxReplicas, targetRps: target, targetLatencyP95Ms: 1500)
            let r = recommendReplicas(input)
            #expect(r.replicas >= 0 && r.replicas <= maxReplicas)
        }
    }
}
