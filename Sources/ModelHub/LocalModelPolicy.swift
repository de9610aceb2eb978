import Foundation

/// Who may serve a model file already on this machine, and from where. Local paths are an operator's
/// feature: a tenant who could name any path could read another organisation's downloaded (gated) models
/// out of the Hub cache, or probe the server's files.
public struct LocalModelPolicy: Sendable, Equatable {
    /// Tenants (keys without admin rights) may name local files at all.
    public var allowTenants = false
    /// Folders local files must resolve into (symlinks followed). Empty: tenants may not use local files;
    /// admins may name any `.gguf` file.
    public var directories: [String] = []
    /// The Hub download cache: never a tenant's local path, whatever the folders say.
    public var hubCacheDir: String?

    public init(allowTenants: Bool = false, directories: [String] = [], hubCacheDir: String? = nil) {
        self.allowTenants = allowTenants
        self.directories = directories
        self.hubCacheDir = hubCacheDir
    }

    /// Nil when the caller may serve `path`; otherwise why not, in a sentence for a 422.
    public func refusal(path: String, isAdmin: Bool) -> String? {
        guard isAdmin || allowTenants else {
            return "local model paths are an operator's feature and are off for API keys without admin rights; name a Hugging Face model instead"
        }
        guard path.lowercased().hasSuffix(".gguf") else { return "a local model must be a .gguf file" }
        guard !path.split(separator: "/").contains("..") else { return "a local model path may not contain '..'" }
        let resolved = Self.resolve(path)
        let roots = directories.map(Self.resolve)
        if !isAdmin {
            guard !roots.isEmpty else { return "no local model folders are configured on this server (local_model_dirs)" }
            if let cache = hubCacheDir.map(Self.resolve), Self.isInside(resolved, cache) {
                return "the model download cache cannot be served as a local path; name the Hub model instead"
            }
        }
        if !roots.isEmpty, !roots.contains(where: { Self.isInside(resolved, $0) }) {
            return "a local model must be inside one of the configured folders: \(directories.joined(separator: ", "))"
        }
        return nil
    }

    /// The path with symlinks resolved (of its folder, when the file itself does not exist yet).
    static func resolve(_ path: String) -> String {
        let url = URL(fileURLWithPath: (path as NSString).expandingTildeInPath)
        if FileManager.default.fileExists(atPath: url.path) { return url.resolvingSymlinksInPath().standardizedFileURL.path }
        let folder = url.deletingLastPathComponent().resolvingSymlinksInPath().standardizedFileURL.path
        return (folder as NSString).appendingPathComponent(url.lastPathComponent)
    }

    static func isInside(_ path: String, _ root: String) -> Bool {
        let base = root.hasSuffix("/") ? root : root + "/"
        return path.hasPrefix(base)
    }
}
