#!/usr/bin/env python3
"""The ComfyUI node inside a real ComfyUI checkout, against ComfyUI's own code (not run by
test.sh: CI has no ComfyUI; python/tests use stand-ins written from this code).

    cd COMFYUI && DISTORCH_VISION_LIBRARY=... python <checkout>/scripts/comfyui_parity.py COMFYUI

Needs ComfyUI's Python dependencies (torch, einops, torchsde, torchvision, av, ...). Prints one
JSON report: which class each key gets when ComfyUI loads this pack beside a stand-in
ComfyUI-MultiGPU (python/tests/comfy_standins/other_packs) in os.listdir order; for each small
fixture, the largest |difference| between core's ClipVisionModel.encode_image (built from the
fixture's config, fp32) and the node's, over 1-, 3- and 4-channel IMAGEs with both crops (and
that every output core sets is set, all_hidden_states included, and nothing else); whether
get_sd() has core's keys and loads into core's model; and what eject_models leaves loaded.
"""
import asyncio, json, logging, os, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMFY = Path(sys.argv[1]).resolve()
sys.argv = ["main.py", "--cpu", "--fp32-text-enc"]
sys.path.insert(0, str(COMFY))
import comfy.options
comfy.options.enable_args_parsing()
import torch
import folder_paths
import comfy.clip_vision as core_cv
import comfy.model_management as mm
import comfy.model_patcher
import nodes

logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
FIX = ROOT / "tests/fixtures/models"
tmp = Path(tempfile.mkdtemp(prefix="r24-real-"))
folder_paths.folder_names_and_paths["clip_vision"] = ([str(FIX)], {".safetensors"})
report = {}

# ---- 1. registration beside another pack, with ComfyUI's own loader (os.listdir order)
def load_packs(names):
    cn = tmp / f"custom_nodes_{'_'.join(names)}"
    cn.mkdir()
    for n in names:
        target = ROOT / "comfyui" if "distorch" in n else ROOT / "python/tests/comfy_standins/other_packs/ComfyUI-MultiGPU"
        (cn / n).symlink_to(target, target_is_directory=True)
    folder_paths.folder_names_and_paths["custom_nodes"] = ([str(cn)], set())
    saved = dict(nodes.NODE_CLASS_MAPPINGS)
    asyncio.run(nodes.init_external_custom_nodes())
    got = {k: (nodes.NODE_CLASS_MAPPINGS[k].__name__ if k in nodes.NODE_CLASS_MAPPINGS else None)
           for k in ("CLIPVisionLoaderDisTorch2MultiGPU", "DistorchVisionCLIPVisionLoader")}
    order = os.listdir(cn)
    nodes.NODE_CLASS_MAPPINGS.clear(); nodes.NODE_CLASS_MAPPINGS.update(saved)
    return order, got

orders = {}
for names in (["distorch-vision", "ComfyUI-MultiGPU"], ["zz-distorch-vision", "ComfyUI-MultiGPU"],
              ["a-distorch", "ComfyUI-MultiGPU"], ["distorch", "x-ComfyUI-MultiGPU"], ["distorch-vision"]):
    order, got = load_packs(names)
    key = "alone" if len(names) == 1 else ("ours first" if "distorch" in order[0] else "other first")
    orders.setdefault(key, (order, got))
report["registration"] = orders

# ---- the node, loaded as ComfyUI does
cn = tmp / "custom_nodes_main"; cn.mkdir()
(cn / "distorch-vision").symlink_to(ROOT / "comfyui", target_is_directory=True)
asyncio.run(nodes.load_custom_node(str(cn / "distorch-vision")))
Loader = nodes.NODE_CLASS_MAPPINGS["DistorchVisionCLIPVisionLoader"]

def core_model(name):
    cfg = json.loads((FIX / name / "config.json").read_text())
    if "vision_config" in cfg:
        cfg = {**cfg["vision_config"], "projection_dim": cfg["projection_dim"]}
    cfg.setdefault("num_channels", 3)
    if cfg["model_type"] == "dinov2":
        cfg["image_mean"], cfg["image_std"] = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    elif cfg["model_type"] == "siglip_vision_model":
        cfg["image_mean"], cfg["image_std"] = [0.5] * 3, [0.5] * 3
    p = tmp / f"{name}.json"; p.write_text(json.dumps(cfg))
    m = core_cv.ClipVisionModel(str(p))
    from safetensors.torch import load_file
    sd = load_file(str(FIX / name / "model.safetensors"))
    if "visual.transformer.resblocks.0.attn.in_proj_weight" in sd:
        sd = core_cv.convert_to_transformers(sd, "visual.")
    missing, _ = m.load_sd(sd)
    assert not missing, missing
    return m

def image(b, h, w, c, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((b, h, w, c), generator=g)

results = {}
torch.set_grad_enabled(False)
# Core's Dinov2Model fixes patch 14 / 518 px: our small DINOv2 fixtures cannot run in it; their
# get_sd keys are compared with the keys of core's module.
for name in ["dinov2_gelu_f32", "dinov2_swiglu_f32"]:
    cfg = json.loads((FIX / name / "config.json").read_text()); cfg["num_channels"] = 3
    p = tmp / f"{name}.json"; p.write_text(json.dumps(cfg))
    core_keys = set(core_cv.ClipVisionModel(str(p)).get_sd())
    (ours,) = Loader().load_clip(clip_name=f"{name}/model.safetensors", device="cpu", eject_models=False)
    results[name] = {"get_sd_keys_equal": core_keys == set(ours.get_sd()),
                     "diff": sorted(core_keys ^ set(ours.get_sd()))[:4],
                     "all_hidden_states_absent": not hasattr(ours.encode_image(image(1, 40, 40, 3, 0)), "all_hidden_states")}
for name in ["clip_quickgelu_f32", "clip_gelu_f16", "open_clip_f32", "siglip_f32", "siglip_s36_p8_f32"]:
    core = core_model(name)
    (ours,) = Loader().load_clip(clip_name=f"{name}/model.safetensors", device="cpu", eject_models=False)
    row = {}
    for c in (1, 3, 4):
        for crop in (True, False):
            img = image(2, 45, 61, c, seed=c)
            a = core.encode_image(img, crop=crop)
            b = ours.encode_image(img, crop=crop)
            assert type(b) is core_cv.Output, type(b)
            ka = {k for k in vars(a)}; kb = {k for k in vars(b)} - {"image_sizes"}
            assert ka == kb, (name, ka ^ kb)
            d = max(float((getattr(a, k).float() - getattr(b, k).float()).abs().max())
                    for k in ka if getattr(a, k) is not None)
            row[f"c{c}/{'crop' if crop else 'none'}"] = d
    sa, sb = core.get_sd(), ours.get_sd()
    row["get_sd_keys_equal"] = set(sa) == set(sb)
    row["get_sd_extra"] = sorted(set(sa) ^ set(sb))[:4]
    row["get_sd_max_diff"] = max(float((sa[k].float() - sb[k].float()).abs().max()) for k in set(sa) & set(sb))
    # our get_sd loads into core's model and gives core's outputs
    core2 = core_model(name); m, u = core2.load_sd({k: v for k, v in sb.items()})
    row["our_sd_loads_into_core"] = (list(m), len(u))
    results[name] = row
report["vs_core"] = results

# ---- eject: real LoadedModel entries on cpu and "cuda:0"
def patcher(dev):
    return comfy.model_patcher.ModelPatcher(torch.nn.Linear(4, 4), load_device=torch.device(dev), offload_device=torch.device("cpu"))
pa, pb = patcher("cpu"), patcher("cuda:0")
a, b = mm.LoadedModel(pa), mm.LoadedModel(pb)
import weakref; a.real_model = weakref.ref(pa.model); b.real_model = weakref.ref(pb.model)
for x, p in ((a, pa), (b, pb)): x.model_finalizer = weakref.finalize(p.model, lambda: None)
mm.current_loaded_models[:] = [a, b]
Loader().load_clip(clip_name="siglip_f32/model.safetensors", device="cpu", eject_models=True)
report["eject_cpu_left"] = [str(x.device) for x in mm.current_loaded_models]
print(json.dumps(report, indent=1, default=str))
