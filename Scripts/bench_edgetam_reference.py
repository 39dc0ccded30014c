"""The official EdgeTAM code on the CPU (its own predictor), for Scripts/bench_edgetam.sh: the
first FRAMES frames of VIDEO as a JPEG folder (what its predictor reads), one click at the centre
of frame 0, then propagation; prints seconds per tracked frame (median), the same per stage
(forward hooks on the model's parts), PyTorch's CPU capability (AVX2, AVX512) and peak RSS.

    python bench_edgetam_reference.py EDGETAM_REPO CHECKPOINT VIDEO FRAMES

EDGETAM_REPO is a checkout of facebookresearch/EdgeTAM (its `sam2` package is imported from
there; no CUDA extension needed). Its backbone asks timm for pretrained weights, which are not
needed to time it: the model is built with pretrained=False and the checkpoint loaded over it."""
import os, resource, statistics, subprocess, sys, tempfile, time

repo, ckpt, video, frames = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path.insert(0, repo)
import numpy as np
import timm
import torch

torch.set_num_threads(2)
import sam2.modeling.backbones.timm as timm_backbone

create = timm.create_model
timm_backbone.create_model = lambda *a, **k: create(*a, **{**k, "pretrained": False})
from sam2.build_sam import build_sam2_video_predictor

with tempfile.TemporaryDirectory() as folder:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", video, "-frames:v", str(frames), "-q:v", "2",
                    "-start_number", "0", os.path.join(folder, "%05d.jpg")], check=True)
    predictor = build_sam2_video_predictor("configs/edgetam.yaml", ckpt_path=None, device="cpu")
    state_dict = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    predictor.load_state_dict(state_dict, strict=True)
    # Per-stage time: each part's forward calls, summed per tracked frame.
    stages = ["image_encoder", "memory_attention", "sam_mask_decoder", "memory_encoder", "spatial_perceiver"]
    spent = {name: 0.0 for name in stages}
    for name in stages:
        module = getattr(predictor, name)
        module.register_forward_pre_hook(lambda m, a: setattr(m, "_bench_start", time.perf_counter()))
        module.register_forward_hook(
            lambda m, a, o, name=name: spent.__setitem__(name, spent[name] + time.perf_counter() - m._bench_start))
    per_frame = {name: [] for name in stages}
    with torch.inference_mode():
        state = predictor.init_state(folder)
        w, h = state["video_width"], state["video_height"]
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=np.array([[w / 2, h / 2]], np.float32),
                                        labels=np.array([1], np.int32))
        times, last = [], time.time()
        for _ in predictor.propagate_in_video(state):
            now = time.time()
            times.append(now - last)
            last = now
            for name in stages:
                per_frame[name].append(spent[name])
                spent[name] = 0.0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
for name in stages:
    print(f"{name:<20}{statistics.median(per_frame[name][1:]):.3f}")
print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
print(f"RESULT official_edgetam_s_per_frame={statistics.median(times[1:]):.4f} frames={len(times) - 1} peak_rss_mb={rss:.0f}")
