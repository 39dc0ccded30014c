#!/usr/bin/env python3
"""Write official-format checkpoints with random weights for every official SAM 2 / 2.1 model
(the published files cannot be downloaded everywhere). Needs `pip install torch sam2`.

  python Scripts/make_random_checkpoints.py OUT_DIR [name ...]

OUT_DIR/<name>.pt is `{"model": state_dict}` exactly as the published checkpoints are laid out;
`SAM2_ARCH_CHECKPOINTS=OUT_DIR swift test --filter ArchitectureTests` then loads each one with
its config from Configs/.
"""
import os, sys
import torch
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from sam2.build_sam import build_sam2

CONFIGS = {
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_base_plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_large": "configs/sam2/sam2_hiera_l.yaml",
}

out = sys.argv[1]
names = sys.argv[2:] or list(CONFIGS)
os.makedirs(out, exist_ok=True)
if not GlobalHydra.instance().is_initialized():
    initialize_config_module("sam2", version_base="1.2")
torch.manual_seed(0)
for name in names:
    model = build_sam2(CONFIGS[name], ckpt_path=None, device="cpu", apply_postprocessing=False)
    torch.save({"model": model.state_dict()}, os.path.join(out, name + ".pt"))
    print(name, sum(p.numel() for p in model.parameters()), "parameters")
