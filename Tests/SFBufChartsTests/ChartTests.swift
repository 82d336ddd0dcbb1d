import Foundation
import SFBufCharts
import Testing

/// The SVG writer: well-formed XML with escaped text, labelled axes, one line per series in
/// each panel, a log axis that puts values where they belong, and crossings found (or not)
/// on synthetic lines. Each check is also fed the broken chart it exists to catch.
@Suite("SVG charts")
struct ChartTests {
  /// Two panels of three lines each, with labels that need escaping and a crossing marked.
  static func sample(label: String = "hit rate < 100 % & \"more\"") -> SVGChart {
    let y = ChartAxis(
      label: "ns per page (log)", domain: 10...10_000, kind: .log, tickLabel: chartNanoseconds)
    let x = ChartAxis(label: label, domain: 0...1)
    let lines = [
      ChartSeries("direct <map>", [ChartPoint(x: 0, y: 20), ChartPoint(x: 1, y: 20)]),
      ChartSeries("pread", [ChartPoint(x: 0, y: 700), ChartPoint(x: 1, y: 700)]),
      ChartSeries(
        "window", [ChartPoint(x: 0.5, y: 100), ChartPoint(x: 0, y: 8000), ChartPoint(x: 1, y: 20)]),
    ]
    let mark = crossings(lines[2].points, lines[1].points).map {
      ChartMark(at: $0, label: "window = pread at \(chartNumber($0.x * 100, digits: 0)) %")
    }
    return SVGChart(
      title: "A & B <test>",
      panels: ["1 thread", "2 threads"].map {
        ChartPanel(title: $0, x: x, y: y, content: .lines(lines, marks: mark))
      },
      caption: ["sfbuf bench sweep --quick"], dashed: ["direct <map>"])
  }

  static let names = ["direct <map>", "pread", "window"]
  static let axes = ["hit rate < 100 % & \"more\"", "ns per page (log)"]

  @Test("a chart is well-formed XML with its axis labels and one line per series per panel")
  func wellFormed() throws {
    let svg = Self.sample().render()
    #expect(chartProblems(svg, axisLabels: Self.axes, series: Self.names, perSeries: 2) == [])
    #expect(svg.utf8.count < 8_000, "a two-panel chart should stay small: \(svg.utf8.count) bytes")
    let doc = ParsedSVG(svg)
    #expect(doc.texts(class: "title") == ["A & B <test>"])
    #expect(doc.texts(class: "legend") == Self.names)
    #expect(doc.texts(class: "mark-label").count == 2)
  }

  @Test("the checker catches an unescaped '<', a missing axis label and a missing series")
  func checkerCatchesBrokenCharts() throws {
    let svg = Self.sample().render()
    // An unescaped '<' in a label, as a writer that forgot xmlEscaped would produce.
    let unescaped = svg.replacingOccurrences(of: "hit rate &lt; 100", with: "hit rate < 100")
    #expect(unescaped != svg)
    let p1 = chartProblems(unescaped, axisLabels: Self.axes, series: Self.names, perSeries: 2)
    #expect(p1.count == 1 && p1[0].hasPrefix("not well-formed XML"), "\(p1)")
    // An unescaped '&'.
    let amp = svg.replacingOccurrences(of: "A &amp; B", with: "A & B")
    #expect(chartProblems(amp, axisLabels: [], series: [])[0].hasPrefix("not well-formed XML"))
    // A chart without its y label.
    let noY = Self.sample().render().replacingOccurrences(
      of: ">ns per page (log)</text>", with: "></text>")
    #expect(
      chartProblems(noY, axisLabels: Self.axes, series: Self.names, perSeries: 2)
        == ["no axis label 'ns per page (log)'"])
    // A chart whose pread line is missing in one panel.
    var chart = Self.sample()
    if case .lines(let s, let m) = chart.panels[1].content {
      chart.panels[1].content = .lines(s.filter { $0.name != "pread" }, marks: m)
    }
    #expect(
      chartProblems(chart.render(), axisLabels: Self.axes, series: Self.names, perSeries: 2)
        == ["series 'pread' drawn 1 times, not 2"])
  }

  @Test("text and attributes are escaped")
  func escaping() {
    #expect(xmlEscaped("a<b&c>\"d'") == "a&lt;b&amp;c&gt;&quot;d&apos;")
    #expect(xmlEscaped("µs, 100 %") == "µs, 100 %")
  }

  @Test("the log axis puts powers of ten a decade apart, and its ticks on them")
  func logScale() {
    let a = ChartAxis(label: "y", domain: 10...10_000, kind: .log)
    // Three decades over 300 pixels, upwards: 100 px a decade.
    #expect(abs(a.position(10, start: 300, end: 0) - 300) < 1e-9)
    #expect(abs(a.position(100, start: 300, end: 0) - 200) < 1e-9)
    #expect(abs(a.position(1000, start: 300, end: 0) - 100) < 1e-9)
    #expect(abs(a.position(10_000, start: 300, end: 0) - 0) < 1e-9)
    #expect(abs(a.position(316.227_766, start: 300, end: 0) - 150) < 1e-6)
    #expect(a.ticks == [10, 100, 1000, 10_000])
    #expect(ChartAxis.decades(covering: [5, 40_000, 0, .nan]) == 1...100_000)
    #expect(ChartAxis.decades(covering: [100, 1000]) == 100...1000)
    let l = ChartAxis(label: "x", domain: 0...1)
    #expect(abs(l.position(0.25, start: 64, end: 364) - 139) < 1e-9)
  }

  @Test("a line's points land at the coordinates of its values")
  func coordinates() throws {
    let doc = ParsedSVG(Self.sample().render())
    let line = try #require(doc.elements.first { $0.attributes["data-series"] == "window" })
    let points = (line.attributes["points"] ?? "").split(separator: " ").map {
      $0.split(separator: ",").map { Double($0)! }
    }
    // Plot area: 64 px left margin, 48 px top margin, 300 x 200 px; y over 3 decades.
    // Sorted by x: (0, 8000), (0.5, 100), (1, 20).
    let expected: [[Double]] = [
      [64, 48 + 200 - 200 * (log10(8000.0) - 1) / 3], [214, 48 + 200 - 200 / 3.0],
      [364, 48 + 200 - 200 * (log10(20.0) - 1) / 3],
    ]
    #expect(points.count == 3)
    for (p, e) in zip(points, expected) {
      #expect(abs(p[0] - e[0]) <= 0.05 && abs(p[1] - e[1]) <= 0.05, "\(p) should be \(e)")
    }
  }

  @Test("crossings: found where the lines cross on the log axis, absent where they do not")
  func crossingsOnSyntheticLines() {
    let flat = [ChartPoint(x: 0, y: 100), ChartPoint(x: 1, y: 100)]
    // From 1000 at x = 0.5 down to 10 at x = 1: log y passes 2 (100) halfway, at 0.75.
    let window = [ChartPoint(x: 1, y: 10), ChartPoint(x: 0, y: 1000), ChartPoint(x: 0.5, y: 1000)]
    let c = crossings(window, flat)
    #expect(c.count == 1)
    #expect(abs(c[0].x - 0.75) < 1e-9 && abs(c[0].y - 100) < 1e-9, "\(c)")
    // The same lines on a linear axis cross where 1000 - 1980 (x - 0.5) = 100.
    let lin = crossings(window, flat, logY: false)
    #expect(lin.count == 1 && abs(lin[0].x - (0.5 + 900 / 1980)) < 1e-9, "\(lin)")
    // Always above: no crossing.
    #expect(crossings([ChartPoint(x: 0, y: 5000), ChartPoint(x: 1, y: 200)], flat) == [])
    // Lines that do not overlap in x.
    #expect(crossings([ChartPoint(x: 2, y: 1), ChartPoint(x: 3, y: 1000)], flat) == [])
    // Touching at a shared point counts once.
    let touch = crossings(
      [ChartPoint(x: 0, y: 1000), ChartPoint(x: 0.5, y: 100), ChartPoint(x: 1, y: 10)], flat)
    #expect(touch == [ChartPoint(x: 0.5, y: 100)])
    // Two crossings.
    let twice = crossings(
      [ChartPoint(x: 0, y: 10), ChartPoint(x: 0.5, y: 1000), ChartPoint(x: 1, y: 10)], flat)
    #expect(twice.count == 2)
    #expect(crossings([], flat) == [])
  }

  @Test("numbers and durations are written short")
  func numbers() {
    #expect(chartNumber(12.5) == "12.5")
    #expect(chartNumber(3) == "3")
    #expect(chartNumber(-0.25) == "-0.25")
    #expect(chartNumber(0.0004) == "0")
    #expect(chartNumber(214.049_999, digits: 1) == "214")
    #expect(chartNumber(.nan) == "nan")
    #expect(chartNanoseconds(10) == "10 ns")
    #expect(chartNanoseconds(1500) == "1.5 µs")
    #expect(chartNanoseconds(100_000) == "100 µs")
  }
}
