import LyceumCLI

@main
struct Entrypoint {
    static func main() async {
        await Lyceum.main()
    }
}
