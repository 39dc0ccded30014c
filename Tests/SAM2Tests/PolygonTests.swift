import Foundation
import XCTest
import SAM2
import SAM2Video

/// Mask borders against OpenCV's `findContours` (Fixtures/polygons.json, made by
/// Scripts/make_polygon_fixture.py), and the simplification's guarantees.
final class PolygonTests: XCTestCase {
    struct Golden: Decodable {
        struct Case: Decodable { let width: Int, height: Int, bits: String, contours: [[[Int]]] }
        let cases: [Case]
    }

    static func golden() throws -> [(BinaryMask, [[[Int]]])] {
        let url = URL(fileURLWithPath: TestPaths.committedFixtureNamed("polygons.json"))
        return try JSONDecoder().decode(Golden.self, from: Data(contentsOf: url)).cases.map { c in
            (BinaryMask(width: c.width, height: c.height, bits: c.bits.map { $0 == "1" ? 1 : 0 }), c.contours)
        }
    }

    func testOuterBordersEqualOpenCV() throws {
        let cases = try Self.golden()
        XCTAssertEqual(cases.count, 40)
        var points = 0
        for (i, (mask, expected)) in cases.enumerated() {
            let got = Polygons.contours(of: mask).map { $0.map { [$0.x, $0.y] } }
            XCTAssertEqual(got, expected, "case \(i) (\(mask.width)x\(mask.height))")
            points += expected.reduce(0) { $0 + $1.count }
        }
        XCTAssertGreaterThan(points, 1000)  // the fixture really exercises the tracer
    }

    func testSimplifiedOutlineStaysWithinTolerance() throws {
        for (mask, _) in try Self.golden() {
            for border in Polygons.contours(of: mask) where border.count > 2 {
                for tolerance in [0.0, 0.75, 2.0] {
                    let simple = Polygons.simplify(border, tolerance: tolerance)
                    XCTAssertLessThanOrEqual(simple.count, border.count)
                    // Kept points are border points, in the border's order.
                    var at = 0
                    for p in simple {
                        guard let k = border[at...].firstIndex(where: { $0 == p }) else { return XCTFail("\(p) not on the border in order") }
                        at = k + 1
                    }
                    for p in border {
                        XCTAssertLessThanOrEqual(Self.distance(p, toClosed: simple), tolerance + 1e-9)
                    }
                }
            }
        }
        // A rectangle's border at tolerance 0 is its four corners.
        var rect = BinaryMask(width: 8, height: 6)
        for y in 1...4 { for x in 2...6 { rect.bits[y * 8 + x] = 1 } }
        let corners = Polygons.simplify(Polygons.contours(of: rect)[0], tolerance: 0).map { [$0.x, $0.y] }
        XCTAssertEqual(corners, [[2, 1], [2, 4], [6, 4], [6, 1]])
    }

    func testYOLOLines() {
        var rect = BinaryMask(width: 10, height: 4)
        for y in 1...2 { for x in 0...4 { rect.bits[y * 10 + x] = 1 } }
        rect.bits[3 * 10 + 9] = 1  // a single pixel: no polygon
        XCTAssertEqual(Polygons.yoloLines(rect, classIndex: 3, tolerance: 0),
                       ["3 0.000000 0.250000 0.000000 0.500000 0.400000 0.500000 0.400000 0.250000"])
        XCTAssertEqual(Polygons.yoloLines(BinaryMask(width: 5, height: 5), classIndex: 0, tolerance: 1), [])
    }

    static func distance(_ p: Polygons.Point, toClosed polygon: [Polygons.Point]) -> Double {
        if polygon.count == 1 { return hypot(Double(p.x - polygon[0].x), Double(p.y - polygon[0].y)) }
        return polygon.indices.map { i -> Double in
            let a = polygon[i], b = polygon[(i + 1) % polygon.count]
            let (px, py) = (Double(p.x - a.x), Double(p.y - a.y)), (dx, dy) = (Double(b.x - a.x), Double(b.y - a.y))
            let len2 = dx * dx + dy * dy
            let t = len2 > 0 ? max(0, min(1, (px * dx + py * dy) / len2)) : 0
            return hypot(px - t * dx, py - t * dy)
        }.min()!
    }
}
