import Foundation
import ModelHub
import Testing

@Suite("Model references and file choice")
struct ModelHubTests {
    @Test("a model id names a Hub repository, one file in it, or a local path")
    func references() {
        #expect(ModelReference("Qwen/Qwen2.5-0.5B-Instruct-GGUF") == .hub(repo: "Qwen/Qwen2.5-0.5B-Instruct-GGUF", file: nil))
        #expect(ModelReference("Qwen/Qwen2.5-0.5B-Instruct-GGUF:qwen2.5-0.5b-instruct-q8_0.gguf")
            == .hub(repo: "Qwen/Qwen2.5-0.5B-Instruct-GGUF", file: "qwen2.5-0.5b-instruct-q8_0.gguf"))
        #expect(ModelReference("file:///models/tiny.gguf") == .local(path: "/models/tiny.gguf"))
        #expect(ModelReference("/models/tiny.gguf") == .local(path: "/models/tiny.gguf"))
    }

    @Test("GGUF: Q4_K_M first, then the other quantizations in order; projectors skipped; a split file by its first part")
    func ggufChoice() {
        #expect(chooseGGUF(["README.md", "m-Q8_0.gguf", "m-Q4_K_M.gguf", "m-f16.gguf"]) == "m-Q4_K_M.gguf")
        #expect(chooseGGUF(["m-q8_0.gguf", "m-f16.gguf", "mmproj-q4_k_m.gguf"]) == "m-q8_0.gguf")
        #expect(chooseGGUF(["m-q4_k_m-00002-of-00002.gguf", "m-q4_k_m-00001-of-00002.gguf"]) == "m-q4_k_m-00001-of-00002.gguf")
        #expect(chooseGGUF(["config.json", "model.safetensors"]) == nil)
        #expect(chooseGGUF(["weird.gguf"]) == "weird.gguf")
    }

    @Test("checkpoints: config and tokenizer files plus one weight format, safetensors preferred")
    func checkpoint() {
        let repo = [
            ".gitattributes", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
            "pytorch_model.bin", "original/consolidated.00.pth", "model-q4.gguf",
        ]
        #expect(checkpointFiles(repo) == [
            "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json",
            "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        ])
        #expect(checkpointFiles(["config.json", "pytorch_model.bin"]) == ["config.json", "pytorch_model.bin"])
    }

    @Test("a named file must exist in the repository; split GGUF files come with all their parts")
    func filesForFormat() throws {
        let names = ["a-q4_k_m-00001-of-00002.gguf", "a-q4_k_m-00002-of-00002.gguf", "b-q8_0.gguf"]
        let model = HubModel(id: "o/r", sha: "abc", gated: false, files: names.map { HubFile(name: $0, size: 1, sha256: nil, blobId: nil) })
        #expect(try HubClient.files(for: .gguf(file: nil), in: model, repo: "o/r") == ["a-q4_k_m-00001-of-00002.gguf", "a-q4_k_m-00002-of-00002.gguf"])
        #expect(try HubClient.files(for: .gguf(file: "b-q8_0.gguf"), in: model, repo: "o/r") == ["b-q8_0.gguf"])
        #expect(throws: HubError.noSuchGGUF(repo: "o/r", file: "c.gguf", available: names)) { try HubClient.files(for: .gguf(file: "c.gguf"), in: model, repo: "o/r") }
    }
}
