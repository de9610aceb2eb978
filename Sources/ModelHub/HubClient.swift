import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// One file of a Hub repository, as `/api/models/{id}?blobs=true` lists it.
public struct HubFile: Sendable, Equatable {
    public var name: String
    public var size: Int64?
    /// SHA-256 of the content, for files stored with Git LFS (weights); nil for small files.
    public var sha256: String?
    /// The Hub's blob id (the git object id for small files): the cache's blob name when there is no SHA-256.
    public var blobId: String?

    public init(name: String, size: Int64?, sha256: String?, blobId: String?) {
        self.name = name
        self.size = size
        self.sha256 = sha256
        self.blobId = blobId
    }
}

/// A repository's metadata.
public struct HubModel: Sendable, Equatable {
    public var id: String
    /// The commit the files are read at.
    public var sha: String
    public var gated: Bool
    public var files: [HubFile]

    public init(id: String, sha: String, gated: Bool, files: [HubFile]) {
        self.id = id
        self.sha = sha
        self.gated = gated
        self.files = files
    }
}

/// Why the Hub did not give what was asked.
public enum HubError: Error, CustomStringConvertible, Sendable, Equatable {
    /// 401/404 on the repository: it does not exist, or it is private and the token cannot see it.
    case notFound(repo: String)
    /// 401 on a file of a gated repository, without a token.
    case gatedNeedsToken(repo: String)
    /// 401/403 on a file with a token: the token does not grant access.
    case accessDenied(repo: String)
    case unreachable(String)
    case unexpectedStatus(Int, url: String)
    case checksumMismatch(file: String, expected: String, actual: String)
    case sizeMismatch(file: String, expected: Int64, actual: Int64)
    case noSuchFile(repo: String, file: String)
    /// A GGUF file that is not in the repository, with the GGUF files that are.
    case noSuchGGUF(repo: String, file: String, available: [String])
    /// A repository with no GGUF file, named for the cpu profile.
    case noGGUF(repo: String)

    public var description: String {
        switch self {
        case .notFound(let repo): "model '\(repo)' was not found on the Hugging Face Hub (or it is private and the hf_token given cannot see it)"
        case .gatedNeedsToken(let repo): "model '\(repo)' is gated on the Hugging Face Hub: give an hf_token of an account that has accepted its terms"
        case .accessDenied(let repo): "the hf_token given does not grant access to the gated model '\(repo)': accept its terms on the Hub with that account, or use another token"
        case .unreachable(let why): "the Hugging Face Hub could not be reached: \(why)"
        case .unexpectedStatus(let status, let url): "the Hugging Face Hub answered \(status) for \(url)"
        case .checksumMismatch(let file, let expected, let actual): "download of \(file) is corrupt: SHA-256 \(actual), the Hub lists \(expected); the file was discarded"
        case .sizeMismatch(let file, let expected, let actual): "download of \(file) is corrupt: \(actual) bytes, the Hub lists \(expected); the file was discarded"
        case .noSuchFile(let repo, let file): "model '\(repo)' has no file '\(file)'"
        case .noSuchGGUF(let repo, let file, let available):
            "model '\(repo)' has no file '\(file)'" + (available.isEmpty ? "" : "; its GGUF files: \(available.joined(separator: ", "))")
        case .noGGUF(let repo):
            "model '\(repo)' has no GGUF file; the cpu profile (llama.cpp) serves GGUF models: name a GGUF repository, or one file as repo:file.gguf"
        }
    }
}

/// A small client for the parts of the Hugging Face Hub API the platform uses: repository metadata, an
/// access check on a file, and file downloads (`/{repo}/resolve/{revision}/{file}`, with `Range`).
///
/// The endpoint is `HF_ENDPOINT`'s value, so mirrors and a local stand-in work the same way.
public struct HubClient: Sendable {
    public var endpoint: String
    let http: HTTPClient

    public init(endpoint: String, http: HTTPClient = .shared) {
        self.endpoint = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        self.http = http
    }

    /// `HF_ENDPOINT` if set, else the public Hub.
    public static var defaultEndpoint: String {
        ProcessInfo.processInfo.environment["HF_ENDPOINT"].flatMap { $0.isEmpty ? nil : $0 } ?? "https://huggingface.co"
    }

    func request(_ url: String, method: HTTPMethod = .GET, token: String?) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers.add(name: "User-Agent", value: "lyceum")
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        return request
    }

    /// Percent-encodes each path segment of a file name, keeping the slashes.
    static func path(_ file: String) -> String {
        file.split(separator: "/", omittingEmptySubsequences: false)
            .map { $0.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? String($0) }
            .joined(separator: "/")
    }

    public func fileURL(repo: String, revision: String, file: String) -> String {
        "\(endpoint)/\(repo)/resolve/\(revision)/\(Self.path(file))"
    }

    /// The repository's metadata with every file's size and checksum.
    public func model(_ repo: String, token: String?, timeout: Duration = .seconds(10)) async throws(HubError) -> HubModel {
        let url = "\(endpoint)/api/models/\(repo)?blobs=True"  // as huggingface_hub sends it
        let body: ByteBuffer
        do {
            let response = try await http.execute(request(url, token: token), timeout: .seconds(timeout.components.seconds))
            switch response.status.code {
            case 200: body = try await response.body.collect(upTo: 16 << 20)
            case 401, 404: throw HubError.notFound(repo: repo)
            default: throw HubError.unexpectedStatus(Int(response.status.code), url: url)
            }
        } catch let error as HubError {
            throw error
        } catch {
            throw .unreachable("\(error)")
        }
        struct Sibling: Decodable {
            struct LFS: Decodable { var sha256: String?; var size: Int64? }
            var rfilename: String
            var size: Int64?
            var blobId: String?
            var lfs: LFS?
        }
        struct Info: Decodable {
            var id: String?
            var modelId: String?
            var sha: String?
            var gated: Gated?
            var siblings: [Sibling]?
        }
        /// `false`, or `"auto"` / `"manual"`.
        enum Gated: Decodable, Equatable {
            case no, yes
            init(from decoder: any Decoder) throws {
                let c = try decoder.singleValueContainer()
                if let b = try? c.decode(Bool.self) { self = b ? .yes : .no } else { self = .yes }
            }
        }
        guard let info = try? JSONDecoder().decode(Info.self, from: Data(body.readableBytesView)) else {
            throw .unreachable("\(url) did not answer with model metadata")
        }
        return HubModel(
            id: info.id ?? info.modelId ?? repo, sha: info.sha ?? "main", gated: info.gated == .yes,
            files: (info.siblings ?? []).map {
                HubFile(name: $0.rfilename, size: $0.lfs?.size ?? $0.size, sha256: $0.lfs?.sha256, blobId: $0.blobId)
            })
    }

    /// Whether `token` may read `file` (gated repositories answer 401 without a token, 403 without access).
    public func checkAccess(repo: String, revision: String, file: String, token: String?, timeout: Duration = .seconds(10)) async throws(HubError) {
        let url = fileURL(repo: repo, revision: revision, file: file)
        let status: UInt
        do {
            status = try await http.execute(request(url, method: .HEAD, token: token), timeout: .seconds(timeout.components.seconds)).status.code
        } catch {
            throw .unreachable("\(error)")
        }
        switch status {
        case 200..<400: return
        case 401 where token == nil: throw .gatedNeedsToken(repo: repo)
        case 401, 403: throw .accessDenied(repo: repo)
        case 404: throw .noSuchFile(repo: repo, file: file)
        default: throw .unexpectedStatus(Int(status), url: url)
        }
    }
}

/// The result of checking a model id at create time.
public enum HubCheck: Sendable, Equatable {
    /// The model exists and can be read; these files will be downloaded.
    case ok(HubModel, files: [String])
    /// The model id (or token) is wrong: the field and the reason, for a 422.
    case refused(field: String, message: String)
    /// The Hub could not be asked; the deployment goes ahead and an event says so.
    case skipped(reason: String)
}

extension HubClient {
    /// Which files `format` needs from `model`, or why it has none of them.
    public static func files(for format: ModelFormat, in model: HubModel, repo: String) throws(HubError) -> [String] {
        let names = model.files.map(\.name)
        switch format {
        case .gguf(let file?):
            guard names.contains(file) else {
                throw .noSuchGGUF(repo: repo, file: file, available: names.filter { $0.lowercased().hasSuffix(".gguf") })
            }
            return splitParts(of: file, in: names)
        case .gguf(nil):
            guard let file = chooseGGUF(names) else { throw .noGGUF(repo: repo) }
            return splitParts(of: file, in: names)
        case .checkpoint:
            return checkpointFiles(names)
        }
    }

    /// All parts of a split GGUF file (`x-00001-of-00003.gguf`), or the file alone.
    static func splitParts(of file: String, in names: [String]) -> [String] {
        guard let range = file.range(of: #"-00001-of-\d{5}\.gguf$"#, options: .regularExpression) else { return [file] }
        let stem = file[..<range.lowerBound]
        return names.filter { $0.hasPrefix(stem) && $0.range(of: #"-\d{5}-of-\d{5}\.gguf$"#, options: .regularExpression) != nil }.sorted()
    }

    /// Checks that `reference` names a model that exists, that `token` can read, and that has the files
    /// `format` needs. Network trouble gives `.skipped`, never a refusal.
    public func check(repo: String, format: ModelFormat, token: String?, timeout: Duration = .seconds(5)) async -> HubCheck {
        let model: HubModel
        let files: [String]
        do {
            model = try await self.model(repo, token: token, timeout: timeout)
            files = try Self.files(for: format, in: model, repo: repo)
            if model.gated, let first = files.first {
                try await checkAccess(repo: repo, revision: model.sha, file: first, token: token, timeout: timeout)
            }
        } catch {
            return Self.outcome(of: error)
        }
        return .ok(model, files: files)
    }

    /// What a failed check means for the create request.
    static func outcome(of error: HubError) -> HubCheck {
        switch error {
        case .unreachable, .unexpectedStatus: return .skipped(reason: error.description)
        case .gatedNeedsToken, .accessDenied: return .refused(field: "hf_token", message: error.description)
        default: return .refused(field: "hf_model_id", message: error.description)
        }
    }
}
