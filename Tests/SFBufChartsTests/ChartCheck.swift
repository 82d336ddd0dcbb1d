import Foundation
import Testing

#if canImport(FoundationXML)
  import FoundationXML
#endif

/// What a chart must be: well-formed XML with an `svg` root, every expected axis label in a
/// `text` of class `axis-label`, and every expected series drawn (`data-series`) the expected
/// number of times. Returns the problems found, each a sentence; none for a good chart.
func chartProblems(
  _ svg: String, axisLabels: [String], series: [String], perSeries: Int = 1
) -> [String] {
  let doc = ParsedSVG(svg)
  if let error = doc.error { return ["not well-formed XML: \(error)"] }
  var problems: [String] = []
  if doc.root != "svg" { problems.append("the root element is \(doc.root ?? "missing"), not svg") }
  for label in axisLabels where !doc.texts(class: "axis-label").contains(label) {
    problems.append("no axis label '\(label)'")
  }
  for name in series {
    let n = doc.elements.filter { $0.attributes["data-series"] == name }.count
    if n != perSeries { problems.append("series '\(name)' drawn \(n) times, not \(perSeries)") }
  }
  return problems
}

/// An SVG document parsed with Foundation's XMLParser: its elements in order, with their
/// attributes and text, or the parser's error.
final class ParsedSVG: NSObject, XMLParserDelegate {
  struct Element {
    var name: String
    var attributes: [String: String]
    var text = ""
  }
  var elements: [Element] = []
  var root: String?
  var error: String?
  private var open: [Int] = []

  init(_ svg: String) {
    super.init()
    let parser = XMLParser(data: Data(svg.utf8))
    parser.delegate = self
    if !parser.parse() {
      error = parser.parserError.map { "\($0)" } ?? "parse failed"
    }
  }

  /// The text of every element whose class list contains `cls`.
  func texts(class cls: String) -> [String] {
    elements.filter {
      ($0.attributes["class"] ?? "").split(separator: " ").contains(Substring(cls))
    }
    .map(\.text)
  }

  func parser(
    _ parser: XMLParser, didStartElement name: String, namespaceURI: String?,
    qualifiedName: String?, attributes: [String: String] = [:]
  ) {
    if root == nil { root = name }
    open.append(elements.count)
    elements.append(Element(name: name, attributes: attributes))
  }

  func parser(
    _ parser: XMLParser, didEndElement name: String, namespaceURI: String?,
    qualifiedName: String?
  ) {
    open.removeLast()
  }

  func parser(_ parser: XMLParser, foundCharacters string: String) {
    if let i = open.last { elements[i].text += string }
  }
}
