import Foundation

extension AnthropicTranslation {
    /// The largest `max_tokens` accepted; more is a mistake, not a request any engine here can serve.
    public static let maxTokensLimit = 1_000_000

    /// Translates an Anthropic Messages request into an OpenAI chat completions request for `model`.
    /// Returns the body and whether the caller asked for a stream; throws on anything Anthropic would reject.
    public static func chatRequest(fromMessages body: Data, model: String) throws(AnthropicRequestError) -> (body: Data, stream: Bool) {
        guard let root = parse(body) else {
            throw AnthropicRequestError("We could not parse the JSON body of your request.")
        }
        guard case .object(let request) = root else {
            throw AnthropicRequestError("The request body must be a JSON object.")
        }
        var out: [String: JSONValue] = ["model": .string(model)]

        guard let maxTokens = present(request["max_tokens"]) else {
            throw AnthropicRequestError("max_tokens: Field required", param: "max_tokens")
        }
        guard let tokens = maxTokens.intValue, (1...maxTokensLimit).contains(tokens) else {
            throw AnthropicRequestError("max_tokens: must be an integer from 1 to \(maxTokensLimit)", param: "max_tokens")
        }
        out["max_tokens"] = .number(Double(tokens))

        var messages: [JSONValue] = []
        if let system = present(request["system"]) {
            let text = try systemText(system)
            if !text.isEmpty { messages.append(.object(["role": .string("system"), "content": .string(text)])) }
        }
        guard let input = present(request["messages"]) else {
            throw AnthropicRequestError("messages: Field required", param: "messages")
        }
        guard case .array(let turns) = input, !turns.isEmpty else {
            throw AnthropicRequestError("messages: must be a non-empty array", param: "messages")
        }
        for (i, turn) in turns.enumerated() {
            try appendMessage(turn, path: "messages[\(i)]", to: &messages)
        }
        out["messages"] = .array(messages)

        if let stop = present(request["stop_sequences"]) {
            guard case .array(let items) = stop else {
                throw AnthropicRequestError("stop_sequences: must be an array of strings", param: "stop_sequences")
            }
            for item in items where item.stringValue == nil {
                throw AnthropicRequestError("stop_sequences: must be an array of strings", param: "stop_sequences")
            }
            if !items.isEmpty { out["stop"] = stop }
        }
        for key in ["temperature", "top_p"] {
            guard let value = present(request[key]) else { continue }
            guard value.doubleValue != nil else { throw AnthropicRequestError("\(key): must be a number", param: key) }
            out[key] = value
        }
        if let topK = present(request["top_k"]) {
            guard topK.intValue != nil else { throw AnthropicRequestError("top_k: must be an integer", param: "top_k") }
            out["top_k"] = topK
        }
        var stream = false
        if let value = present(request["stream"]) {
            guard let flag = value.boolValue else { throw AnthropicRequestError("stream: must be a boolean", param: "stream") }
            stream = flag
        }
        if stream {
            // Usage at the end for message_delta; vLLM's continuous_usage_stats also puts the prompt's token
            // count in the first chunk, in time for message_start (other engines ignore the field).
            out["stream"] = .bool(true)
            out["stream_options"] = .object(["include_usage": .bool(true), "continuous_usage_stats": .bool(true)])
        }
        if let tools = present(request["tools"]) {
            out["tools"] = try translateTools(tools)
        }
        if let choice = present(request["tool_choice"]) {
            try translateToolChoice(choice, into: &out)
        }
        return (serialize(.object(out)), stream)
    }

    /// A field's value, treating `null` as absent, as Anthropic does for optional fields.
    private static func present(_ value: JSONValue?) -> JSONValue? {
        if let value, value != .null { return value }
        return nil
    }

    /// `system` is a string or an array of text blocks; blocks are joined by newlines.
    private static func systemText(_ system: JSONValue) throws(AnthropicRequestError) -> String {
        if let text = system.stringValue { return text }
        guard case .array(let blocks) = system else {
            throw AnthropicRequestError("system: must be a string or an array of text blocks", param: "system")
        }
        var parts: [String] = []
        for (i, block) in blocks.enumerated() {
            guard block["type"]?.stringValue == "text", let text = block["text"]?.stringValue else {
                throw AnthropicRequestError("system[\(i)]: only text blocks are supported in system", param: "system[\(i)]")
            }
            parts.append(text)
        }
        return parts.joined(separator: "\n")
    }

    private static func appendMessage(_ turn: JSONValue, path: String, to messages: inout [JSONValue]) throws(AnthropicRequestError) {
        guard case .object = turn else { throw AnthropicRequestError("\(path): must be an object", param: path) }
        guard let role = turn["role"]?.stringValue, role == "user" || role == "assistant" else {
            throw AnthropicRequestError("\(path).role: must be \"user\" or \"assistant\"", param: "\(path).role")
        }
        guard let content = turn["content"] else {
            throw AnthropicRequestError("\(path).content: Field required", param: "\(path).content")
        }
        if let text = content.stringValue {
            messages.append(.object(["role": .string(role), "content": .string(text)]))
            return
        }
        guard case .array(let blocks) = content else {
            throw AnthropicRequestError("\(path).content: must be a string or an array of content blocks", param: "\(path).content")
        }
        if role == "user" {
            try appendUser(blocks, path: path, to: &messages)
        } else {
            messages.append(try assistantMessage(blocks, path: path))
        }
    }

    /// A user turn: tool results become `tool` messages (Anthropic puts them first in the turn, OpenAI
    /// wants them right after the assistant's calls), the rest one user message.
    private static func appendUser(_ blocks: [JSONValue], path: String, to messages: inout [JSONValue]) throws(AnthropicRequestError) {
        var parts: [JSONValue] = []
        var toolResults: [JSONValue] = []
        for (j, block) in blocks.enumerated() {
            let at = "\(path).content[\(j)]"
            switch block["type"]?.stringValue {
            case "text":
                guard let text = block["text"]?.stringValue else {
                    throw AnthropicRequestError("\(at).text: must be a string", param: "\(at).text")
                }
                parts.append(.object(["type": .string("text"), "text": .string(text)]))
            case "image":
                parts.append(try imagePart(block, path: at))
            case "tool_result":
                guard let id = block["tool_use_id"]?.stringValue, !id.isEmpty else {
                    throw AnthropicRequestError("\(at).tool_use_id: Field required", param: "\(at).tool_use_id")
                }
                let text = try toolResultText(block["content"], path: "\(at).content")
                toolResults.append(.object(["role": .string("tool"), "tool_call_id": .string(id), "content": .string(text)]))
            default:
                throw unsupportedBlock(block, path: at, role: "user")
            }
        }
        messages.append(contentsOf: toolResults)
        if parts.isEmpty {
            if toolResults.isEmpty { messages.append(.object(["role": .string("user"), "content": .string("")])) }
            return
        }
        if parts.count == 1, let text = parts[0]["text"]?.stringValue {
            messages.append(.object(["role": .string("user"), "content": .string(text)]))
        } else {
            messages.append(.object(["role": .string("user"), "content": .array(parts)]))
        }
    }

    /// An assistant turn: text blocks joined into `content`, `tool_use` blocks into `tool_calls` with
    /// JSON-string arguments. Thinking blocks are dropped: engines here cannot take them back.
    private static func assistantMessage(_ blocks: [JSONValue], path: String) throws(AnthropicRequestError) -> JSONValue {
        var text = ""
        var calls: [JSONValue] = []
        for (j, block) in blocks.enumerated() {
            let at = "\(path).content[\(j)]"
            switch block["type"]?.stringValue {
            case "text":
                guard let piece = block["text"]?.stringValue else {
                    throw AnthropicRequestError("\(at).text: must be a string", param: "\(at).text")
                }
                text += piece
            case "tool_use":
                guard let id = block["id"]?.stringValue, !id.isEmpty else {
                    throw AnthropicRequestError("\(at).id: Field required", param: "\(at).id")
                }
                guard let name = block["name"]?.stringValue, !name.isEmpty else {
                    throw AnthropicRequestError("\(at).name: Field required", param: "\(at).name")
                }
                let input = present(block["input"]) ?? .object([:])
                guard case .object = input else {
                    throw AnthropicRequestError("\(at).input: must be an object", param: "\(at).input")
                }
                calls.append(.object([
                    "id": .string(id),
                    "type": .string("function"),
                    "function": .object(["name": .string(name), "arguments": .string(serializedString(input))]),
                ]))
            case "thinking", "redacted_thinking":
                continue
            default:
                throw unsupportedBlock(block, path: at, role: "assistant")
            }
        }
        var message: [String: JSONValue] = ["role": .string("assistant")]
        message["content"] = text.isEmpty && !calls.isEmpty ? .null : .string(text)
        if !calls.isEmpty { message["tool_calls"] = .array(calls) }
        return .object(message)
    }

    private static func unsupportedBlock(_ block: JSONValue, path: String, role: String) -> AnthropicRequestError {
        guard let type = block["type"]?.stringValue else {
            return AnthropicRequestError("\(path).type: Field required", param: "\(path).type")
        }
        return AnthropicRequestError("\(path).type: content blocks of type \"\(type)\" are not supported in \(role) messages here", param: "\(path).type")
    }

    /// An image block as an OpenAI `image_url` part: base64 sources become data URLs, URL sources pass through.
    private static func imagePart(_ block: JSONValue, path: String) throws(AnthropicRequestError) -> JSONValue {
        let source = block["source"]
        let url: String
        switch source?["type"]?.stringValue {
        case "base64":
            guard let mediaType = source?["media_type"]?.stringValue, !mediaType.isEmpty,
                let data = source?["data"]?.stringValue, !data.isEmpty
            else {
                throw AnthropicRequestError("\(path).source: a base64 image needs media_type and data", param: "\(path).source")
            }
            url = "data:\(mediaType);base64,\(data)"
        case "url":
            guard let link = source?["url"]?.stringValue, !link.isEmpty else {
                throw AnthropicRequestError("\(path).source.url: Field required", param: "\(path).source.url")
            }
            url = link
        default:
            throw AnthropicRequestError("\(path).source.type: image sources must be \"base64\" or \"url\"", param: "\(path).source.type")
        }
        return .object(["type": .string("image_url"), "image_url": .object(["url": .string(url)])])
    }

    /// A tool result's content, a string or text blocks (joined by newlines): OpenAI tool messages carry text.
    private static func toolResultText(_ content: JSONValue?, path: String) throws(AnthropicRequestError) -> String {
        guard let content = present(content) else { return "" }
        if let text = content.stringValue { return text }
        guard case .array(let blocks) = content else {
            throw AnthropicRequestError("\(path): must be a string or an array of text blocks", param: path)
        }
        var parts: [String] = []
        for (k, block) in blocks.enumerated() {
            guard block["type"]?.stringValue == "text", let text = block["text"]?.stringValue else {
                throw AnthropicRequestError("\(path)[\(k)]: only text blocks are supported in tool results here", param: "\(path)[\(k)]")
            }
            parts.append(text)
        }
        return parts.joined(separator: "\n")
    }

    private static func translateTools(_ tools: JSONValue) throws(AnthropicRequestError) -> JSONValue {
        guard case .array(let items) = tools else {
            throw AnthropicRequestError("tools: must be an array", param: "tools")
        }
        var out: [JSONValue] = []
        for (i, tool) in items.enumerated() {
            let at = "tools[\(i)]"
            guard case .object = tool else { throw AnthropicRequestError("\(at): must be an object", param: at) }
            if let type = tool["type"]?.stringValue, type != "custom" {
                throw AnthropicRequestError("\(at).type: server tools such as \"\(type)\" are not supported here; define a custom tool with input_schema", param: "\(at).type")
            }
            guard let name = tool["name"]?.stringValue, !name.isEmpty else {
                throw AnthropicRequestError("\(at).name: Field required", param: "\(at).name")
            }
            guard let schema = tool["input_schema"], case .object = schema else {
                throw AnthropicRequestError("\(at).input_schema: must be a JSON Schema object", param: "\(at).input_schema")
            }
            var function: [String: JSONValue] = ["name": .string(name), "parameters": schema]
            if let description = present(tool["description"]) {
                guard description.stringValue != nil else {
                    throw AnthropicRequestError("\(at).description: must be a string", param: "\(at).description")
                }
                function["description"] = description
            }
            out.append(.object(["type": .string("function"), "function": .object(function)]))
        }
        return .array(out)
    }

    /// `auto`/`any`/`tool`/`none` become `auto`/`required`/a named function/`none`;
    /// `disable_parallel_tool_use` becomes `parallel_tool_calls: false`.
    private static func translateToolChoice(_ choice: JSONValue, into out: inout [String: JSONValue]) throws(AnthropicRequestError) {
        switch choice["type"]?.stringValue {
        case "auto": out["tool_choice"] = .string("auto")
        case "any": out["tool_choice"] = .string("required")
        case "none": out["tool_choice"] = .string("none")
        case "tool":
            guard let name = choice["name"]?.stringValue, !name.isEmpty else {
                throw AnthropicRequestError("tool_choice.name: Field required", param: "tool_choice.name")
            }
            out["tool_choice"] = .object(["type": .string("function"), "function": .object(["name": .string(name)])])
        default:
            throw AnthropicRequestError("tool_choice.type: must be one of \"auto\", \"any\", \"tool\", \"none\"", param: "tool_choice.type")
        }
        if choice["disable_parallel_tool_use"]?.boolValue == true {
            out["parallel_tool_calls"] = .bool(false)
        }
    }
}
