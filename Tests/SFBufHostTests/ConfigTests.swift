import SFBufTestSupport
import Testing

@testable import SFBufHost

@Suite("Configuration")
struct ConfigTests {
  @Test("SFBUF_NSFBUFS values", arguments: ["1", "512", " 64 ", "32768"])
  func good(value: String) throws {
    let n = try #require(try SFBufPool.parseSlots(value))
    #expect(n == Int(value.trimmingCharacters(in: " ")))
  }

  @Test(
    "bad SFBUF_NSFBUFS values are clear errors",
    arguments: ["", "abc", "0", "-3", "1e3", "32769", "99999999999999999999"])
  func bad(value: String) {
    #expect(throws: SFBufConfigError.outOfRange(setting: "SFBUF_NSFBUFS", value: "'\(value)'")) {
      try SFBufPool.parseSlots(value)
    }
  }

  @Test("unset means the default")
  func unset() throws {
    #expect(try SFBufPool.parseSlots(nil) == nil)
  }

  @Test("window size out of range")
  func windowRange() {
    #expect(throws: SFBufConfigError.self) { try SFBufPool(nsfbufs: 0) }
    #expect(throws: SFBufConfigError.self) { try SFBufPool(nsfbufs: SFBufPool.maxSlots + 1) }
  }

  @Test("the error names the setting")
  func message() {
    let e = SFBufConfigError.outOfRange(setting: "SFBUF_NSFBUFS", value: "'abc'")
    #expect(e.description.contains("SFBUF_NSFBUFS"))
  }
}

extension String {
  fileprivate func trimmingCharacters(in c: Character) -> String {
    String(drop { $0 == c }.reversed().drop { $0 == c }.reversed())
  }
}
