import Foundation

/// Translates Anthropic's Messages API to and from OpenAI chat completions, so `/anthropic/v1/messages`
/// can be served by engines that only speak chat completions. Pure functions over bytes; no I/O.
public enum AnthropicTranslation {
    /// `{"type":"error","error":{"type":…,"message":…}}`: the body of every Anthropic error response,
    /// and the data of a stream's `error` event.
    public static func errorBody(type: String, message: String) -> String {
        #"{"type":"error","error":{"type":"\#(jsonEscape(type))","message":"\#(jsonEscape(message))"}}"#
    }

    /// The Anthropic error type for an HTTP status, so errors the gateway raises in HTTP terms read as
    /// Anthropic's own would.
    public static func errorType(forStatus status: Int) -> String {
        switch status {
        case 400: "invalid_request_error"
        case 401: "authentication_error"
        case 403: "permission_error"
        case 404: "not_found_error"
        case 413: "request_too_large"
        case 429: "rate_limit_error"
        case 503, 529: "overloaded_error"
        case 400...499: "invalid_request_error"
        default: "api_error"
        }
    }

    /// A fresh message id, `msg_` and 24 random letters and digits, as Anthropic's look.
    public static func newMessageId() -> String { "msg_" + randomAlphanumeric(24) }

    static func newToolUseId() -> String { "toolu_" + randomAlphanumeric(24) }

    static func randomAlphanumeric(_ count: Int) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8)
        var generator = SystemRandomNumberGenerator()
        var out: [UInt8] = []
        out.reserveCapacity(count)
        for _ in 0..<count { out.append(alphabet[Int(generator.next(upperBound: UInt64(alphabet.count)))]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// Anthropic's `stop_reason` for an OpenAI `finish_reason`. Engines that call tools often still say
    /// `stop`, so tool calls in the answer make it `tool_use`; a known stop sequence makes it `stop_sequence`.
    static func stopReason(finishReason: String?, usedTools: Bool, stopSequence: String?) -> String {
        switch finishReason {
        case "length": return "max_tokens"
        case "tool_calls", "function_call": return "tool_use"
        case "content_filter": return "refusal"
        default:
            if stopSequence != nil { return "stop_sequence" }
            return usedTools ? "tool_use" : "end_turn"
        }
    }

    /// The stop string an engine reports having matched: vLLM's `stop_reason` or SGLang's `matched_stop`
    /// (both are token ids, not strings, when generation stopped on a stop token).
    static func matchedStop(in choice: JSONValue) -> String? {
        choice["stop_reason"]?.stringValue ?? choice["matched_stop"]?.stringValue
    }

    static func parse(_ data: Data) -> JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: data)
    }

    static func serialize(_ value: JSONValue) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(value)) ?? Data("null".utf8)
    }

    static func serializedString(_ value: JSONValue) -> String {
        String(decoding: serialize(value), as: UTF8.self)
    }
}

/// Why an Anthropic Messages request cannot be translated; answered as a 400 `invalid_request_error`.
public struct AnthropicRequestError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What is wrong, in Anthropic's wording style (`field: problem`), shown to the caller as is.
    public var message: String
    /// The offending field, as a path such as `messages[1].content[0].type`.
    public var param: String?

    public init(_ message: String, param: String? = nil) {
        self.message = message
        self.param = param
    }

    public var description: String { message }
}
