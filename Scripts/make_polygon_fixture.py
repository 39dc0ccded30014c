"""Golden outer borders from OpenCV for Tests/SAM2Tests/Fixtures/polygons.json.

    python3 Scripts/make_polygon_fixture.py > Tests/SAM2Tests/Fixtures/polygons.json

Seeded random masks (blobs, speckle, rings with islands, pieces on the image edge); for each,
`cv2.findContours(mask, RETR_EXTERNAL, CHAIN_APPROX_NONE)` as point lists. Needs numpy and
opencv-python-headless.
"""
import json
import cv2
import numpy as np

rng = np.random.default_rng(2026)
cases = []
for i in range(40):
    h, w = int(rng.integers(1, 28)), int(rng.integers(1, 28))
    kind = i % 4
    if kind == 0:    # speckle
        m = (rng.random((h, w)) < 0.35).astype(np.uint8)
    elif kind == 1:  # smoothed blobs
        m = (cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (5, 5), 0) > 0.5).astype(np.uint8)
    elif kind == 2:  # rectangles, some on the edge, some inside others' holes
        m = np.zeros((h, w), np.uint8)
        for _ in range(4):
            y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
            y1, x1 = y0 + int(rng.integers(1, 10)), x0 + int(rng.integers(1, 10))
            m[y0:y1, x0:x1] = 1 - m[y0:y1, x0:x1]
    else:            # dense noise: many touching diagonals
        m = (rng.random((h, w)) < 0.6).astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cases.append({"width": w, "height": h, "bits": "".join(str(int(b)) for b in m.reshape(-1)),
                  "contours": [c.reshape(-1, 2).tolist() for c in contours]})
print(json.dumps({"opencv": cv2.__version__, "cases": cases}))
