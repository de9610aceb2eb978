import ControlPlane
import Foundation
import Hummingbird
import InferenceCore
import NIOCore
import NIOFoundationCompat
import Replicas

extension LyceumServer {
    /// `POST /api/v2/internal/replicas/{id}/register`: a cluster node's launcher says where its engine
    /// listens, with its run's one-time token, and gets the run's secrets back.
    static func addReplicaRegistration(to router: Router<LyceumRequestContext>, registrar: (any ReplicaRegistrar)?) {
        router.post("api/v2/internal/replicas/:replica_id/register") { request, context -> Response in
            guard let registrar else {
                return jsonResponse(["detail": "this server runs no cluster replicas (set ray_address)"], status: .notFound)
            }
            let replicaId = try context.parameters.require("replica_id")
            guard replicaId.count <= 64, replicaId.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }) else {
                return jsonResponse(["detail": "not a replica id"], status: .badRequest)
            }
            guard let authorization = request.headers[.authorization], authorization.hasPrefix("Bearer "), authorization.count <= 256 else {
                return jsonResponse(["detail": "send the run's token as 'Authorization: Bearer TOKEN'"], status: .unauthorized)
            }
            let registration: ReplicaRegistration
            do {
                let body = try await request.body.collect(upTo: 16 * 1024)
                registration = try WireJSON.decoder.decode(ReplicaRegistration.self, from: Data(buffer: body))
            } catch {
                return jsonResponse(["detail": "the body must be JSON: {\"host\", \"port\", \"pid\", \"devices\"} of at most 16 KiB"], status: .badRequest)
            }
            let answer: ReplicaRegistrationAnswer
            do {
                answer = try await registrar.register(replicaId: replicaId, token: String(authorization.dropFirst(7)), registration)
            } catch let refused as RegistrationRefused {
                return jsonResponse(["detail": refused.description], status: HTTPResponse.Status(code: refused.status))
            }
            let data = try WireJSON.encoder.encode(answer)
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: data)))
        }
    }
}
