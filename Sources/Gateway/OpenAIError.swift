import Foundation
import Hummingbird
import NIOCore
import InferenceCore

/// An error on the data plane, rendered in OpenAI's shape so SDKs raise their matching exception.
public struct OpenAIError: Error, Sendable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?
    public var retryAfter: Int?

    public init(_ status: HTTPResponse.Status, _ message: String, type: String, param: String? = nil, code: String? = nil, retryAfter: Int? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retryAfter = retryAfter
    }

    public var description: String { "\(status.code) \(type): \(message)" }

    static let unauthorized = OpenAIError(
        .unauthorized, "Incorrect or missing API key: send 'Authorization: Bearer lk_...'", type: "invalid_request_error",
        code: "invalid_api_key")

    /// nginx's 499: the caller closed the connection before the answer.
    static let callerGone = OpenAIError(
        HTTPResponse.Status(code: 499, reasonPhrase: "Client Closed Request"), "The caller closed the connection before the answer.",
        type: "invalid_request_error", code: "caller_gone")

    static func modelNotFound(_ id: String) -> OpenAIError {
        OpenAIError(.notFound, "The model '\(id)' does not exist or you do not have access to it.", type: "invalid_request_error", param: "model", code: "model_not_found")
    }

    static func badRequest(_ message: String, param: String? = nil) -> OpenAIError {
        OpenAIError(.badRequest, message, type: "invalid_request_error", param: param)
    }

    /// `{"error": {...}}` as JSON bytes; also used inside a server-sent event when a stream breaks.
    var body: String {
        func quoted(_ s: String?) -> String { s.map { "\"\(jsonEscape($0))\"" } ?? "null" }
        return #"{"error":{"message":\#(quoted(message)),"type":\#(quoted(type)),"param":\#(quoted(param)),"code":\#(quoted(code))}}"#
    }

    var response: Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}

/// Every answer under `/openai/v1` carries an `x-request-id`, and every error is rendered in OpenAI's shape;
/// the server keeps running whatever a request throws.
struct OpenAIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as OpenAIError {
            response = error.response
        } catch is NIOTooManyBytesError {
            response = OpenAIError(.contentTooLarge, "Request body is larger than the limit", type: "invalid_request_error").response
        } catch is CancellationError {
            // The caller has gone: nobody reads this answer, and it is not a server error.
            response = OpenAIError.callerGone.response
        } catch let error as HTTPError {
            response = OpenAIError(error.status, error.body ?? error.status.reasonPhrase, type: "invalid_request_error").response
        } catch {
            context.logger.error("gateway request failed", metadata: ["error": "\(error)"])
            response = OpenAIError(.internalServerError, "Internal server error; see the server log", type: "server_error").response
        }
        if response.headers[.requestID] == nil {
            response.headers[.requestID] = newRequestID()
        }
        return response
    }
}

/// `req_` and 32 hex digits: the id of one data-plane answer. (Formatting a UUID string and stripping its
/// dashes cost 3% of the gateway's CPU in a profile at 1,000 req/s.)
func newRequestID() -> String {
    let uuid = UUID().uuid
    return "req_" + withUnsafeBytes(of: uuid) { hexString($0) }
}
