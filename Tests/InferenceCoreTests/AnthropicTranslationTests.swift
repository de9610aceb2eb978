import Foundation
import Testing
@testable import InferenceCore

@Suite("Anthropic Messages translation")
struct AnthropicTranslationTests {
    func translate(_ json: String, model: String = "llama") throws -> (body: JSONValue, stream: Bool) {
        let (body, stream) = try AnthropicTranslation.chatRequest(fromMessages: Data(json.utf8), model: model)
        return (try JSONDecoder().decode(JSONValue.self, from: body), stream)
    }

    func rejection(_ json: String) -> AnthropicRequestError? {
        do {
            _ = try AnthropicTranslation.chatRequest(fromMessages: Data(json.utf8), model: "m")
            return nil
        } catch {
            return error
        }
    }

    func messages(_ body: JSONValue) -> [JSONValue] {
        if case .array(let list)? = body["messages"] { return list }
        return []
    }

    func respond(_ json: String, stopSequenceHit: String? = nil) -> JSONValue? {
        AnthropicTranslation.messageResponse(fromChat: Data(json.utf8), model: "claude-local", stopSequenceHit: stopSequenceHit)
            .flatMap { try? JSONDecoder().decode(JSONValue.self, from: $0) }
    }

    // MARK: Requests

    @Test("a string system prompt becomes a leading system message; the model and sampling fields carry over")
    func systemStringAndSampling() throws {
        let (body, stream) = try translate(#"""
            {"model": "claude-3-5-sonnet", "max_tokens": 256, "system": "Be brief.", "metadata": {"user_id": "u1"},
             "temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop_sequences": ["END", "###"],
             "messages": [{"role": "user", "content": "Hi"}]}
            """#)
        #expect(!stream)
        #expect(body["model"] == .string("llama"))
        #expect(body["max_tokens"]?.intValue == 256)
        #expect(body["temperature"]?.doubleValue == 0.5)
        #expect(body["top_p"]?.doubleValue == 0.9)
        #expect(body["top_k"]?.intValue == 40)
        #expect(body["stop"] == .array([.string("END"), .string("###")]))
        #expect(body["metadata"] == nil)
        #expect(body["stream"] == nil && body["stream_options"] == nil)
        #expect(messages(body) == [
            .object(["role": .string("system"), "content": .string("Be brief.")]),
            .object(["role": .string("user"), "content": .string("Hi")]),
        ])
    }

    @Test("system text blocks are joined by newlines; an empty stop list is left out")
    func systemBlocks() throws {
        let (body, _) = try translate(#"""
            {"max_tokens": 10, "stop_sequences": [],
             "system": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two.", "cache_control": {"type": "ephemeral"}}],
             "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}
            """#)
        #expect(messages(body).first == .object(["role": .string("system"), "content": .string("One.\nTwo.")]))
        #expect(messages(body).last == .object(["role": .string("user"), "content": .string("Hi")]))
        #expect(body["stop"] == nil)
    }

    @Test("a stream asks the engine for usage in its last chunk")
    func streamAsksForUsage() throws {
        let (body, stream) = try translate(#"{"max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}"#)
        #expect(stream)
        #expect(body["stream"] == .bool(true))
        #expect(body["stream_options"] == .object(["include_usage": .bool(true), "continuous_usage_stats": .bool(true)]))
    }

    @Test("tools, tool choices and parallel-call opt-out translate to OpenAI's function tools")
    func tools() throws {
        let request = #"""
            {"max_tokens": 10, "messages": [{"role": "user", "content": "Weather?"}],
             "tools": [{"name": "get_weather", "description": "Current weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
             "tool_choice": %@}
            """#
        func choice(_ json: String) throws -> JSONValue? {
            try translate(request.replacingOccurrences(of: "%@", with: json)).body["tool_choice"]
        }
        let (body, _) = try translate(request.replacingOccurrences(of: "%@", with: #"{"type": "auto"}"#))
        #expect(body["tools"] == .array([.object([
            "type": .string("function"),
            "function": .object([
                "name": .string("get_weather"),
                "description": .string("Current weather"),
                "parameters": .object(["type": .string("object"), "properties": .object(["city": .object(["type": .string("string")])])]),
            ]),
        ])]))
        #expect(body["tool_choice"] == .string("auto"))
        #expect(body["parallel_tool_calls"] == nil)
        #expect(try choice(#"{"type": "any"}"#) == .string("required"))
        #expect(try choice(#"{"type": "none"}"#) == .string("none"))
        #expect(try choice(#"{"type": "tool", "name": "get_weather"}"#)
            == .object(["type": .string("function"), "function": .object(["name": .string("get_weather")])]))
        let serial = try translate(request.replacingOccurrences(of: "%@", with: #"{"type": "any", "disable_parallel_tool_use": true}"#)).body
        #expect(serial["parallel_tool_calls"] == .bool(false))
    }

    @Test("tool_use becomes tool_calls with JSON-string arguments, and tool_result a tool message ahead of the user's text")
    func toolRoundTrip() throws {
        let (body, _) = try translate(#"""
            {"max_tokens": 10, "messages": [
              {"role": "user", "content": "Weather in Paris and Rome?"},
              {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "...", "signature": "x"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}]},
              {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "21C"}, {"type": "text", "text": "sunny"}]},
                {"type": "text", "text": "Thanks"}]},
              {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_3", "name": "noop", "input": {}}]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_3"}]}]}
            """#)
        let list = messages(body)
        try #require(list.count == 7)
        let assistant = list[1]
        #expect(assistant["role"] == .string("assistant"))
        #expect(assistant["content"] == .string("Checking."))
        guard case .array(let calls)? = assistant["tool_calls"] else {
            Issue.record("no tool_calls")
            return
        }
        #expect(calls.count == 2)
        #expect(calls[0]["id"] == .string("toolu_1"))
        #expect(calls[0]["type"] == .string("function"))
        #expect(calls[0]["function"]?["name"] == .string("get_weather"))
        let arguments = try #require(calls[0]["function"]?["arguments"]?.stringValue)
        #expect(try JSONDecoder().decode(JSONValue.self, from: Data(arguments.utf8)) == .object(["city": .string("Paris")]))
        #expect(list[2] == .object(["role": .string("tool"), "tool_call_id": .string("toolu_1"), "content": .string("18C")]))
        #expect(list[3] == .object(["role": .string("tool"), "tool_call_id": .string("toolu_2"), "content": .string("21C\nsunny")]))
        #expect(list[4] == .object(["role": .string("user"), "content": .string("Thanks")]))
        #expect(list[5]["content"] == .null, "an assistant turn of only tool calls has null content")
        #expect(list[5]["tool_calls"] == .array([.object([
            "id": .string("toolu_3"), "type": .string("function"),
            "function": .object(["name": .string("noop"), "arguments": .string("{}")]),
        ])]))
        #expect(list[6] == .object(["role": .string("tool"), "tool_call_id": .string("toolu_3"), "content": .string("")]))
    }

    @Test("base64 images become data URLs and URL images pass through, as image_url parts beside the text")
    func images() throws {
        let (body, _) = try translate(#"""
            {"max_tokens": 10, "messages": [{"role": "user", "content": [
              {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
              {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
              {"type": "text", "text": "What are these?"}]}]}
            """#)
        #expect(messages(body) == [.object(["role": .string("user"), "content": .array([
            .object(["type": .string("image_url"), "image_url": .object(["url": .string("data:image/png;base64,iVBORw0KGgo=")])]),
            .object(["type": .string("image_url"), "image_url": .object(["url": .string("https://example.com/cat.jpg")])]),
            .object(["type": .string("text"), "text": .string("What are these?")]),
        ])])])
    }

    @Test("every malformed request is refused with a message naming the field", arguments: [
        ("{not json", nil),
        (#"[1, 2]"#, nil),
        (#"{"messages": [{"role": "user", "content": "Hi"}]}"#, "max_tokens"),
        (#"{"max_tokens": null, "messages": [{"role": "user", "content": "Hi"}]}"#, "max_tokens"),
        (#"{"max_tokens": 0, "messages": [{"role": "user", "content": "Hi"}]}"#, "max_tokens"),
        (#"{"max_tokens": 1000001, "messages": [{"role": "user", "content": "Hi"}]}"#, "max_tokens"),
        (#"{"max_tokens": 1.5, "messages": [{"role": "user", "content": "Hi"}]}"#, "max_tokens"),
        (#"{"max_tokens": "10", "messages": [{"role": "user", "content": "Hi"}]}"#, "max_tokens"),
        (#"{"max_tokens": 10}"#, "messages"),
        (#"{"max_tokens": 10, "messages": []}"#, "messages"),
        (#"{"max_tokens": 10, "messages": "Hi"}"#, "messages"),
        (#"{"max_tokens": 10, "messages": ["Hi"]}"#, "messages[0]"),
        (#"{"max_tokens": 10, "messages": [{"role": "system", "content": "Hi"}]}"#, "messages[0].role"),
        (#"{"max_tokens": 10, "messages": [{"content": "Hi"}]}"#, "messages[0].role"),
        (#"{"max_tokens": 10, "messages": [{"role": "user"}]}"#, "messages[0].content"),
        (#"{"max_tokens": 10, "messages": [{"role": "user", "content": 7}]}"#, "messages[0].content"),
        (#"{"max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "document"}]}]}"#, "messages[0].content[0].type"),
        (#"{"max_tokens": 10, "messages": [{"role": "user", "content": [{"text": "no type"}]}]}"#, "messages[0].content[0].type"),
        (#"{"max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}"#, "messages[0].content[0].text"),
        (#"{"max_tokens": 10, "messages": [{"role": "assistant", "content": [{"type": "image", "source": {}}]}]}"#, "messages[0].content[0].type"),
        (#"{"max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}"#, "messages[0].content[0].source.type"),
        (#"{"max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]}"#, "messages[0].content[0].source"),
        (#"{"max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]}"#, "messages[0].content[0].tool_use_id"),
        (#"{"max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": 5}]}]}"#, "messages[0].content[0].content"),
        (#"{"max_tokens": 10, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}]}"#, "messages[0].content[0].id"),
        (#"{"max_tokens": 10, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}]}]}"#, "messages[0].content[0].input"),
        (#"{"max_tokens": 10, "system": 5, "messages": [{"role": "user", "content": "Hi"}]}"#, "system"),
        (#"{"max_tokens": 10, "system": [{"type": "image"}], "messages": [{"role": "user", "content": "Hi"}]}"#, "system[0]"),
        (#"{"max_tokens": 10, "stop_sequences": "END", "messages": [{"role": "user", "content": "Hi"}]}"#, "stop_sequences"),
        (#"{"max_tokens": 10, "stop_sequences": [1], "messages": [{"role": "user", "content": "Hi"}]}"#, "stop_sequences"),
        (#"{"max_tokens": 10, "temperature": "hot", "messages": [{"role": "user", "content": "Hi"}]}"#, "temperature"),
        (#"{"max_tokens": 10, "top_p": true, "messages": [{"role": "user", "content": "Hi"}]}"#, "top_p"),
        (#"{"max_tokens": 10, "top_k": 2.5, "messages": [{"role": "user", "content": "Hi"}]}"#, "top_k"),
        (#"{"max_tokens": 10, "stream": "yes", "messages": [{"role": "user", "content": "Hi"}]}"#, "stream"),
        (#"{"max_tokens": 10, "tools": {}, "messages": [{"role": "user", "content": "Hi"}]}"#, "tools"),
        (#"{"max_tokens": 10, "tools": [{"type": "web_search_20250305", "name": "web_search"}], "messages": [{"role": "user", "content": "Hi"}]}"#, "tools[0].type"),
        (#"{"max_tokens": 10, "tools": [{"input_schema": {}}], "messages": [{"role": "user", "content": "Hi"}]}"#, "tools[0].name"),
        (#"{"max_tokens": 10, "tools": [{"name": "f"}], "messages": [{"role": "user", "content": "Hi"}]}"#, "tools[0].input_schema"),
        (#"{"max_tokens": 10, "tools": [{"name": "f", "input_schema": {}, "description": 1}], "messages": [{"role": "user", "content": "Hi"}]}"#, "tools[0].description"),
        (#"{"max_tokens": 10, "tool_choice": {"type": "sometimes"}, "messages": [{"role": "user", "content": "Hi"}]}"#, "tool_choice.type"),
        (#"{"max_tokens": 10, "tool_choice": {"type": "tool"}, "messages": [{"role": "user", "content": "Hi"}]}"#, "tool_choice.name"),
    ] as [(String, String?)])
    func rejections(request: String, param: String?) {
        let error = rejection(request)
        #expect(error != nil, "accepted: \(request)")
        #expect(error?.param == param)
        #expect(error?.message.isEmpty == false)
    }

    @Test("the max_tokens bound is stated in the error and both ends are accepted")
    func maxTokensBound() throws {
        #expect(rejection(#"{"max_tokens": 0, "messages": [{"role": "user", "content": "Hi"}]}"#)?.message.contains("1 to 1000000") == true)
        #expect(try translate(#"{"max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}"#).body["max_tokens"]?.intValue == 1)
        #expect(try translate(#"{"max_tokens": 1000000, "messages": [{"role": "user", "content": "Hi"}]}"#).body["max_tokens"]?.intValue == 1_000_000)
    }

    // MARK: Responses

    @Test("a text completion becomes an Anthropic message with its usage")
    func textResponse() throws {
        let message = try #require(respond(#"""
            {"id": "chatcmpl-1", "object": "chat.completion", "model": "llama",
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}
            """#))
        let id = try #require(message["id"]?.stringValue)
        #expect(id.hasPrefix("msg_") && id.count == 28)
        #expect(message["type"] == .string("message"))
        #expect(message["role"] == .string("assistant"))
        #expect(message["model"] == .string("claude-local"))
        #expect(message["content"] == .array([.object(["type": .string("text"), "text": .string("Hello!")])]))
        #expect(message["stop_reason"] == .string("end_turn"))
        #expect(message["stop_sequence"] == .null)
        #expect(message["usage"] == .object(["input_tokens": .number(12), "output_tokens": .number(3)]))
    }

    @Test("tool calls become tool_use blocks with parsed input, {} when the arguments do not parse")
    func toolUseResponse() throws {
        let message = try #require(respond(#"""
            {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "Let me check.", "tool_calls": [
              {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
              {"id": "call_2", "type": "function", "function": {"name": "broken", "arguments": "{\"city\": "}}]}}],
             "usage": {"prompt_tokens": 5, "completion_tokens": 9}}
            """#))
        #expect(message["content"] == .array([
            .object(["type": .string("text"), "text": .string("Let me check.")]),
            .object(["type": .string("tool_use"), "id": .string("call_1"), "name": .string("get_weather"), "input": .object(["city": .string("Paris")])]),
            .object(["type": .string("tool_use"), "id": .string("call_2"), "name": .string("broken"), "input": .object([:])]),
        ]))
        #expect(message["stop_reason"] == .string("tool_use"))
    }

    @Test("finish reasons map to Anthropic stop reasons", arguments: [
        ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal"),
    ])
    func finishReasons(finish: String, stop: String) throws {
        let message = try #require(respond(#"{"choices": [{"message": {"content": "x"}, "finish_reason": "\#(finish)"}]}"#))
        #expect(message["stop_reason"] == .string(stop))
        #expect(message["usage"] == .object(["input_tokens": .number(0), "output_tokens": .number(0)]), "no usage reads as zeros")
    }

    @Test("a known stop sequence makes the stop reason stop_sequence, from the caller or from vLLM's stop_reason")
    func stopSequence() throws {
        let plain = #"{"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]}"#
        let given = try #require(respond(plain, stopSequenceHit: "END"))
        #expect(given["stop_reason"] == .string("stop_sequence"))
        #expect(given["stop_sequence"] == .string("END"))
        let vllm = try #require(respond(#"{"choices": [{"message": {"content": "x"}, "finish_reason": "stop", "stop_reason": "</s2>"}]}"#))
        #expect(vllm["stop_reason"] == .string("stop_sequence"))
        #expect(vllm["stop_sequence"] == .string("</s2>"))
        let eos = try #require(respond(#"{"choices": [{"message": {"content": "x"}, "finish_reason": "stop", "stop_reason": 128009}]}"#))
        #expect(eos["stop_reason"] == .string("end_turn"))
        #expect(eos["stop_sequence"] == .null)
    }

    @Test("what is not a chat completion translates to nil", arguments: [
        "not json", "[]", #"{"error": {"message": "boom"}}"#, #"{"choices": []}"#, #"{"choices": "x"}"#, #"{"choices": [3]}"#,
    ])
    func junkResponse(body: String) {
        #expect(AnthropicTranslation.messageResponse(fromChat: Data(body.utf8), model: "m") == nil)
    }

    // MARK: Errors

    @Test("error bodies are escaped JSON and HTTP statuses map to Anthropic error types")
    func errors() throws {
        let body = AnthropicTranslation.errorBody(type: "invalid_request_error", message: "bad \"quote\"\n")
        #expect(body == #"{"type":"error","error":{"type":"invalid_request_error","message":"bad \"quote\"\n"}}"#)
        let parsed = try JSONDecoder().decode(JSONValue.self, from: Data(body.utf8))
        #expect(parsed["error"]?["message"] == .string("bad \"quote\"\n"))
        let expected: [Int: String] = [
            400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
            413: "request_too_large", 422: "invalid_request_error", 429: "rate_limit_error", 500: "api_error",
            502: "api_error", 503: "overloaded_error", 504: "api_error", 529: "overloaded_error",
        ]
        for (status, type) in expected {
            #expect(AnthropicTranslation.errorType(forStatus: status) == type, "\(status)")
        }
    }
}
