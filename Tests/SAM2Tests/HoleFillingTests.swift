import XCTest
import SAM2
import SAM2Tensor

/// `fill_hole_area`: background components (logits <= 0, 8-connected) of at most N pixels become
/// foreground with logit 0.1; larger ones, and foreground, are untouched.
final class HoleFillingTests: XCTestCase {
    func testSmallHolesFillLargeOnesStay() {
        let h = 12, w = 12
        var logits = [Float](repeating: 5, count: h * w)
        // A 2-pixel hole joined diagonally (one 8-connected component of 2 pixels).
        logits[2 * w + 2] = -1
        logits[3 * w + 3] = -2
        // A 3x3 hole (9 pixels).
        for y in 6..<9 { for x in 6..<9 { logits[y * w + x] = -3 } }
        let out = HoleFilling.fill(Tensor(shape: [h, w], data: logits), maxArea: 4).data
        XCTAssertEqual(out[2 * w + 2], 0.1)
        XCTAssertEqual(out[3 * w + 3], 0.1)
        for y in 6..<9 { for x in 6..<9 { XCTAssertEqual(out[y * w + x], -3) } }
        XCTAssertEqual(out[0], 5)
        // With a larger limit the 3x3 hole fills too; zero counts as background.
        var withZero = logits
        withZero[0] = 0
        let all = HoleFilling.fill(Tensor(shape: [h, w], data: withZero), maxArea: 9).data
        XCTAssertEqual(all[7 * w + 7], 0.1)
        XCTAssertEqual(all[0], 0.1)
    }
}
