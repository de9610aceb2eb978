import Foundation
import InferenceCore

/// One replica run's health as the fleet judges it, as a state machine: events in (a `/health` check, a
/// real-request probe's answer, the gateway's suspicion), actions out (probe with a real request, record the
/// check, take the replica into or out of routing, kill it). No I/O and no clock of its own: the time comes
/// with each event. The controller's health pass feeds it and carries out what it says; tests drive it with
/// recorded sequences, an hour of a replica's life in microseconds.
public struct ReplicaHealth: Sendable, Equatable {
    /// What the machine judges against: the replica's profile and the fleet's configuration.
    public struct Limits: Sendable, Equatable {
        /// A run not healthy this long after it began is killed.
        public var readyTimeout: TimeInterval
        /// A replica that served and then stopped answering this long is killed.
        public var unhealthyRestartAfter: TimeInterval
        /// Real requests answered wrongly in a row that kill a replica.
        public var maxWrongAnswers: Int

        public init(readyTimeout: TimeInterval, unhealthyRestartAfter: TimeInterval, maxWrongAnswers: Int) {
            self.readyTimeout = readyTimeout
            self.unhealthyRestartAfter = unhealthyRestartAfter
            self.maxWrongAnswers = maxWrongAnswers
        }
    }

    public enum Event: Sendable, Equatable {
        /// The run began (its launch, or the end of a cluster's queue): the ready timeout counts from here.
        case runStarted(at: Date)
        /// `/health` answered (or not) at this time.
        case checked(healthy: Bool, at: Date)
        /// The real-request probe came back.
        case answered(AnswerCheck)
        /// The gateway saw the replica answer wrongly, or not at all.
        case suspected(reason: String)
        /// The kill the machine asked for was not carried out (this instance no longer leads): judge afresh.
        case killNotCarriedOut
    }

    public enum Action: Sendable, Equatable {
        /// Send one real tiny request; its answer comes back as `.answered`.
        case probeAnswer
        /// Store the check: healthy or not, at this time (a healthy replica is `running`, its crash count reset).
        case record(healthy: Bool, at: Date)
        /// It entered routing, this long after its run began.
        case becameHealthy(after: TimeInterval)
        /// It is out of routing (left, or not in yet): its deployment's status and route need a look.
        case notServing
        /// Check it again now rather than at the next interval.
        case checkAgain
        /// An answer it got wrong, below the limit: its fail reason says so.
        case answeredWrongly(reason: String)
        /// A probe proved nothing (a slow engine): `/health` is trusted, and why.
        case trustedWithoutAnswer(reason: String)
        /// Kill it; its exit counts as a crash with this reason.
        case kill(reason: String)
    }

    /// In routing: `/health` answers, a real request was answered right, and not two wrongly since.
    public private(set) var healthy: Bool
    /// Since when it has failed its checks (nil while healthy).
    public private(set) var unhealthySince: Date?
    /// A real tiny request was answered right (or a probe proved nothing wrong).
    public private(set) var answerVerified: Bool
    public private(set) var wrongAnswers = 0
    /// A real-request probe is in flight.
    public private(set) var probing = false
    /// Why the gateway suspects it: probed at the next check.
    public private(set) var suspicion: String?
    /// Why the machine asked for it to be killed; its exit then counts as a crash with this reason.
    public private(set) var killReason: String?
    public private(set) var startedAt: Date
    /// It was healthy during this run: a failing check then means it stopped answering, not that it is not
    /// ready yet.
    public private(set) var hasServed: Bool

    /// A new run, not yet checked.
    public init(startedAt: Date) {
        self.startedAt = startedAt
        healthy = false
        answerVerified = false
        hasServed = false
    }

    /// A run re-adopted after a server restart, as the store last saw it.
    public init(adoptedAt startedAt: Date, healthy: Bool, hasServed: Bool) {
        self.startedAt = startedAt
        self.healthy = healthy
        answerVerified = healthy
        self.hasServed = hasServed
    }

    public mutating func handle(_ event: Event, limits: Limits) -> [Action] {
        switch event {
        case .runStarted(let at):
            startedAt = at
            return []
        case .checked(let answered, let now):
            return checked(answered, now: now, limits: limits)
        case .answered(let result):
            return answered(result, limits: limits)
        case .suspected(let reason):
            guard killReason == nil else { return [] }
            suspicion = reason
            return [.checkAgain]
        case .killNotCarriedOut:
            killReason = nil
            return []
        }
    }

    private mutating func checked(_ answered: Bool, now: Date, limits: Limits) -> [Action] {
        var actions: [Action] = []
        if answered, !probing, !answerVerified || suspicion != nil {
            probing = true
            actions.append(.probeAnswer)
        }
        // Out of routing until a real request is answered right (a second wrong answer for one that was serving).
        let nowHealthy = answered && answerVerified && wrongAnswers < 2
        let became = nowHealthy && !healthy
        healthy = nowHealthy
        unhealthySince = nowHealthy ? nil : (unhealthySince ?? now)
        if nowHealthy { hasServed = true }
        actions.append(.record(healthy: nowHealthy, at: now))
        if became {
            actions.append(.becameHealthy(after: now.timeIntervalSince(startedAt)))
        } else if !nowHealthy {
            actions.append(.notServing)
            if killReason == nil, let reason = stuckReason(now: now, limits: limits) {
                killReason = reason
                suspicion = nil
                actions.append(.kill(reason: reason))
            }
        }
        return actions
    }

    private mutating func answered(_ result: AnswerCheck, limits: Limits) -> [Action] {
        probing = false
        guard killReason == nil else { return [] }
        switch result {
        case .ok:
            answerVerified = true
            wrongAnswers = 0
            suspicion = nil
            return [.checkAgain]
        case .inconclusive(let why):
            suspicion = nil
            guard !answerVerified else { return [.checkAgain] }
            answerVerified = true
            return [.trustedWithoutAnswer(reason: why), .checkAgain]
        case .wrong(let why):
            wrongAnswers += 1
            var actions: [Action] = [.answeredWrongly(reason: "answers requests wrongly: \(why)")]
            if wrongAnswers >= limits.maxWrongAnswers {
                let reason = "answered \(wrongAnswers) real requests in a row wrongly (\(why))"
                killReason = reason
                suspicion = nil
                actions.append(.kill(reason: reason))
            } else {
                actions.append(.checkAgain)
            }
            return actions
        }
    }

    /// Why it should be killed now, or nil to give it more time: not healthy within the ready timeout, or
    /// served and then stopped answering for `unhealthyRestartAfter`.
    private func stuckReason(now: Date, limits: Limits) -> String? {
        FleetDecisions.stuckReason(
            status: hasServed ? .running : .initingDockerContainer, startedAt: startedAt, unhealthySince: unhealthySince, now: now,
            readyTimeout: limits.readyTimeout, unhealthyRestartAfter: limits.unhealthyRestartAfter)
    }
}
