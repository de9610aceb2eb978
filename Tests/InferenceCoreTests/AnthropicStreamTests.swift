import Foundation
import Testing
@testable import InferenceCore

@Suite("Anthropic stream translation")
struct AnthropicStreamTests {
    typealias Event = (name: String, data: JSONValue)

    static func sse(_ lines: [String]) -> [UInt8] {
        Array(lines.map { "data: \($0)\n\n" }.joined().utf8)
    }

    /// Text, then two tool calls with arguments in pieces, then `finish_reason`, then the usage chunk.
    static let upstream = sse([
        #"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        #"{"id":"c1","choices":[{"index":0,"delta":{"content":"Héllo ✓ "},"finish_reason":null}]}"#,
        #"{"id":"c1","choices":[{"index":0,"delta":{"content":"\"world\"\n"},"finish_reason":null}]}"#,
        #"{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
        #"{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": "}}]}}]}"#,
        #"{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}}]}"#,
        #"{"id":"c1","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{}"}}]}}]}"#,
        #"{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        #"{"id":"c1","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}"#,
        "[DONE]",
    ])

    static func translate(_ chunks: [[UInt8]]) -> [UInt8] {
        var translator = AnthropicStreamTranslator(model: "claude-local", messageId: "msg_test")
        var out: [UInt8] = []
        for chunk in chunks { out += translator.feed(chunk) }
        return out + translator.finish()
    }

    static func events(_ bytes: [UInt8]) -> [Event] {
        String(decoding: bytes, as: UTF8.self).components(separatedBy: "\n\n").filter { !$0.isEmpty }.map { block in
            let lines = block.components(separatedBy: "\n")
            let name = lines.first.map { String($0.dropFirst("event: ".count)) } ?? ""
            let data = lines.dropFirst().first.map { String($0.dropFirst("data: ".count)) } ?? ""
            return (name, (try? JSONDecoder().decode(JSONValue.self, from: Data(data.utf8))) ?? .null)
        }
    }

    /// The problems with an event sequence, against Anthropic's grammar: `message_start`, blocks opened,
    /// filled and closed one at a time with consecutive indices, then `message_delta` and `message_stop`
    /// (or an `error` that ends it).
    static func problems(_ events: [Event]) -> [String] {
        var problems: [String] = []
        var open: (index: Int, type: String)?
        var next = 0
        var sawDelta = false
        if events.first?.name != "message_start" && events.first?.name != "error" { problems.append("does not begin with message_start") }
        for (n, event) in events.enumerated() {
            if event.data["type"]?.stringValue != event.name { problems.append("\(n): data type differs from event \(event.name)") }
            let index = event.data["index"]?.intValue
            switch event.name {
            case "message_start":
                if n != 0 { problems.append("\(n): second message_start") }
            case "content_block_start":
                if open != nil || index != next || sawDelta { problems.append("\(n): block \(index ?? -1) starts out of turn") }
                open = (next, event.data["content_block"]?["type"]?.stringValue ?? "")
                next += 1
            case "content_block_delta":
                let expected = open?.type == "text" ? "text_delta" : "input_json_delta"
                if index == nil || index != open?.index || event.data["delta"]?["type"]?.stringValue != expected {
                    problems.append("\(n): delta outside its block")
                }
            case "content_block_stop":
                if index == nil || index != open?.index { problems.append("\(n): stop of a block not open") }
                open = nil
            case "message_delta":
                if open != nil || sawDelta { problems.append("\(n): message_delta with a block open or twice") }
                sawDelta = true
            case "message_stop":
                if !sawDelta || n != events.count - 1 { problems.append("\(n): message_stop not last after message_delta") }
            case "error":
                if n != events.count - 1 { problems.append("\(n): events after an error") }
            default:
                problems.append("\(n): unknown event \(event.name)")
            }
        }
        return problems
    }

    @Test("text and tool calls become blocks in order, and usage that follows finish_reason reaches message_delta")
    func wholeStream() throws {
        let events = Self.events(Self.translate([Self.upstream]))
        #expect(Self.problems(events) == [])
        try #require(events.map(\.name) == [
            "message_start",
            "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
            "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
            "content_block_start", "content_block_delta", "content_block_stop",
            "message_delta", "message_stop",
        ])
        let message = try #require(events.first?.data["message"])
        #expect(message["id"] == .string("msg_test") && message["model"] == .string("claude-local"))
        #expect(message["content"] == .array([]) && message["stop_reason"] == .null)
        #expect(message["usage"] == .object(["input_tokens": .number(0), "output_tokens": .number(0)]))
        let text = events.compactMap { $0.data["delta"]?["text"]?.stringValue }.joined()
        #expect(text == "Héllo ✓ \"world\"\n")
        #expect(events[5].data["content_block"] == .object([
            "type": .string("tool_use"), "id": .string("call_a"), "name": .string("get_weather"), "input": .object([:]),
        ]))
        let arguments = events[6...7].compactMap { $0.data["delta"]?["partial_json"]?.stringValue }.joined()
        #expect(try JSONDecoder().decode(JSONValue.self, from: Data(arguments.utf8)) == .object(["city": .string("Paris")]))
        #expect(events[9].data["content_block"]?["name"] == .string("get_time"))
        #expect(events[10].data["delta"]?["partial_json"] == .string("{}"))
        #expect(events[12].data == .object([
            "type": .string("message_delta"),
            "delta": .object(["stop_reason": .string("tool_use"), "stop_sequence": .null]),
            "usage": .object(["input_tokens": .number(11), "output_tokens": .number(7)]),
        ]))
    }

    @Test("the stream cut at every byte, or fed a byte at a time, translates the same")
    func everySplit() {
        let whole = Self.translate([Self.upstream])
        for cut in 0...Self.upstream.count {
            let parts = [Array(Self.upstream[..<cut]), Array(Self.upstream[cut...])]
            #expect(Self.translate(parts) == whole, "cut at \(cut)")
        }
        #expect(Self.translate(Self.upstream.map { [$0] }) == whole)
    }

    @Test("an upstream that ends without [DONE] or finish_reason is closed by finish(), at every cut")
    func endsWithoutDone() throws {
        let upstream = Self.sse([
            #"{"choices":[{"index":0,"delta":{"content":"Partial"}}]}"#,
            #"{"choices":[{"index":0,"delta":{"content":" answer"}}]}"#,
        ])
        let whole = Self.translate([upstream])
        let events = Self.events(whole)
        #expect(Self.problems(events) == [])
        try #require(events.map(\.name) == ["message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop", "message_delta", "message_stop"])
        #expect(events[5].data["delta"]?["stop_reason"] == .string("end_turn"))
        for cut in 0...upstream.count {
            #expect(Self.translate([Array(upstream[..<cut]), Array(upstream[cut...])]) == whole, "cut at \(cut)")
        }
    }

    @Test("an error event injected mid-stream becomes an Anthropic error event that ends the stream")
    func midStreamError() throws {
        let upstream = Array((#"data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}"# + "\n\n" + #"data: {"choi"#
            + "\n\n" + #"data: {"error":{"message":"The replica serving this stream failed mid-stream; the answer is incomplete.","type":"server_error","param":null,"code":"replica_failed"}}"#
            + "\n\n").utf8)
        var translator = AnthropicStreamTranslator(model: "m", messageId: "msg_x")
        let events = Self.events(translator.feed(upstream))
        #expect(Self.problems(events) == [])
        try #require(events.map(\.name) == ["message_start", "content_block_start", "content_block_delta", "error"])
        #expect(events.last?.data == .object(["type": .string("error"), "error": .object([
            "type": .string("api_error"),
            "message": .string("The replica serving this stream failed mid-stream; the answer is incomplete."),
        ])]))
        #expect(translator.isFinished)
        #expect(translator.feed(Self.sse(["[DONE]"])).isEmpty)
        #expect(translator.finish().isEmpty)
    }

    @Test("usage in the first chunk (vLLM's continuous_usage_stats) gives message_start its input tokens")
    func inputTokensAtStart() throws {
        let events = Self.events(Self.translate([Self.sse([
            #"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":{"prompt_tokens":42,"completion_tokens":0}}"#,
            #"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"length"}],"usage":{"prompt_tokens":42,"completion_tokens":1}}"#,
            "[DONE]",
        ])]))
        #expect(Self.problems(events) == [])
        #expect(events.first?.data["message"]?["usage"] == .object(["input_tokens": .number(42), "output_tokens": .number(0)]))
        #expect(events.last(where: { $0.name == "message_delta" })?.data["usage"] == .object(["input_tokens": .number(42), "output_tokens": .number(1)]))
    }

    @Test("vLLM's top-level error object and a bare error string are errors too")
    func otherErrorShapes() {
        for (line, message) in [
            (#"{"object":"error","message":"bad thing","type":"BadRequestError","code":400}"#, "bad thing"),
            (#"{"error":"plain string"}"#, "plain string"),
        ] {
            var translator = AnthropicStreamTranslator(model: "m", messageId: "msg_x")
            let events = Self.events(translator.feed(Self.sse([line])) + translator.finish())
            #expect(events.map(\.name) == ["error"])
            #expect(events.first?.data["error"]?["message"] == .string(message))
        }
    }

    @Test("a matched stop sequence, a length cut and an empty upstream close the message accordingly")
    func stopReasons() {
        let stop = Self.events(Self.translate([Self.sse([
            #"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop","stop_reason":"END"}]}"#, "[DONE]",
        ])]))
        #expect(stop.first(where: { $0.name == "message_delta" })?.data["delta"] == .object(["stop_reason": .string("stop_sequence"), "stop_sequence": .string("END")]))
        let length = Self.events(Self.translate([Self.sse([#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"length"}]}"#])]))
        #expect(Self.problems(length) == [])
        #expect(length.first(where: { $0.name == "message_delta" })?.data["delta"]?["stop_reason"] == .string("max_tokens"))
        let empty = Self.events(Self.translate([]))
        #expect(empty.map(\.name) == ["message_start", "message_delta", "message_stop"])
    }

    @Test("CRLF lines, data: without a space, comments and a tool name that comes late are understood")
    func looseFraming() throws {
        let upstream = Array((": keep-alive\r\n\r\n"
            + #"data:{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_z","function":{"arguments":"{\"a\""}}]}}]}"# + "\r\n\r\n"
            + #"data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":":1}"}}]}}]}"# + "\r\n\r\n"
            + "data: [DONE]\r\n\r\n").utf8)
        let events = Self.events(Self.translate([upstream]))
        #expect(Self.problems(events) == [])
        try #require(events.map(\.name) == ["message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"])
        #expect(events[1].data["content_block"]?["id"] == .string("call_z"))
        #expect(events[1].data["content_block"]?["name"] == .string("f"))
        #expect(events[2].data["delta"]?["partial_json"] == .string(#"{"a":1}"#), "arguments wait for the name, then go out together")
        #expect(events[4].data["delta"]?["stop_reason"] == .string("tool_use"), "tool calls under a plain stop still read as tool_use")
    }
}
