import Foundation

/// Turns an OpenAI chat completions event stream into Anthropic Messages events, as bytes arrive in
/// chunks cut anywhere. Feed every upstream chunk, send what comes back, then send what `finish()` returns.
///
/// `message_delta` and `message_stop` wait for `[DONE]` (or `finish()`), because the usage chunk that
/// `include_usage` asks for comes after the one carrying `finish_reason`.
public struct AnthropicStreamTranslator: Sendable {
    /// The model name `message_start` reports: the one the caller asked for, not the engine's.
    public let model: String
    /// The message id `message_start` reports; tests fix it to compare outputs.
    public let messageId: String
    /// True once `message_stop` or an `error` event has been produced; later input is ignored.
    public private(set) var isFinished = false

    private var line: [UInt8] = []
    private var started = false
    private var nextIndex = 0
    private var textIndex: Int?
    private var tool: ToolBlock?
    private var closedTools: Set<Int> = []
    private var usedTools = false
    private var finishReason: String?
    private var stopSequence: String?
    private var inputTokens: Int?
    private var outputTokens: Int?

    /// A tool call being streamed. Its block starts once its name is known; arguments that come
    /// before that wait in `pendingArguments`.
    private struct ToolBlock: Sendable {
        var upstream: Int
        var id: String
        var name: String
        var index: Int?
        var pendingArguments: String
    }

    public init(model: String, messageId: String = AnthropicTranslation.newMessageId()) {
        self.model = model
        self.messageId = messageId
    }

    /// Consumes upstream bytes and returns the Anthropic event bytes they complete (often none).
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        guard !isFinished else { return out }
        let input = Array(bytes)
        var start = 0
        while let newline = input[start...].firstIndex(of: UInt8(ascii: "\n")) {
            line.append(contentsOf: input[start..<newline])
            handleLine(into: &out)
            line.removeAll(keepingCapacity: true)
            if isFinished { return out }
            start = newline + 1
        }
        line.append(contentsOf: input[start...])
        return out
    }

    /// Ends the stream: reads a last line left without its newline, then closes the open block and
    /// the message if `[DONE]` never came. Returns nothing when the stream was already finished.
    public mutating func finish() -> [UInt8] {
        var out: [UInt8] = []
        guard !isFinished else { return out }
        handleLine(into: &out)
        line.removeAll()
        if !isFinished { closeMessage(into: &out) }
        return out
    }

    // MARK: Upstream

    private mutating func handleLine(into out: inout [UInt8]) {
        var payload = line[...]
        if payload.last == UInt8(ascii: "\r") { payload = payload.dropLast() }
        if payload.starts(with: "data:".utf8) {
            payload = payload.dropFirst(5)
            if payload.first == UInt8(ascii: " ") { payload = payload.dropFirst() }
        } else if payload.first != UInt8(ascii: "{") {
            return  // blank separators, comments, `event:`/`id:`/`retry:` fields
        }
        if payload.elementsEqual("[DONE]".utf8) {
            closeMessage(into: &out)
            return
        }
        // A line cut by a dying replica does not parse; the gateway's error event follows it.
        guard let chunk = try? JSONDecoder().decode(StreamChunk.self, from: Data(payload)) else { return }
        handleChunk(chunk, into: &out)
    }

    private mutating func handleChunk(_ chunk: StreamChunk, into out: inout [UInt8]) {
        if let error = chunk.error {
            emit("error", AnthropicTranslation.errorBody(type: error.type, message: error.message), into: &out)
            isFinished = true
            return
        }
        if let tokens = chunk.usage?.promptTokens { inputTokens = tokens }
        if let tokens = chunk.usage?.completionTokens { outputTokens = tokens }
        if !started { startMessage(into: &out) }
        for choice in chunk.choices where (choice.index ?? 0) == 0 {
            if let text = choice.content, !text.isEmpty {
                appendText(text, into: &out)
            }
            for call in choice.toolCalls { appendToolDelta(call, into: &out) }
            if let reason = choice.finishReason {
                closeBlock(into: &out)
                finishReason = reason
                stopSequence = reason == "stop" ? choice.matchedStop : nil
            }
        }
    }

    // MARK: Anthropic events

    private mutating func startMessage(into out: inout [UInt8]) {
        started = true
        emit("message_start", #"{"type":"message_start","message":{"id":"\#(jsonEscape(messageId))","type":"message","role":"assistant","model":"\#(jsonEscape(model))","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":\#(inputTokens ?? 0),"output_tokens":0}}}"#, into: &out)
    }

    private mutating func appendText(_ text: String, into out: inout [UInt8]) {
        if tool != nil { closeBlock(into: &out) }
        let index: Int
        if let open = textIndex {
            index = open
        } else {
            index = nextIndex
            nextIndex += 1
            textIndex = index
            emit("content_block_start", #"{"type":"content_block_start","index":\#(index),"content_block":{"type":"text","text":""}}"#, into: &out)
        }
        emit("content_block_delta", #"{"type":"content_block_delta","index":\#(index),"delta":{"type":"text_delta","text":"\#(jsonEscape(text))"}}"#, into: &out)
    }

    /// One `tool_calls` delta. Calls stream one after another; a fragment for a call whose block is
    /// already closed cannot be sent (Anthropic blocks do not reopen) and is dropped.
    private mutating func appendToolDelta(_ call: StreamChunk.ToolCall, into out: inout [UInt8]) {
        let upstream = call.index ?? tool?.upstream ?? 0
        let id = call.id.flatMap { $0.isEmpty ? nil : $0 }
        let name = call.name ?? ""
        let arguments = call.arguments ?? ""
        if var current = tool, current.upstream == upstream {
            if let index = current.index {
                if !arguments.isEmpty { emitArguments(arguments, index: index, into: &out) }
                return
            }
            current.name += name
            if let id { current.id = id }
            current.pendingArguments += arguments
            tool = current
        } else {
            guard !closedTools.contains(upstream) else { return }
            closeBlock(into: &out)
            usedTools = true
            tool = ToolBlock(upstream: upstream, id: id ?? AnthropicTranslation.newToolUseId(), name: name, index: nil, pendingArguments: arguments)
        }
        if tool?.name.isEmpty == false { startTool(into: &out) }
    }

    private mutating func startTool(into out: inout [UInt8]) {
        guard var current = tool, current.index == nil else { return }
        let index = nextIndex
        nextIndex += 1
        current.index = index
        emit("content_block_start", #"{"type":"content_block_start","index":\#(index),"content_block":{"type":"tool_use","id":"\#(jsonEscape(current.id))","name":"\#(jsonEscape(current.name))","input":{}}}"#, into: &out)
        if !current.pendingArguments.isEmpty { emitArguments(current.pendingArguments, index: index, into: &out) }
        current.pendingArguments = ""
        tool = current
    }

    private mutating func emitArguments(_ json: String, index: Int, into out: inout [UInt8]) {
        emit("content_block_delta", #"{"type":"content_block_delta","index":\#(index),"delta":{"type":"input_json_delta","partial_json":"\#(jsonEscape(json))"}}"#, into: &out)
    }

    private mutating func closeBlock(into out: inout [UInt8]) {
        if let index = textIndex {
            emit("content_block_stop", #"{"type":"content_block_stop","index":\#(index)}"#, into: &out)
            textIndex = nil
        }
        if tool != nil {
            startTool(into: &out)  // a call whose name never came still gets its block
            if let current = tool, let index = current.index {
                emit("content_block_stop", #"{"type":"content_block_stop","index":\#(index)}"#, into: &out)
                closedTools.insert(current.upstream)
            }
            tool = nil
        }
    }

    private mutating func closeMessage(into out: inout [UInt8]) {
        if !started { startMessage(into: &out) }
        closeBlock(into: &out)
        let reason = AnthropicTranslation.stopReason(finishReason: finishReason, usedTools: usedTools, stopSequence: stopSequence)
        let sequence = reason == "stop_sequence" ? "\"\(jsonEscape(stopSequence ?? ""))\"" : "null"
        let input = inputTokens.map { #""input_tokens":\#($0),"# } ?? ""
        emit("message_delta", #"{"type":"message_delta","delta":{"stop_reason":"\#(reason)","stop_sequence":\#(sequence)},"usage":{\#(input)"output_tokens":\#(outputTokens ?? 0)}}"#, into: &out)
        emit("message_stop", #"{"type":"message_stop"}"#, into: &out)
        isFinished = true
    }

    private func emit(_ event: String, _ data: String, into out: inout [UInt8]) {
        out.append(contentsOf: "event: \(event)\ndata: \(data)\n\n".utf8)
    }
}

/// The parts of an OpenAI stream chunk the translation reads. Decoded leniently, field by field: a field of
/// an unexpected type reads as absent instead of losing the chunk; and 5x faster than going through `JSONValue`.
private struct StreamChunk: Decodable {
    struct Choice: Decodable {
        var index: Int?
        var content: String?
        var toolCalls: [ToolCall] = []
        var finishReason: String?
        /// vLLM's `stop_reason` or SGLang's `matched_stop` when it is a string: the stop sequence matched.
        var matchedStop: String?

        private enum Key: String, CodingKey { case index, delta, content, tool_calls, finish_reason, stop_reason, matched_stop }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Key.self)
            index = try? c.decodeIfPresent(Int.self, forKey: .index)
            finishReason = try? c.decodeIfPresent(String.self, forKey: .finish_reason)
            matchedStop = (try? c.decodeIfPresent(String.self, forKey: .stop_reason)) ?? (try? c.decodeIfPresent(String.self, forKey: .matched_stop))
            guard let delta = try? c.nestedContainer(keyedBy: Key.self, forKey: .delta) else { return }
            content = try? delta.decodeIfPresent(String.self, forKey: .content)
            toolCalls = ((try? delta.decodeIfPresent([ToolCall].self, forKey: .tool_calls)) ?? nil) ?? []
        }
    }

    struct ToolCall: Decodable {
        var index: Int?
        var id: String?
        var name: String?
        var arguments: String?

        private enum Key: String, CodingKey { case index, id, function, name, arguments }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Key.self)
            index = try? c.decodeIfPresent(Int.self, forKey: .index)
            id = try? c.decodeIfPresent(String.self, forKey: .id)
            guard let function = try? c.nestedContainer(keyedBy: Key.self, forKey: .function) else { return }
            name = try? function.decodeIfPresent(String.self, forKey: .name)
            arguments = try? function.decodeIfPresent(String.self, forKey: .arguments)
        }
    }

    struct Usage: Decodable {
        var promptTokens: Int?
        var completionTokens: Int?

        private enum Key: String, CodingKey { case prompt_tokens, completion_tokens }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Key.self)
            promptTokens = try? c.decodeIfPresent(Int.self, forKey: .prompt_tokens)
            completionTokens = try? c.decodeIfPresent(Int.self, forKey: .completion_tokens)
        }
    }

    var choices: [Choice] = []
    var usage: Usage?
    /// The error of an OpenAI-shaped error event (`{"error": {...}}`, or vLLM's `{"object": "error", ...}`).
    var error: (type: String, message: String)?

    private enum Key: String, CodingKey { case choices, usage, error, object }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        if let value = try? c.decodeIfPresent(JSONValue.self, forKey: .error), value != .null {
            error = Self.describe(value)
        } else if (try? c.decodeIfPresent(String.self, forKey: .object)) == "error" {
            error = Self.describe(try JSONValue(from: decoder))
        }
        choices = ((try? c.decodeIfPresent([Choice].self, forKey: .choices)) ?? nil) ?? []
        usage = (try? c.decodeIfPresent(Usage.self, forKey: .usage)) ?? nil
    }

    private static func describe(_ error: JSONValue) -> (type: String, message: String) {
        let message = error.stringValue ?? error["message"]?.stringValue ?? "The model server reported an error."
        let type = error["type"]?.stringValue == "invalid_request_error" ? "invalid_request_error" : "api_error"
        return (type, message)
    }
}
