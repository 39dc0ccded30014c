#!/usr/bin/env python3
"""Time the official SAM 2 image predictor and automatic mask generator (PyTorch, CPU, float32)
on the same work as `sam2 bench --image`:

  python bench_image_reference.py --checkpoint ckpt.pt --image photo.png [--batch DIR] \
      [--batch-count 100] [--clicks 21] [--points-per-side 32]

Builds the image model with build_sam2 (apply_postprocessing, as the official loaders do) from
configs/sam2.1/sam2.1_hiera_t.yaml (or --config). Prints set_image, the median click (predict with
one point: three masks at the image's resolution, the official defaults), SAM2AutomaticMaskGenerator
with its defaults at --points-per-side, and one box per image over a folder (PIL decode, set_image,
predict), in the RESULT lines `sam2 bench --image` prints.
"""
import argparse, os, resource, time
import numpy as np
import torch
from PIL import Image

torch.set_grad_enabled(False)
ap = argparse.ArgumentParser()
ap.add_argument("--config", default="configs/sam2.1/sam2.1_hiera_t.yaml")
ap.add_argument("--checkpoint")
ap.add_argument("--image", required=True)
ap.add_argument("--batch")
ap.add_argument("--batch-count", type=int, default=100)
ap.add_argument("--clicks", type=int, default=21)
ap.add_argument("--points-per-side", type=int, default=32)
ap.add_argument("--threads", type=int, default=os.cpu_count())
a = ap.parse_args()
torch.set_num_threads(a.threads)

from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
if not GlobalHydra.instance().is_initialized():
    initialize_config_module("sam2", version_base="1.2")
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

model = build_sam2(a.config, ckpt_path=a.checkpoint, device="cpu")
img = np.array(Image.open(a.image).convert("RGB"))
h, w = img.shape[:2]
p = SAM2ImagePredictor(model)
t = []
for _ in range(3):
    t0 = time.perf_counter(); p.set_image(img); t.append(time.perf_counter() - t0)
print(f"torch {torch.__version__} threads {torch.get_num_threads()}; image {w}x{h}")
print(f"set_image {np.median(t):.3f} s")
clicks = []
for i in range(a.clicks):
    x, y = w * (0.3 + 0.4 * (i % 7) / 6), h * (0.3 + 0.4 * (i % 5) / 4)
    t0 = time.perf_counter()
    p.predict(point_coords=np.array([[x, y]], np.float32), point_labels=np.array([1], np.int32))
    clicks.append(time.perf_counter() - t0)
print(f"RESULT click_ms={np.median(clicks) * 1000:.2f} (median of {len(clicks)}; 3 masks at {w}x{h})")
if a.points_per_side > 0:
    gen = SAM2AutomaticMaskGenerator(model, points_per_side=a.points_per_side)
    t0 = time.perf_counter(); n = len(gen.generate(img)); s = time.perf_counter() - t0
    print(f"RESULT everything_s={s:.2f} ({a.points_per_side}x{a.points_per_side} points, {n} masks)")
if a.batch:
    names = sorted(f for f in os.listdir(a.batch) if f.lower().rsplit(".", 1)[-1] in ("png", "jpg", "jpeg"))[: a.batch_count]
    t0 = time.perf_counter()
    for name in names:
        im = np.array(Image.open(os.path.join(a.batch, name)).convert("RGB"))
        p.set_image(im)
        bh, bw = im.shape[:2]
        p.predict(box=np.array([bw * 0.25, bh * 0.25, bw * 0.75, bh * 0.75], np.float32), multimask_output=False)
    s = time.perf_counter() - t0
    print(f"RESULT batch_images_per_s={len(names) / s:.3f} ({len(names)} images, one box each, {s:.2f} s)")
print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
