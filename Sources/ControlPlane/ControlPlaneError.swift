import DeploymentStore
import Foundation
import Hummingbird
import NIOCore
import InferenceCore

/// An error the control plane answers with `{"detail": "..."}`.
public struct ControlPlaneError: Error, Sendable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var detail: String

    public init(_ status: HTTPResponse.Status, _ detail: String) {
        self.status = status
        self.detail = detail
    }

    public var description: String { "\(status.code): \(detail)" }

    static func notFound(_ id: String) -> Self {
        .init(.notFound, "Deployment \(id) not found")
    }

    static let unauthorized = Self(.unauthorized, "Invalid or missing API key: send 'Authorization: Bearer lk_...'")
}

/// Renders every error under the control-plane path in the contract's shape: 422 `{"detail": [...]}` for
/// validation, `{"detail": "..."}` for the rest; unexpected errors become a 500 that names no internals.
struct DetailErrorMiddleware: RouterMiddleware {
    typealias Context = LyceumRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as ValidationFailure {
            return Self.respond(.unprocessableContent, DetailIssues(detail: error.issues))
        } catch let error as ControlPlaneError {
            return Self.respond(error.status, DetailMessage(detail: error.detail))
        } catch let error as HTTPError where error.status == .contentTooLarge {
            return Self.respond(.contentTooLarge, DetailMessage(detail: "Request body is larger than the limit of 1 MiB"))
        } catch is NIOTooManyBytesError {
            return Self.respond(.contentTooLarge, DetailMessage(detail: "Request body is larger than the limit of 1 MiB"))
        } catch let error as HTTPError {
            return Self.respond(error.status, DetailMessage(detail: error.body ?? error.status.reasonPhrase))
        } catch {
            context.logger.error("control plane request failed", metadata: ["error": "\(error)"])
            return Self.respond(.internalServerError, DetailMessage(detail: "Internal server error; see the server log"))
        }
    }

    static func respond(_ status: HTTPResponse.Status, _ body: some Encodable) -> Response {
        let data = (try? WireJSON.encoder.encode(body)) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// Checks the API key and puts the caller in the context; 401 in the detail shape otherwise.
struct DetailAuthMiddleware: RouterMiddleware {
    typealias Context = LyceumRequestContext
    let authenticator: Authenticator

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let caller = try await authenticator.caller(authorization: request.headers[.authorization]) else {
            throw ControlPlaneError.unauthorized
        }
        var context = context
        context.caller = caller
        return try await next(request, context)
    }
}
