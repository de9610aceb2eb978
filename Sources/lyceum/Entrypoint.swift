import Foundation
import LyceumCLI
import NIOCore
import NIOPosix

/// Thin `main`: Swift concurrency runs on NIO's event loops (one pool of threads instead of two, so a
/// chunk passing from a replica's connection to a caller's does not switch threads twice), then the
/// command line is parsed and run. `LYCEUM_NIO_EXECUTOR=0` keeps the default executor, for comparison.
@main
struct Entrypoint {
    static func main() {
        if ProcessInfo.processInfo.environment["LYCEUM_NIO_EXECUTOR"] != "0" {
            NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        }
        Task {
            await Lyceum.main()
            exit(0)
        }
        dispatchMain()
    }
}
