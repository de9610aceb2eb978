import Crypto
import Foundation
import InferenceCore
#if canImport(Glibc)
import Glibc
#endif

/// API keys: `lk_` and 40 random base62 characters, stored only as their SHA-256.
public enum APIKeys {
    private static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

    public static func generate() -> String {
        var rng = SystemRandomNumberGenerator()
        return "lk_" + String((0..<40).map { _ in alphabet[Int(rng.next(upperBound: UInt(alphabet.count)))] })
    }

    public static func hash(_ key: String) -> String {
        hexString(SHA256.hash(data: Data(key.utf8)))
    }

    /// The first characters of a key, safe to show and to log.
    public static func prefix(_ key: String) -> String { String(key.prefix(7)) }
}

/// Seals secrets (the gated-model `hf_token`) at rest with AES-GCM under a key kept in the data directory (0600).
public struct SecretSealer: Sendable {
    private let key: SymmetricKey

    public init(key: SymmetricKey) { self.key = key }

    /// Loads the key file, creating it with mode 0600 on first use.
    public init(keyFile: String) throws {
        let fm = FileManager.default
        if let data = fm.contents(atPath: keyFile), data.count == 32 {
            key = SymmetricKey(data: data)
            return
        }
        // Written whole under a temporary name, then linked into place: of instances sharing the file and
        // starting at once, exactly one key wins and every one of them uses it.
        let new = SymmetricKey(size: .bits256)
        let data = new.withUnsafeBytes { Data($0) }
        let temporary = "\(keyFile).\(ProcessInfo.processInfo.processIdentifier).\(UUID().uuidString.prefix(8))"
        guard fm.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o600]) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: keyFile])
        }
        defer { unlink(temporary) }
        if link(temporary, keyFile) == 0 {
            key = new
            return
        }
        guard errno == EEXIST, let existing = fm.contents(atPath: keyFile), existing.count == 32 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: keyFile])
        }
        key = SymmetricKey(data: existing)
    }

    public func seal(_ secret: String) throws -> Data {
        guard let combined = try AES.GCM.seal(Data(secret.utf8), using: key).combined else {
            throw CocoaError(.coderInvalidValue)
        }
        return combined
    }

    public func open(_ sealed: Data) throws -> String {
        let box = try AES.GCM.SealedBox(combined: sealed)
        return String(decoding: try AES.GCM.open(box, using: key), as: UTF8.self)
    }
}
