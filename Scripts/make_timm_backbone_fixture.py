#!/usr/bin/env python3
"""Golden outputs of EdgeTAM's image-encoder trunk (`TimmBackbone`: timm's RepViT built with
features_only=True, out_indices=(0, 1, 2, 3)) for sam2's parity test.

Weights are seeded random in the official way (`randomize` of ../shared/reference/make_fixture.py);
batch-norm running statistics are then set from the trunk's own batch statistics on the fixture's
frame (a forward pass in train mode with momentum 1), since statistics of 0/1 blow RepViT's
activations up on real images. Writes OUT/weights.safetensors (keys `image_encoder.trunk.body.*`,
num_batches_tracked as int64 like the official checkpoint), OUT/data.safetensors (`image`
[3,S,S] as the model consumes it, `stage0..3` outputs) and OUT/spec.json.

    python3 make_timm_backbone_fixture.py --out DIR [--variant m1|tiny] [--size 256] [--seed 1]

`--variant tiny` is repvit_m1's architecture at a quarter of its widths and with fewer blocks (a
small committed fixture); `m1` is repvit_m1 itself.
"""
import argparse, json, os, sys

import numpy as np
import torch
import timm
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../shared/reference"))
from make_fixture import randomize  # noqa: E402

VARIANTS = {
    "m1": dict(embed_dim=(48, 96, 192, 384), depth=(2, 2, 14, 2)),
    "tiny": dict(embed_dim=(16, 32, 48, 64), depth=(2, 2, 3, 2)),
}


def frame(path, size):
    """Frame 0 of a video, preprocessed like the SAM 2 loader (PIL bicubic, ImageNet norm)."""
    import subprocess
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-frames:v", "1", "-f", "image2pipe",
                          "-vcodec", "png", "-"], check=True, capture_output=True).stdout
    import io
    img = Image.open(io.BytesIO(raw)).convert("RGB").resize((size, size))
    x = torch.from_numpy(np.asarray(img).astype(np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return (x - mean) / std


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--variant", default="tiny", choices=sorted(VARIANTS))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--video", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                     "../Tests/SAM2Tests/Fixtures/synth.mp4"))
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    v = VARIANTS[a.variant]
    # EdgeTAM's TimmBackbone: create_model(name, pretrained=..., in_chans=3, features_only=True, out_indices)
    body = timm.create_model("repvit_m1", pretrained=False, in_chans=3, features_only=True,
                             out_indices=(0, 1, 2, 3), **({} if a.variant == "m1" else v))
    randomize(body, a.seed)
    x = frame(a.video, a.size)[None]
    with torch.no_grad():
        for m in body.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 1.0
        body.train()
        body(x)
        body.eval()
        outs = body(x)
    os.makedirs(a.out, exist_ok=True)
    weights = {f"image_encoder.trunk.body.{k}": t.contiguous() for k, t in body.state_dict().items()}
    save_file(weights, os.path.join(a.out, "weights.safetensors"))
    data = {"image": x[0].contiguous()}
    for i, o in enumerate(outs):
        data[f"stage{i}"] = o[0].contiguous()
    save_file(data, os.path.join(a.out, "data.safetensors"))
    json.dump({"variant": a.variant, "embed_dim": v["embed_dim"], "depth": v["depth"], "size": a.size,
               "seed": a.seed, "timm": timm.__version__, "torch": torch.__version__,
               "shapes": [list(o.shape[1:]) for o in outs]},
              open(os.path.join(a.out, "spec.json"), "w"), indent=1)
    print("stages:", [tuple(o.shape) for o in outs], "std:", [round(float(o.std()), 3) for o in outs])


if __name__ == "__main__":
    main()
