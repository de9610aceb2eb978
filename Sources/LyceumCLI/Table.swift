import Foundation

/// Renders rows as an aligned plain-text table, for people; `--json` is for scripts.
func table(_ header: [String], _ rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for row in rows {
        for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
    }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }
    return ([line(header)] + rows.map(line)).joined(separator: "\n")
}

/// Pretty-prints a JSON answer as it came, for `--json`.
func printJSON(_ data: Data) {
    if let object = try? JSONSerialization.jsonObject(with: data),
        let pretty = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    {
        print(String(decoding: pretty, as: UTF8.self))
    } else {
        print(String(decoding: data, as: UTF8.self))
    }
}

/// "2026-11-24T16:30:00.123Z" shown as "2026-11-24 16:30:00".
func shortTime(_ iso: String?) -> String {
    guard let iso else { return "-" }
    return String(iso.replacingOccurrences(of: "T", with: " ").prefix(19))
}

var isTerminal: Bool { isatty(1) == 1 }
