#!/usr/bin/env python3
"""Golden outputs of the official EdgeTAM model for sam2's parity tests, in the format of
../shared/fixtures (see its README): runs ../shared/reference/make_fixture.py with EdgeTAM's
`sam2` package (facebookresearch/EdgeTAM, fetched beside this checkout) in place of SAM 2's.

    python3 make_edgetam_fixture.py --edgetam DIR --spec SPEC.json --out OUT
    python3 make_edgetam_fixture.py --edgetam DIR --image --spec SPEC.json --out OUT   # image predictor

With --image it runs ../shared/reference/make_image_fixture.py instead (SAM2ImagePredictor and the
automatic mask generator of EdgeTAM's package, unchanged from sam2's), with adaptations 1 and 2.

The session is driven by sam2 1.1.0's `sam2_video_predictor.py` (per-object inference state,
objects added at any time), loaded from the installed `sam2==1.1.0` package against EdgeTAM's
modules, because EdgeTAM ships sam2's legacy predictor (objects batched, and its perceiver fails
with two objects in a batch: EdgeTAM issue #15); on single-object sessions the two agree. The
adaptations, each needed only to make the two fit, are:
  1. timm.create_model(..., pretrained=False): the pretrained RepViT cannot be downloaded here;
     seeded random weights replace every parameter anyway.
  2. Batch-norm running statistics come from the trunk's own batch statistics on the fixture's
     frames (one forward pass in train mode, momentum None), as 0/1 blow RepViT's activations up.
  3. make_fixture.py wraps MemoryAttention.forward to run it in float32 on CPU; EdgeTAM's forward
     takes one more argument, num_spatial_mem, which the wrapper does not pass on: it is handed
     over through MemoryAttention.__call__ instead.
  4. sam2 1.1.0's _get_maskmem_pos_enc expands the cached memory position encoding as (B, C, H, W);
     the perceiver's is (B, N, C): EdgeTAM's own predictor expands by rank, and so does this one.
"""
import argparse, importlib.metadata, importlib.util, json, os, sys

import torch

here = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edgetam", required=True, help="a checkout of facebookresearch/EdgeTAM")
    ap.add_argument("--spec", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reference", default=os.path.join(here, "../../shared/reference"))
    ap.add_argument("--edgetam-predictor", action="store_true",
                    help="drive the session with EdgeTAM's own (legacy) predictor instead, to check that the two "
                         "agree on single-object sessions")
    ap.add_argument("--image", action="store_true", help="an image-predictor fixture (make_image_fixture.py's spec)")
    a = ap.parse_args()

    # sam2 1.1.0's video predictor, found before EdgeTAM's package shadows the name `sam2`.
    predictor_file = importlib.metadata.distribution("sam2").locate_file("sam2/sam2_video_predictor.py")
    version = importlib.metadata.version("sam2")
    if version != "1.1.0":
        raise SystemExit(f"needs sam2==1.1.0 installed for its video predictor, found {version}")
    sys.path.insert(0, os.path.abspath(a.edgetam))
    sys.path.insert(1, os.path.abspath(a.reference))
    for name in [m for m in sys.modules if m == "sam2" or m.startswith("sam2.")]:
        del sys.modules[name]
    import sam2
    assert os.path.abspath(sam2.__file__).startswith(os.path.abspath(a.edgetam)), sam2.__file__

    # (1) no pretrained download.
    import timm
    import sam2.modeling.backbones.timm as timm_backbone
    create = timm.create_model
    timm_backbone.create_model = lambda *args, **kw: create(*args, **{**kw, "pretrained": False})

    if a.edgetam_predictor:
        import sam2.sam2_video_predictor as vp
        version = "EdgeTAM's own"
    else:
        # sam2 1.1.0's predictor as EdgeTAM's `sam2.sam2_video_predictor`.
        spec = importlib.util.spec_from_file_location("sam2.sam2_video_predictor", predictor_file)
        vp = importlib.util.module_from_spec(spec)
        sys.modules["sam2.sam2_video_predictor"] = vp
        spec.loader.exec_module(vp)

    # (4) memory position encodings of either rank, as EdgeTAM's predictor expands them.
    def get_maskmem_pos_enc(self, inference_state, current_out):
        constants, out = inference_state["constants"], current_out["maskmem_pos_enc"]
        if out is None:
            return None
        if "maskmem_pos_enc" not in constants:
            constants["maskmem_pos_enc"] = [x[0:1].clone() for x in out]
        batch = out[0].size(0)
        return [x.expand(batch, *([-1] * (x.ndim - 1))) for x in constants["maskmem_pos_enc"]]

    if not a.edgetam_predictor:
        vp.SAM2VideoPredictor._get_maskmem_pos_enc = get_maskmem_pos_enc

    # (3) num_spatial_mem past make_fixture's float32 wrapper.
    import sam2.modeling.memory_attention as ma
    edgetam_forward, handed = ma.MemoryAttention.forward, {}

    def forward(self, curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0, num_spatial_mem=None):
        n = handed.pop("n", -1) if num_spatial_mem is None else num_spatial_mem
        return edgetam_forward(self, curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens, num_spatial_mem=n)

    def call(self, *args, **kw):
        if "num_spatial_mem" in kw:
            handed["n"] = kw.pop("num_spatial_mem")
        return torch.nn.Module.__call__(self, *args, **kw)

    ma.MemoryAttention.forward = forward
    ma.MemoryAttention.__call__ = call

    # (2) batch-norm statistics from the fixture's frames, right after the random weights.
    import make_fixture as mf
    import make_image_fixture as mif
    session = json.load(open(a.spec))
    session["_dir"] = os.path.dirname(os.path.abspath(a.spec))
    randomize = mf.randomize

    def fixture_frames(size):
        if not a.image:
            return mf.load_frames(session, size)[0]
        img = torch.from_numpy(mif.load_image(session)).permute(2, 0, 1).float()[None] / 255
        img = torch.nn.functional.interpolate(img, size=(size, size), mode="bilinear", antialias=True)
        mean = torch.tensor((0.485, 0.456, 0.406))[:, None, None]
        std = torch.tensor((0.229, 0.224, 0.225))[:, None, None]
        return (img - mean) / std

    def randomize_then_calibrate(model, seed, quantize=True):
        randomize(model, seed, quantize)
        frames = fixture_frames(model.image_size)
        trunk = model.image_encoder.trunk
        norms = [m for m in trunk.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative: one batch gives exactly its statistics
            m.train()
        with torch.no_grad():
            trunk(frames)
        for m in norms:
            m.eval()

    mf.randomize = mif.randomize = randomize_then_calibrate
    sys.argv = ["make_fixture.py", "--spec", a.spec, "--out", a.out]
    (mif if a.image else mf).main()
    if a.image:
        return
    # The config the fixture records is EdgeTAM's with the overrides; note where it came from.
    meta = json.load(open(os.path.join(a.out, "session.json")))
    meta["reference"] = {"edgetam": os.path.basename(os.path.abspath(a.edgetam)), "sam2_video_predictor": version,
                         "timm": timm.__version__, "torch": torch.__version__}
    json.dump(meta, open(os.path.join(a.out, "session.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
