import Foundation

// What the tool prints: JSON through Codable, one number formatter, one table formatter.

/// Prints `value` as one JSON object on standard output: `JSONEncoder`, keys sorted, so
/// that the same figures always print the same text. Keys are camelCase in every command;
/// each document has a `schema` field naming its shape and version; a missing figure is
/// `null` (the fields are optionals), never `nan`.
func printJSON<T: Encodable>(_ value: T) throws {
  let encoder = JSONEncoder()
  encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
  encoder.nonConformingFloatEncodingStrategy = .throw
  let data = try encoder.encode(value)
  print(String(decoding: data, as: UTF8.self))
}

/// `x` when it is a finite number, else nil (JSON `null`).
func finite(_ x: Double?) -> Double? {
  guard let x, x.isFinite else { return nil }
  return x
}

/// `x` with `digits` decimals (`%.*f`), or `n/a` when it is not a finite number.
func fmt(_ x: Double, _ digits: Int = 2) -> String {
  guard x.isFinite else { return "n/a" }
  return String(format: "%.\(max(0, digits))f", x)
}

/// `x` with `digits` decimals, or `missing` when nil or not finite.
func fmt(_ x: Double?, _ digits: Int = 2, missing: String) -> String {
  guard let x, x.isFinite else { return missing }
  return fmt(x, digits)
}

/// Rows of cells under a header, each column as wide as its widest cell, two spaces
/// apart; the first `leftColumns` columns aligned left (names), the others right
/// (figures).
struct Table {
  var header: [String]
  var leftColumns: Int
  var rows: [[String]] = []

  init(_ header: [String], leftColumns: Int = 1) {
    self.header = header
    self.leftColumns = leftColumns
  }

  mutating func add(_ row: [String]) {
    precondition(row.count == header.count, "a table row has \(header.count) cells")
    rows.append(row)
  }

  /// The table as lines of text.
  var lines: [String] {
    let all = [header] + rows
    var widths = header.map(\.count)
    for row in all {
      for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) }
    }
    return all.map { row in
      row.enumerated().map { i, cell in
        let pad = String(repeating: " ", count: widths[i] - cell.count)
        return i < leftColumns ? cell + pad : pad + cell
      }.joined(separator: "  ").trimmingTrailingSpaces()
    }
  }

  func print() {
    for line in lines { Swift.print(line) }
  }
}

extension String {
  fileprivate func trimmingTrailingSpaces() -> String {
    var s = self
    while s.last == " " { s.removeLast() }
    return s
  }
}

/// A figure that may be missing, encoded as JSON `null` then (a plain optional property
/// would be left out of the object instead); not-finite numbers count as missing.
struct Figure<Value: Encodable>: Encodable {
  var value: Value?
  init(_ value: Value?) { self.value = value }
  func encode(to encoder: any Encoder) throws {
    var c = encoder.singleValueContainer()
    if let d = value as? Double, !d.isFinite {
      try c.encodeNil()
    } else if let value {
      try c.encode(value)
    } else {
      try c.encodeNil()
    }
  }
}
