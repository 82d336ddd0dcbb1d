// Small SVG charts written by hand: line charts (linear x, linear or log y) and grouped bars,
// for the figures `sfbuf bench sweep`, `sfbuf bench pages --svg` and `sfbuf sim --svg` draw.
// No fonts are embedded and no script is used: a chart is a few kilobytes of plain SVG.

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A point of a line series.
public struct ChartPoint: Sendable, Equatable {
  /// The x value, in the panel's x units.
  public var x: Double
  /// The y value, in the panel's y units (positive on a log axis).
  public var y: Double

  /// A point at (`x`, `y`).
  public init(x: Double, y: Double) {
    self.x = x
    self.y = y
  }
}

/// One axis of a panel: its label, its scale, and how its ticks are written.
public struct ChartAxis: Sendable {
  /// Linear or base-10 logarithmic.
  public enum Kind: Sendable, Equatable {
    /// Positions proportional to the value.
    case linear
    /// Positions proportional to the value's base-10 logarithm; values must be positive.
    case log
  }

  /// The axis title, written beside the axis.
  public var label: String
  /// The values at the two ends of the axis.
  public var domain: ClosedRange<Double>
  /// Linear or logarithmic.
  public var kind: Kind
  /// The tick values; on a log axis, by default, the powers of ten in the domain.
  public var ticks: [Double]
  /// How a tick value is written.
  public var tickLabel: @Sendable (Double) -> String

  /// An axis over `domain`.
  ///
  /// - Precondition: the domain is not a single value; on a log axis it is positive.
  public init(
    label: String, domain: ClosedRange<Double>, kind: Kind = .linear, ticks: [Double]? = nil,
    tickLabel: @escaping @Sendable (Double) -> String = { chartNumber($0) }
  ) {
    precondition(domain.lowerBound < domain.upperBound, "an axis domain needs two values")
    precondition(kind == .linear || domain.lowerBound > 0, "a log axis needs a positive domain")
    self.label = label
    self.domain = domain
    self.kind = kind
    self.tickLabel = tickLabel
    self.ticks = ticks ?? ChartAxis.defaultTicks(domain, kind)
  }

  /// The position of `value` between `start` (the domain's lower end) and `end` (its upper
  /// end). Values outside the domain map outside the span; on a log axis a value not above
  /// 0 maps to `start`.
  ///
  /// - Complexity: O(1).
  public func position(_ value: Double, start: Double, end: Double) -> Double {
    let f: (Double) -> Double = kind == .log ? { log10($0) } : { $0 }
    let v = kind == .log && value <= 0 ? domain.lowerBound : value
    let lo = f(domain.lowerBound)
    let hi = f(domain.upperBound)
    return start + (f(v) - lo) / (hi - lo) * (end - start)
  }

  /// A log domain from the power of ten at or below the smallest of `values` to the one at
  /// or above the largest (non-positive and non-finite values ignored; 1...10 if none).
  public static func decades(covering values: [Double]) -> ClosedRange<Double> {
    let v = values.filter { $0 > 0 && $0.isFinite }
    guard let lo = v.min(), let hi = v.max() else { return 1...10 }
    let a = pow10(floorLog10(lo))
    var b = pow10(floorLog10(hi))
    if b < hi { b *= 10 }
    return a...(b > a ? b : a * 10)
  }

  static func defaultTicks(_ d: ClosedRange<Double>, _ kind: Kind) -> [Double] {
    if kind == .log {
      var t: [Double] = []
      var p = pow10(floorLog10(d.lowerBound))
      while p <= d.upperBound * 1.000_001 {
        if p >= d.lowerBound * 0.999_999 { t.append(p) }
        p *= 10
      }
      return t
    }
    return (0...4).map { d.lowerBound + Double($0) * (d.upperBound - d.lowerBound) / 4 }
  }
}

/// A named line of points.
public struct ChartSeries: Sendable {
  /// The name in the legend, and the `data-series` attribute of its `polyline`.
  public var name: String
  /// The points, drawn in order of x.
  public var points: [ChartPoint]

  /// A series `name` through `points`.
  public init(_ name: String, _ points: [ChartPoint]) {
    self.name = name
    self.points = points
  }
}

/// A point marked on a line panel with a circle and a label (a crossover, say).
public struct ChartMark: Sendable {
  /// Where, in the panel's units.
  public var at: ChartPoint
  /// The text written beside it.
  public var label: String

  /// A mark at `at` labelled `label`.
  public init(at: ChartPoint, label: String) {
    self.at = at
    self.label = label
  }
}

/// One bar of a grouped bar panel: a value, and optionally the range it comes from.
public struct ChartBar: Sendable {
  /// The bar's height, in y units.
  public var value: Double
  /// The low and high ends of a whisker (min and max over trials, say), if any.
  public var range: ClosedRange<Double>?

  /// A bar of `value`, with a whisker over `range` if given.
  public init(_ value: Double, range: ClosedRange<Double>? = nil) {
    self.value = value
    self.range = range
  }
}

/// One panel: axes and either lines (with marks) or groups of bars.
public struct ChartPanel: Sendable {
  /// What the panel draws.
  public enum Content: Sendable {
    /// Lines; marks are drawn over them.
    case lines([ChartSeries], marks: [ChartMark])
    /// For each group (labelled on the x axis), one bar per series name (nil: no bar).
    case bars(groups: [String], series: [String], values: [[ChartBar?]])
  }

  /// The panel's title, above it.
  public var title: String
  /// The horizontal axis (its domain is unused for bars).
  public var x: ChartAxis
  /// The vertical axis.
  public var y: ChartAxis
  /// Lines or bars.
  public var content: Content
  /// The plot area's size in pixels (without the margins for ticks and labels).
  public var width: Double
  /// The plot area's height in pixels.
  public var height: Double

  /// A panel; the plot area is `width` by `height` pixels.
  public init(
    title: String, x: ChartAxis, y: ChartAxis, content: Content, width: Double = 300,
    height: Double = 200
  ) {
    self.title = title
    self.x = x
    self.y = y
    self.content = content
    self.width = width
    self.height = height
  }

  /// The series names, in order of first appearance.
  var seriesNames: [String] {
    switch content {
    case .lines(let s, _): s.map(\.name)
    case .bars(_, let s, _): s
    }
  }
}

/// A chart: a title, panels side by side, one legend for all of them, and caption lines
/// (the command that produced the figures, notes).
public struct SVGChart: Sendable {
  /// The title, at the top.
  public var title: String
  /// The panels, left to right.
  public var panels: [ChartPanel]
  /// Lines of text under the legend.
  public var caption: [String]
  /// Series drawn dashed (by name).
  public var dashed: Set<String>

  /// A chart of `panels`.
  public init(title: String, panels: [ChartPanel], caption: [String] = [], dashed: Set<String> = [])
  {
    self.title = title
    self.panels = panels
    self.caption = caption
    self.dashed = dashed
  }

  static let palette = [
    "#1b6ac9", "#d1495b", "#2e933c", "#e08a00", "#7a4fb5", "#00838f", "#6d6d6d", "#a0522d",
  ]
  static let left = 64.0
  static let right = 16.0
  static let top = 48.0
  static let bottom = 52.0

  /// Every series name, in order of first appearance; a name keeps its colour in all panels.
  public var legend: [String] {
    var seen: [String] = []
    for p in panels { for n in p.seriesNames where !seen.contains(n) { seen.append(n) } }
    return seen
  }

  /// The colour of series `name`.
  public func color(_ name: String) -> String {
    SVGChart.palette[(legend.firstIndex(of: name) ?? 0) % SVGChart.palette.count]
  }

  /// The chart as an SVG document (UTF-8 text, well-formed XML; all text escaped).
  ///
  /// - Complexity: O(points + bars).
  public func render() -> String {
    var body = ""
    var x0 = 0.0
    var panelHeight = 0.0
    for p in panels {
      body += renderPanel(p, originX: x0, originY: 0)
      x0 += SVGChart.left + p.width + SVGChart.right
      panelHeight = max(panelHeight, SVGChart.top + p.height + SVGChart.bottom)
    }
    let width = max(x0, 480)
    // The legend: one swatch and name per series, wrapped to the chart's width.
    var legendSVG = ""
    var lx = SVGChart.left
    var ly = panelHeight + 8
    for name in legend {
      let w = 44 + Double(name.count) * 7.5
      if lx + w > width {
        lx = SVGChart.left
        ly += 18
      }
      legendSVG +=
        "<line x1=\"\(n(lx))\" y1=\"\(n(ly))\" x2=\"\(n(lx + 22))\" y2=\"\(n(ly))\""
        + " stroke=\"\(color(name))\" stroke-width=\"3\"\(dash(name))/>"
        + text(lx + 27, ly + 4, name, "legend")
      lx += w
    }
    var cy = ly + 24
    var captionSVG = ""
    for line in caption {
      captionSVG += text(8, cy, line, "caption")
      cy += 15
    }
    let height = cy
    return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(n(width))\""
      + " height=\"\(n(height))\" viewBox=\"0 0 \(n(width)) \(n(height))\""
      + " font-family=\"sans-serif\" font-size=\"12\">\n"
      + "<style>.caption{font-size:11px;fill:#444}.title{font-size:15px;font-weight:bold}"
      + ".tick{font-size:10px;fill:#333}.grid{stroke:#ddd}.mark-label{font-size:11px}</style>\n"
      + "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      + text(8, 20, title, "title") + "\n" + body + legendSVG + "\n" + captionSVG + "</svg>\n"
  }

  func renderPanel(_ p: ChartPanel, originX: Double, originY: Double) -> String {
    let px = originX + SVGChart.left
    let py = originY + SVGChart.top
    let xAt = { (v: Double) in p.x.position(v, start: px, end: px + p.width) }
    let yAt = { (v: Double) in p.y.position(v, start: py + p.height, end: py) }
    var s = "<g class=\"panel\">"
    s += text(px, py - 10, p.title, "panel-title", weight: "bold")
    // Horizontal grid lines and y ticks.
    for t in p.y.ticks {
      let y = yAt(t)
      s += "<line class=\"grid\" x1=\"\(n(px))\" y1=\"\(n(y))\" x2=\"\(n(px + p.width))\""
      s += " y2=\"\(n(y))\"/>" + text(px - 4, y + 3, p.y.tickLabel(t), "tick", anchor: "end")
    }
    // Axes and their labels.
    s += "<path d=\"M\(n(px)) \(n(py))V\(n(py + p.height))H\(n(px + p.width))\""
    s += " fill=\"none\" stroke=\"black\"/>"
    s += text(px + p.width / 2, py + p.height + 36, p.x.label, "axis-label x", anchor: "middle")
    let ly = py + p.height / 2
    s += "<text class=\"axis-label y\" x=\"\(n(px - 48))\" y=\"\(n(ly))\" text-anchor=\"middle\""
    s += " transform=\"rotate(-90 \(n(px - 48)) \(n(ly)))\">\(xmlEscaped(p.y.label))</text>"
    switch p.content {
    case .lines(let series, let marks):
      for t in p.x.ticks {
        s += text(xAt(t), py + p.height + 14, p.x.tickLabel(t), "tick", anchor: "middle")
      }
      for ser in series {
        let pts = ser.points.sorted { $0.x < $1.x }.map { "\(n(xAt($0.x))),\(n(yAt($0.y)))" }
        s += "\n<polyline data-series=\"\(xmlEscaped(ser.name))\" points=\""
        s += pts.joined(separator: " ") + "\" fill=\"none\" stroke=\"\(color(ser.name))\""
        s += " stroke-width=\"2\"\(dash(ser.name))/>"
      }
      // Marks: a circle on the point, its label stacked in the panel's top right corner
      // (lines run low there when lower is better), and a leader line between them.
      for (i, m) in marks.enumerated() {
        let (x, y) = (xAt(m.at.x), yAt(m.at.y))
        let (lx, ly) = (px + p.width - 4, py + 14 + 15 * Double(i))
        s += "\n<g class=\"mark\"><circle cx=\"\(n(x))\" cy=\"\(n(y))\" r=\"5\" fill=\"none\""
        s += " stroke=\"black\" stroke-width=\"1.5\"/><line x1=\"\(n(x))\" y1=\"\(n(y - 5))\""
        s += " x2=\"\(n(lx))\" y2=\"\(n(ly + 3))\" stroke=\"#888\"/>"
        s += text(lx, ly, m.label, "mark-label", anchor: "end") + "</g>"
      }
    case .bars(let groups, let names, let values):
      let gw = p.width / Double(max(groups.count, 1))
      let bw = (gw - 8) / Double(max(names.count, 1))
      for (g, label) in groups.enumerated() {
        let gx = px + Double(g) * gw + 4
        s += text(gx + gw / 2 - 4, py + p.height + 14, label, "tick", anchor: "middle")
        for (k, name) in names.enumerated() {
          guard g < values.count, k < values[g].count, let bar = values[g][k] else { continue }
          let top = min(max(yAt(bar.value), py), py + p.height)
          let bx = gx + Double(k) * bw
          s += "\n<rect data-series=\"\(xmlEscaped(name))\" x=\"\(n(bx))\" y=\"\(n(top))\""
          s += " width=\"\(n(bw - 1))\" height=\"\(n(py + p.height - top))\""
          s += " fill=\"\(color(name))\"><title>\(xmlEscaped(name)): "
          s += "\(xmlEscaped(p.y.tickLabel(bar.value)))</title></rect>"
          if let r = bar.range {
            let cx = bx + (bw - 1) / 2
            s += "<line x1=\"\(n(cx))\" y1=\"\(n(yAt(r.lowerBound)))\" x2=\"\(n(cx))\""
            s += " y2=\"\(n(yAt(r.upperBound)))\" stroke=\"black\"/>"
          }
        }
      }
    }
    return s + "</g>\n"
  }

  func dash(_ name: String) -> String {
    dashed.contains(name) ? " stroke-dasharray=\"6 4\"" : ""
  }

  func text(
    _ x: Double, _ y: Double, _ s: String, _ cls: String, anchor: String = "start",
    weight: String? = nil
  ) -> String {
    "<text class=\"\(cls)\" x=\"\(n(x))\" y=\"\(n(y))\""
      + (anchor == "start" ? "" : " text-anchor=\"\(anchor)\"")
      + (weight.map { " font-weight=\"\($0)\"" } ?? "") + ">\(xmlEscaped(s))</text>"
  }

  func n(_ x: Double) -> String { chartNumber(x, digits: 1) }
}

/// Where line `a` crosses line `b`: the points where `a.y - b.y` changes sign, each line
/// taken as straight between its points (in log y when `logY`, so that the crossings are
/// where the drawn lines cross on a log axis), over the x range both lines cover.
///
/// Each line's points are sorted by x; a point where the two lines touch counts once.
/// Returns nothing when the lines do not cross (or do not overlap in x).
///
/// - Complexity: O((a + b) log (a + b)).
public func crossings(_ a: [ChartPoint], _ b: [ChartPoint], logY: Bool = true) -> [ChartPoint] {
  let f: (Double) -> Double = logY ? { log10($0) } : { $0 }
  let g: (Double) -> Double = logY ? { pow10($0) } : { $0 }
  let sa = a.sorted { $0.x < $1.x }
  let sb = b.sorted { $0.x < $1.x }
  guard let a0 = sa.first, let a1 = sa.last, let b0 = sb.first, let b1 = sb.last else {
    return []
  }
  let lo = max(a0.x, b0.x)
  let hi = min(a1.x, b1.x)
  guard lo <= hi else { return [] }
  func at(_ s: [ChartPoint], _ x: Double) -> Double {
    guard let i = s.firstIndex(where: { $0.x >= x }) else { return f(s.last!.y) }
    if i == 0 || s[i].x == x { return f(s[i].y) }
    let (p, q) = (s[i - 1], s[i])
    return f(p.y) + (x - p.x) / (q.x - p.x) * (f(q.y) - f(p.y))
  }
  var xs = (sa + sb).map(\.x).filter { $0 >= lo && $0 <= hi }
  xs = Array(Set(xs)).sorted()
  let d = xs.map { at(sa, $0) - at(sb, $0) }
  var out: [ChartPoint] = []
  for i in xs.indices {
    if d[i] == 0 {
      if out.last?.x != xs[i] { out.append(ChartPoint(x: xs[i], y: g(at(sa, xs[i])))) }
    } else if i + 1 < xs.count, d[i + 1] != 0, (d[i] < 0) != (d[i + 1] < 0) {
      let t = d[i] / (d[i] - d[i + 1])
      let x = xs[i] + t * (xs[i + 1] - xs[i])
      out.append(ChartPoint(x: x, y: g(at(sa, x))))
    }
  }
  return out
}

/// `s` with `&`, `<`, `>`, `"` and `'` replaced by XML entities (for text and attributes).
///
/// - Complexity: O(`s.count`).
public func xmlEscaped(_ s: String) -> String {
  var out = ""
  out.reserveCapacity(s.utf8.count)
  for c in s {
    switch c {
    case "&": out += "&amp;"
    case "<": out += "&lt;"
    case ">": out += "&gt;"
    case "\"": out += "&quot;"
    case "'": out += "&apos;"
    default: out.append(c)
    }
  }
  return out
}

/// `x` rounded to `digits` decimals, without trailing zeros ("12.5", "3", "-0.25"); "nan"
/// or "inf" when not finite. No Foundation.
///
/// - Complexity: O(digits).
public func chartNumber(_ x: Double, digits: Int = 2) -> String {
  guard x.isFinite else { return x.isNaN ? "nan" : "inf" }
  var scale = 1.0
  for _ in 0..<digits { scale *= 10 }
  let r = (abs(x) * scale).rounded()
  guard r < 1e18 else { return String(x) }
  let i = UInt64(r)
  let whole = i / UInt64(scale)
  var frac = String(i % UInt64(scale))
  frac = String(repeating: "0", count: max(0, digits - frac.count)) + frac
  while frac.hasSuffix("0") { frac.removeLast() }
  let sign = x < 0 && i != 0 ? "-" : ""
  return sign + String(whole) + (frac.isEmpty ? "" : "." + frac)
}

/// A duration in nanoseconds as "5 ns", "750 ns", "1.5 µs", "12 µs", "1.2 ms".
public func chartNanoseconds(_ ns: Double) -> String {
  if ns >= 1e6 { return chartNumber(ns / 1e6, digits: ns >= 1e7 ? 0 : 1) + " ms" }
  if ns >= 1e3 { return chartNumber(ns / 1e3, digits: ns >= 1e4 ? 0 : 1) + " µs" }
  return chartNumber(ns, digits: ns >= 10 ? 0 : 1) + " ns"
}

func floorLog10(_ x: Double) -> Int { Int(log10(x * (1 + 1e-12)).rounded(.down)) }

func pow10(_ e: Int) -> Double { pow(10, Double(e)) }

func pow10(_ x: Double) -> Double { pow(10, x) }
