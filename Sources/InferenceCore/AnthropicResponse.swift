import Foundation

extension AnthropicTranslation {
    /// Translates a non-streaming OpenAI chat completion into an Anthropic message answering as `model`;
    /// nil when the body is not a chat completion. `stopSequenceHit` names the stop sequence that ended
    /// the answer when the caller knows it (vLLM's and SGLang's own reports are read otherwise).
    public static func messageResponse(fromChat body: Data, model: String, stopSequenceHit: String? = nil) -> Data? {
        guard let root = parse(body), case .array(let choices)? = root["choices"],
            let choice = choices.first, case .object = choice
        else { return nil }
        let message = choice["message"]
        var content: [JSONValue] = []
        let text = messageText(message?["content"])
        if !text.isEmpty {
            content.append(.object(["type": .string("text"), "text": .string(text)]))
        }
        if case .array(let calls)? = message?["tool_calls"] {
            for call in calls {
                let function = call["function"]
                content.append(.object([
                    "type": .string("tool_use"),
                    "id": .string(call["id"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 } ?? newToolUseId()),
                    "name": .string(function?["name"]?.stringValue ?? ""),
                    "input": toolInput(function?["arguments"]),
                ]))
            }
        }
        let usedTools = content.contains { $0["type"]?.stringValue == "tool_use" }
        let finishReason = choice["finish_reason"]?.stringValue
        let stopSequence = finishReason == "stop" ? (stopSequenceHit ?? matchedStop(in: choice)) : nil
        let stopReason = stopReason(finishReason: finishReason, usedTools: usedTools, stopSequence: stopSequence)
        let usage = root["usage"]
        let answer: JSONValue = .object([
            "id": .string(newMessageId()),
            "type": .string("message"),
            "role": .string("assistant"),
            "model": .string(model),
            "content": .array(content),
            "stop_reason": .string(stopReason),
            "stop_sequence": stopReason == "stop_sequence" ? .string(stopSequence ?? "") : .null,
            "usage": .object([
                "input_tokens": .number(Double(usage?["prompt_tokens"]?.intValue ?? 0)),
                "output_tokens": .number(Double(usage?["completion_tokens"]?.intValue ?? 0)),
            ]),
        ])
        return serialize(answer)
    }

    /// A chat message's content: a string, or (some engines) an array of text parts.
    private static func messageText(_ content: JSONValue?) -> String {
        if let text = content?.stringValue { return text }
        guard case .array(let parts)? = content else { return "" }
        var text = ""
        for part in parts { text += part["text"]?.stringValue ?? "" }
        return text
    }

    /// Tool arguments arrive as a JSON string; Anthropic wants the object itself, `{}` when they do not parse
    /// to one (a model may emit broken JSON).
    static func toolInput(_ arguments: JSONValue?) -> JSONValue {
        if let arguments, case .object = arguments { return arguments }
        if let string = arguments?.stringValue, let parsed = parse(Data(string.utf8)), case .object = parsed {
            return parsed
        }
        return .object([:])
    }
}
