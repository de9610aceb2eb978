import ArgumentParser
import AsyncHTTPClient
import Foundation
import InferenceCore
import Logging
import ModelHub
import NIOCore
import NIOFoundationCompat
import Replicas

/// `lyceum replica run`: the launcher a cluster job runs on its node (not for people to type).
struct ReplicaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replica", abstract: "What runs on a cluster node for one replica.", subcommands: [Run.self])

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pick a port on this node, register it with the control plane, then run the engine (its {host} and {port} filled in).")

        @Option(name: .customLong("control-plane"), help: "The control plane's URL, as this node reaches it.") var controlPlane: String
        @Option(name: .customLong("replica-id")) var replicaId: String
        @Option(name: .customLong("register-timeout"), help: "Seconds to keep trying to register.") var registerTimeout: Double = 60
        @Option(help: "A Hub repository whose files this node fetches into its own Hub cache (HF_HUB_CACHE) before the engine starts.")
        var pull: String?
        @Option(name: .customLong("pull-format"), help: "checkpoint (vLLM), gguf or gguf:FILE (llama.cpp).") var pullFormat: String = "checkpoint"
        @Option(name: .customLong("hub-endpoint"), help: "The Hub, or a mirror.") var hubEndpoint: String = HubClient.defaultEndpoint
        @Argument(parsing: .postTerminator, help: "The engine's command line, after --.") var command: [String] = []

        func validate() throws {
            guard !command.isEmpty else { throw ValidationError("give the engine's command line after --") }
            guard registerTimeout.isFinite, (1...3600).contains(registerTimeout) else { throw ValidationError("--register-timeout is 1 to 3600 seconds") }
            guard ModelFormat(name: pullFormat) != nil else { throw ValidationError("--pull-format is checkpoint, gguf or gguf:FILE") }
        }

        func run() async throws {
            let environment = ProcessInfo.processInfo.environment
            guard let token = environment["LYCEUM_REPLICA_TOKEN"], !token.isEmpty else {
                throw CLIFailure("LYCEUM_REPLICA_TOKEN is not set: this runs inside a cluster job the control plane submitted")
            }
            guard let url = URL(string: controlPlane), let cpHost = url.host, ["http", "https"].contains(url.scheme ?? "") else {
                throw CLIFailure("--control-plane must be an http(s) URL")
            }
            let host = try NodeLauncher.routableAddress(toward: cpHost, port: url.port ?? (url.scheme == "https" ? 443 : 80))
            let port = try NodeLauncher.freePort(on: host)
            let devices = environment["CUDA_VISIBLE_DEVICES"] ?? ""
            print("lyceum replica \(replicaId): engine will listen on \(host):\(port)\(devices.isEmpty ? "" : " with devices \(devices)")")
            let answer = try await register(ReplicaRegistration(host: host, port: port, pid: Int(getpid()), devices: devices), token: token)
            var engineEnvironment = answer.environment
            var fill = ["{host}": host, "{port}": String(port)]
            if let pull, let format = ModelFormat(name: pullFormat) {
                let cache = ModelDownloader.defaultCacheDir
                print("lyceum replica \(replicaId): fetching \(pull) from \(hubEndpoint) into this node's Hub cache \(cache)")
                fflush(nil)
                let downloader = ModelDownloader(cacheDir: cache, hub: HubClient(endpoint: hubEndpoint), logger: Logger(label: "lyceum.replica"))
                let model = try await downloader.prepare(repo: pull, format: format, token: answer.environment["HF_TOKEN"])
                print("lyceum replica \(replicaId): model files ready in \(model.snapshot)")
                fill["{model_file}"] = model.primaryFile ?? model.snapshot
                fill["{model_cache}"] = model.cacheDir
                if format == .checkpoint {
                    // The files are in the cache: vLLM must not go to the network for them.
                    engineEnvironment["HF_HUB_CACHE"] = model.cacheDir
                    engineEnvironment["HF_HUB_OFFLINE"] = "1"
                }
            }
            let arguments = command.dropFirst().map { word in fill.reduce(word) { $0.replacingOccurrences(of: $1.key, with: $1.value) } }
            let stopWait = Double(environment["RAY_JOB_STOP_WAIT_TIME_S"] ?? "") ?? 10
            fflush(nil)
            let code = try await NodeLauncher.runEngine(
                executable: command[0], arguments: Array(arguments), environment: engineEnvironment,
                stopWait: .milliseconds(Int64(max(1, stopWait - 1) * 1000)))
            throw ExitCode(code)
        }

        /// Registers, retrying while the control plane cannot be reached or asks to try again.
        func register(_ registration: ReplicaRegistration, token: String) async throws -> ReplicaRegistrationAnswer {
            let client = APIClient.http
            let deadline = Date().addingTimeInterval(registerTimeout)
            let path = "/api/v2/internal/replicas/\(replicaId.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-"))) ?? replicaId)/register"
            var request = HTTPClientRequest(url: controlPlane.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + path)
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            request.headers.add(name: "Content-Type", value: "application/json")
            let body = try WireJSON.encoder.encode(registration)
            while true {
                request.body = .bytes(ByteBuffer(data: body))
                var why: String
                do {
                    let response = try await client.execute(request, timeout: .seconds(10))
                    let data = Data(buffer: try await response.body.collect(upTo: 1 << 20))
                    if response.status.code == 200 { return try WireJSON.decoder.decode(ReplicaRegistrationAnswer.self, from: data) }
                    why = "\(response.status.code): \(String(decoding: data.prefix(300), as: UTF8.self))"
                    if response.status.code != 503 && response.status.code != 502 && response.status.code != 421 {
                        throw CLIFailure("the control plane refused the registration: \(why)")
                    }
                } catch let failure as CLIFailure {
                    throw failure
                } catch {
                    why = "\(error)"
                }
                guard Date() < deadline else { throw CLIFailure("could not register with \(controlPlane) within \(Int(registerTimeout)) s: \(why)") }
                print("lyceum replica \(replicaId): registration not accepted yet (\(why)); retrying")
                try await Task.sleep(for: .seconds(1))
            }
        }
    }
}
