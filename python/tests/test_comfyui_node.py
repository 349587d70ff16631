"""The ComfyUI node, imported by path as ComfyUI imports custom nodes, with stand-ins for the
ComfyUI APIs it uses (folder_paths, comfy.model_management, comfy.clip_vision.Output, nodes'
custom-node loading; see comfy_standins/), driven the way ComfyUI's own consumers read a
CLIP_VISION output. Every output is compared with HF transformers run on ComfyUI's
preprocessing (re-done in torch) of the same IMAGE."""

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from reference import (ROOT, assert_openvino_cpu_refused, comfy_preprocess, comfy_siglip2_preprocess, hf_outputs,
                       hf_siglip2_outputs, intel_cpu, max_diff, mean_std, random_image)

STANDINS = Path(__file__).resolve().parent / "comfy_standins"
sys.path.insert(0, str(STANDINS))

import comfy.clip_vision  # noqa: E402  (the stand-ins)
import comfy.model_management as mm  # noqa: E402
import folder_paths  # noqa: E402
import nodes  # noqa: E402

TOL = 1e-4
NODE_ID = "DistorchVisionCLIPVisionLoader"  # this pack's own key
SEED_ID = "CLIPVisionLoaderDisTorch2MultiGPU"  # ComfyUI-MultiGPU's, added when no pack has it
OTHER_PACKS = STANDINS / "other_packs"
# Against the installed wheel (scripts/test_install.sh): the node folder is copied, as a user or
# ComfyUI-Manager puts it into custom_nodes, so it cannot reach the checkout's ../python.
INSTALLED = os.environ.get("DISTORCH_TEST_INSTALLED") == "1"


def place_node(custom_nodes: Path) -> Path:
    """comfyui/ in a custom_nodes folder: linked from the checkout, or copied when INSTALLED."""
    folder = custom_nodes / "distorch-vision"
    if INSTALLED:
        shutil.copytree(ROOT / "comfyui", folder, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        folder.symlink_to(ROOT / "comfyui", target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def node_package(tmp_path_factory):
    """comfyui/ placed in a custom_nodes folder and imported as ComfyUI's load_custom_node does."""
    link = place_node(tmp_path_factory.mktemp("custom_nodes"))
    spec = importlib.util.spec_from_file_location(link.name, os.path.join(link, "__init__.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[link.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def loader(node_package):
    return node_package.NODE_CLASS_MAPPINGS[NODE_ID]()


def load(loader, name, **widgets):
    """Runs the node as ComfyUI's executor does: FUNCTION called with the inputs as keywords."""
    inputs = dict(clip_name=f"{name}/model.safetensors", device="cpu", virtual_vram_gb=4.0,
                  donor_device="cpu", expert_mode_allocations="", eject_models=False)
    inputs.update(widgets)
    (clip_vision,) = getattr(loader, type(loader).FUNCTION)(**inputs)
    return clip_vision


def reference(name, image, crop):
    mean, std = mean_std(name)
    return hf_outputs(name, comfy_preprocess(image, 32, mean, std, crop=crop))


# ------------------------------------------------------------------------------ ComfyUI's consumers,
# reading the output the way each node does (written for these tests).

def clip_vision_encode(clip_vision, image, crop):
    """CLIPVisionEncode.encode: crop combo "center"/"none" → encode_image(image, crop=bool)."""
    return (clip_vision.encode_image(image, crop=crop == "center"),)


def unclip_conditioning(conditioning, clip_vision_output, strength, noise_augmentation):
    """unCLIPConditioning.apply_adm: appends to each entry's "unclip_conditioning" list."""
    out = []
    for txt, opts in conditioning:
        opts = dict(opts)
        entry = {"clip_vision_output": clip_vision_output, "strength": strength,
                 "noise_augmentation": noise_augmentation}
        opts["unclip_conditioning"] = opts.get("unclip_conditioning", []) + [entry]
        out.append([txt, opts])
    return (out,)


def unclip_adm_rows(unclip_conditioning):
    """What the unCLIP model reads: every image's image_embeds row, scaled by strength."""
    return [row * u["strength"] for u in unclip_conditioning
            for row in u["clip_vision_output"].image_embeds]


class ReduxLikeStyleModel:
    """A style model as Flux Redux is: an MLP over the SigLIP last_hidden_state tokens."""

    def __init__(self, d, txt_dim=24):
        g = torch.Generator().manual_seed(11)
        self.up = torch.randn((d, 3 * d), generator=g) * 0.1
        self.down = torch.randn((3 * d, txt_dim), generator=g) * 0.1

    def get_cond(self, clip_vision_output):
        return self.mlp(clip_vision_output.last_hidden_state)

    def mlp(self, x):
        return torch.nn.functional.silu(x @ self.up) @ self.down


def style_model_apply(conditioning, style_model, clip_vision_output, strength):
    """StyleModelApply (multiply): the image tokens appended to the text tokens."""
    cond = style_model.get_cond(clip_vision_output).flatten(start_dim=0, end_dim=1).unsqueeze(dim=0)
    cond = cond * strength
    return ([[torch.cat((txt, cond), dim=1), dict(opts)] for txt, opts in conditioning],)


class _Output:  # what WanImageToVideo builds when it joins start and end images
    pass


def wan_image_to_video_clip_fea(start, end=None):
    """WanImageToVideo: the output (or start+end joined on the token axis) goes into the
    conditioning; the Wan model reads penultimate_hidden_states as clip_fea."""
    cvo = start
    if end is not None:
        cvo = _Output()
        cvo.penultimate_hidden_states = torch.cat(
            [start.penultimate_hidden_states, end.penultimate_hidden_states], dim=-2)
    positive = [[torch.zeros(1, 4, 8), {"clip_vision_output": cvo}]]
    return positive[0][1]["clip_vision_output"].penultimate_hidden_states


class FakeHunyuanClip:
    """Records what TextEncodeHunyuanVideo_ImageToVideo passes to tokenize."""

    def tokenize(self, text, llama_template=None, image_embeds=None, image_interleave=None):
        self.image_embeds, self.image_interleave = image_embeds, image_interleave
        return {"text": text}


def hunyuan_i2v_text_encode(clip, clip_vision_output, prompt, image_interleave):
    return clip.tokenize(prompt, llama_template="<template>",
                         image_embeds=clip_vision_output.mm_projected,
                         image_interleave=image_interleave)


# ------------------------------------------------------------------------------ registration

def test_node_registers_with_the_seeds_inputs(node_package):
    names = node_package.NODE_DISPLAY_NAME_MAPPINGS
    assert names[NODE_ID] == "Load CLIP Vision (distorch-vision, DisTorch2 MultiGPU)"
    # No other pack provides the seed's key here: it is registered too, for saved workflows.
    assert names[SEED_ID] == "Load CLIP Vision (DisTorch2, MultiGPU)"
    for key in (NODE_ID, SEED_ID):
        cls = node_package.NODE_CLASS_MAPPINGS[key]
        assert cls.RETURN_TYPES == ("CLIP_VISION",) and cls.CATEGORY == "multigpu/distorch_2"
        types = cls.INPUT_TYPES()
        assert list(types["required"]) == ["clip_name"]
        assert "clip_quickgelu_f32/model.safetensors" in types["required"]["clip_name"][0]
        opt = types["optional"]
        assert list(opt) == ["device", "virtual_vram_gb", "donor_device", "expert_mode_allocations",
                             "eject_models", "dtype", "cpu_engine", "donor_policy"]
        # The extra inputs are plugin.toml's, with its choices and defaults.
        import tomllib
        manifest = tomllib.loads((ROOT / "plugin.toml").read_text(encoding="utf-8"))
        declared = {i["name"]: i for node in manifest["nodes"] for i in node["inputs"]}
        extra = [k for k, i in declared.items() if "since_options_version" in i]
        assert sorted(extra) == ["cpu_engine", "donor_policy", "dtype"], extra
        for k in extra:
            assert list(opt[k][0]) == declared[k]["choices"], k
            assert opt[k][1]["default"] == declared[k]["default"], k
        devices = opt["device"][0]
        assert "cpu" in devices and opt["device"][1]["default"] in devices
        assert opt["donor_device"][0] == devices and opt["donor_device"][1]["default"] == "cpu"
        assert opt["virtual_vram_gb"][0] == "FLOAT"
        assert {k: opt["virtual_vram_gb"][1][k] for k in ("default", "min", "max", "step")} == \
            {"default": 4.0, "min": 0.0, "max": 128.0, "step": 0.1}
        assert opt["expert_mode_allocations"][0] == "STRING"
        assert opt["expert_mode_allocations"][1]["default"] == ""
        assert opt["eject_models"][0] == "BOOLEAN" and opt["eject_models"][1]["default"] is True


@pytest.mark.skipif(INSTALLED, reason="a copied node has no checkout; see the installed variant")
def test_node_finds_the_package_of_its_checkout(tmp_path):
    """Linked into custom_nodes with nothing installed, the node imports ../python."""
    link = tmp_path / "custom_nodes" / "distorch-vision"
    link.parent.mkdir()
    link.symlink_to(ROOT / "comfyui", target_is_directory=True)
    code = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("distorch-vision", {str(link / '__init__.py')!r})
        m = importlib.util.module_from_spec(spec); sys.modules["distorch-vision"] = m
        spec.loader.exec_module(m)
        import distorch_vision
        print(sorted(m.NODE_CLASS_MAPPINGS), distorch_vision.__file__)
    """)
    env = dict(os.environ, PYTHONPATH=str(STANDINS))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert NODE_ID in r.stdout and str(ROOT / "python" / "distorch_vision") in r.stdout, r.stdout


def _run_node(folder: Path, code: str, **env_changes) -> subprocess.CompletedProcess:
    """``code`` in a fresh Python after importing the node in ``folder`` as ComfyUI does (bound
    to ``node``), with the stand-ins on PYTHONPATH and the cwd beside the folder."""
    prelude = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("distorch-vision", {str(folder / '__init__.py')!r})
        node = importlib.util.module_from_spec(spec); sys.modules["distorch-vision"] = node
        spec.loader.exec_module(node)
    """)
    env = dict(os.environ, PYTHONPATH=str(STANDINS))
    for k, v in env_changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, env=env, cwd=folder.parent)


@pytest.mark.skipif(not INSTALLED, reason="checks the installed wheel (scripts/test_install.sh)")
def test_copied_node_uses_the_installed_package(tmp_path):
    (tmp_path / "custom_nodes").mkdir()
    folder = place_node(tmp_path / "custom_nodes")
    r = _run_node(folder, "import distorch_vision; print(distorch_vision.__file__)")
    assert r.returncode == 0, r.stderr
    installed = Path(r.stdout.strip())
    assert installed.is_relative_to(sys.prefix) and not installed.is_relative_to(ROOT), installed


def test_node_writes_exports_to_the_user_cache_only(tmp_path):
    """Contract §6.1b: nothing in the node's folder or the checkout (here the library is the
    checkout's build, whose own default is <checkout>/graphs); the user cache instead."""
    (tmp_path / "custom_nodes").mkdir()
    folder = place_node(tmp_path / "custom_nodes")

    def listing(d: Path) -> set:
        return {p.relative_to(d) for p in d.rglob("*") if "__pycache__" not in p.parts} \
            if d.is_dir() else set()

    node_before, graphs_before = listing(folder.resolve()), listing(ROOT / "graphs")
    cache = tmp_path / "cache"
    r = _run_node(folder, """
        loader = node.NODE_CLASS_MAPPINGS["CLIPVisionLoaderDisTorch2MultiGPU"]()
        (cv,) = loader.load_clip(clip_name="clip_quickgelu_f32/model.safetensors", device="cpu",
                                 eject_models=False)
        import torch
        print(cv.encode_image(torch.rand(1, 40, 30, 3)).image_embeds.shape)
    """, DISTORCH_GRAPHS_DIR=None, XDG_CACHE_HOME=str(cache))
    assert r.returncode == 0, r.stderr
    exports = list((cache / "distorch-vision" / "graphs").glob("model-*/manifest.json"))
    assert exports, f"no export under {cache}: {r.stderr}"
    assert listing(folder.resolve()) == node_before
    assert listing(ROOT / "graphs") == graphs_before


# ------------------------------------------------------------------------------ consumers

@pytest.mark.parametrize("crop", ["center", "none"])
@pytest.mark.parametrize("name", ["clip_quickgelu_f32", "siglip_f32", "llava_f32", "clip_gelu_f16"])
def test_clip_vision_encode_matches_hf_on_comfy_preprocessing(loader, name, crop):
    cv = load(loader, name)
    image = random_image(2, 45, 61, seed=1)  # not square: center crop and stretch differ
    (out,) = clip_vision_encode(cv, image, crop)
    ref = reference(name, image, crop=crop == "center")
    for k in ("last_hidden_state", "image_embeds", "penultimate_hidden_states"):
        assert isinstance(out[k], torch.Tensor) and out[k] is getattr(out, k)
        assert out[k].device == mm.intermediate_device()
        d = max_diff(out[k], ref[k])
        print(f"{name}/{crop}/{k}: max |diff| vs HF on torch preprocessing = {d:.2e}")
        assert d <= TOL, f"{name}/{crop}/{k}: {d}"
    if "mm_projected" in ref:
        assert max_diff(out.mm_projected, ref["mm_projected"]) <= TOL
    else:
        assert out.mm_projected is None and out["mm_projected"] is None
    assert out.image_sizes == [torch.Size((3, 32, 32))] * 2


@pytest.mark.parametrize("crop", ["center", "none"])
def test_siglip2_naflex_outputs_as_comfyui_returns_them(loader, crop):
    # ComfyUI's naflex encode: siglip2_preprocess (aspect kept, crop ignored), no padding (an
    # IMAGE batch is one size), image_embeds = last_hidden_state (its projection is the
    # identity), image_sizes the preprocessed pixels' (3, H, W), no all_hidden_states. The
    # attention-pooling head, which ComfyUI never runs, is there as pooler_output.
    name = "siglip2_naflex_f32"
    cv = load(loader, name)
    image = random_image(2, 45, 61, seed=7)
    (out,) = clip_vision_encode(cv, image, crop)
    patches, (rows, cols) = comfy_siglip2_preprocess(image, 4, 64)
    ref = hf_siglip2_outputs(name, patches, torch.tensor([[rows, cols]] * 2))
    assert out.last_hidden_state.shape == (2, rows * cols, 32)
    for k in ("last_hidden_state", "penultimate_hidden_states"):
        d = max_diff(out[k], ref[k])
        print(f"{name}/{crop}/{k}: max |diff| vs HF on torch preprocessing = {d:.2e}")
        assert d <= TOL, f"{k}: {d}"
    assert out.image_embeds is out.last_hidden_state
    assert max_diff(out.pooler_output, ref["image_embeds"]) <= TOL
    assert out.image_sizes == [torch.Size((3, rows * 4, cols * 4))] * 2
    assert out.mm_projected is None
    # As core: all_hidden_states only for siglip_vision_model, not siglip2 (naflex).
    assert not hasattr(out, "all_hidden_states")


def test_unclip_conditioning_reads_image_embeds(loader):
    name = "clip_quickgelu_f32"
    image = random_image(3, 50, 40, seed=2)
    (out,) = clip_vision_encode(load(loader, name), image, "center")
    conditioning = [[torch.zeros(1, 77, 8), {}]]
    (c,) = unclip_conditioning(conditioning, out, strength=0.7, noise_augmentation=0.0)
    rows = unclip_adm_rows(c[0][1]["unclip_conditioning"])
    ref = reference(name, image, crop=True)["image_embeds"]
    assert len(rows) == 3
    for i, row in enumerate(rows):
        assert max_diff(row, 0.7 * ref[i]) <= TOL


def test_style_model_apply_reads_siglip_last_hidden_state(loader):
    name = "siglip_f32"
    image = random_image(1, 70, 52, c=4, seed=3)  # RGBA: alpha is dropped
    (out,) = clip_vision_encode(load(loader, name), image, "center")
    ref = reference(name, image, crop=True)["last_hidden_state"]
    style = ReduxLikeStyleModel(ref.shape[-1])
    txt = torch.randn(1, 5, 24)
    (c,) = style_model_apply([[txt, {}]], style, out, strength=1.5)
    expected = torch.cat((txt, 1.5 * style.mlp(ref).flatten(0, 1).unsqueeze(0)), dim=1)
    assert c[0][0].shape == (1, 5 + ref.shape[1], 24)
    assert max_diff(c[0][0], expected) <= TOL


def test_wan_image_to_video_reads_penultimate_with_crop_none(loader):
    name = "clip_gelu_f16"
    cv = load(loader, name)
    start, end = random_image(1, 48, 80, seed=4), random_image(1, 48, 80, seed=5)
    (a,) = clip_vision_encode(cv, start, "none")
    (b,) = clip_vision_encode(cv, end, "none")
    ra = reference(name, start, crop=False)["penultimate_hidden_states"]
    rb = reference(name, end, crop=False)["penultimate_hidden_states"]
    assert max_diff(wan_image_to_video_clip_fea(a), ra) <= TOL
    joined = wan_image_to_video_clip_fea(a, b)
    assert joined.shape == (1, 2 * ra.shape[1], ra.shape[2])
    assert max_diff(joined, torch.cat([ra, rb], dim=-2)) <= TOL


def test_hunyuan_video_i2v_reads_mm_projected(loader):
    name = "llava_f32"
    image = random_image(1, 64, 36, seed=6)
    (out,) = clip_vision_encode(load(loader, name), image, "center")
    clip = FakeHunyuanClip()
    hunyuan_i2v_text_encode(clip, out, "a fox turns toward the camera", 4)
    ref = reference(name, image, crop=True)["mm_projected"]
    assert clip.image_interleave == 4
    assert clip.image_embeds.shape == ref.shape == (1, 16, 48)
    assert max_diff(clip.image_embeds, ref) <= TOL
    # A file without a projector gives None, as ComfyUI does.
    (plain,) = clip_vision_encode(load(loader, "clip_quickgelu_f32"), image, "center")
    hunyuan_i2v_text_encode(clip, plain, "x", 4)
    assert clip.image_embeds is None


def test_uso_all_hidden_states_of_siglip(loader):
    """USO reads all_hidden_states[:, -k]: there as core has it for SigLIP, from the same pass."""
    name = "siglip_f32"
    image = random_image(2, 40, 40, seed=7)
    (out,) = clip_vision_encode(load(loader, name), image, "center")
    hs = out["all_hidden_states"]
    assert "all_hidden_states" in vars(out)  # set by encode_image, not computed when read
    ref = reference(name, image, crop=True)
    assert hs.shape == ref["all_hidden_states"].shape
    assert max_diff(hs, ref["all_hidden_states"]) <= TOL
    # As core: the penultimate is all_hidden_states[:, -2].
    assert torch.equal(out.penultimate_hidden_states, hs[:, -2])
    assert out.all_hidden_states is hs


def test_all_hidden_states_come_from_the_same_pass_and_only_where_core_has_them(loader, monkeypatch):
    """Core returns all_hidden_states for SigLIP only; every encode_image is one pass."""
    image = random_image(1, 36, 36, seed=8)
    for name, present in [("siglip_f32", True), ("siglip_s36_p8_f32", True),
                          ("clip_quickgelu_f32", False), ("llava_f32", False),
                          ("open_clip_f32", False), ("dinov2_gelu_f32", False)]:
        cv = load(loader, name)
        calls = []
        real = cv.distorch_model.encode_images

        def counting(*a, calls=calls, real=real, **k):
            calls.append(k.get("outputs"))
            return real(*a, **k)

        monkeypatch.setattr(cv.distorch_model, "encode_images", counting)
        out = cv.encode_image(image, crop=True)
        assert hasattr(out, "all_hidden_states") is present, name
        for k in ("last_hidden_state", "image_embeds", "penultimate_hidden_states", "mm_projected"):
            assert hasattr(out, k), (name, k)
        assert len(calls) == 1, f"{name}: {len(calls)} passes ({calls})"
        monkeypatch.undo()


# ------------------------------------------------------------------------------ behaviour

def test_outputs_go_to_the_intermediate_device(loader, monkeypatch):
    monkeypatch.setattr(mm, "INTERMEDIATE", torch.device("meta"))
    out = load(loader, "clip_quickgelu_f32").encode_image(random_image(1, 32, 32), crop=True)
    for k in ("last_hidden_state", "image_embeds", "penultimate_hidden_states"):
        assert out[k].device.type == "meta", k


def test_clip_vision_synonym_and_plan_log(loader, caplog):
    with caplog.at_level(logging.INFO, logger="DisTorch2"):
        cv = getattr(loader, "load_clip")(clip_vision="siglip_f32/model.safetensors",
                                          device="cpu", eject_models=False)[0]
    assert "siglip_f32/model.safetensors" in caplog.text and "embed..head" in caplog.text
    assert cv.image_size == 32


def test_the_node_runs_the_cpu_engine_and_dtype_it_is_given(loader):
    """cpu_engine, dtype and donor_policy reach the library: the plan names the engine of every block, and
    a bad engine is refused with the valid ones."""
    import distorch_vision as dv

    (cv,) = loader.load_clip("clip_quickgelu_f32/model.safetensors", device="cpu", cpu_engine="mlas")
    assert {b["engine"] for b in cv.distorch_model.plan()["blocks"]} == {"mlas"}
    try:
        (cv,) = loader.load_clip("clip_quickgelu_f32/model.safetensors", device="cpu", cpu_engine="openvino")
        assert {b["engine"] for b in cv.distorch_model.plan()["blocks"]} == {"openvino"}
    except dv.DistorchError as e:
        # An installed package without the `openvino` extra: the message says how to get it; off
        # Intel CPUs the plugin offers no CPU device, and the message says so.
        if "needs the OpenVINO plugin" in str(e):
            assert "pip install onnxruntime-ep-openvino==1.8.1" in str(e), e
        else:
            assert not intel_cpu(), e
            assert_openvino_cpu_refused(str(e), "cpu_engine: openvino")
    (cv,) = loader.load_clip("clip_quickgelu_f32/model.safetensors", device="cpu", dtype="int8")
    assert {b["engine"] for b in cv.distorch_model.plan()["blocks"]} == {"mlas"}
    (cv,) = loader.load_clip("clip_quickgelu_f32/model.safetensors", device="cpu", donor_policy="execute")
    assert cv.distorch_model.plan()["donor_policy"] == "execute"
    with pytest.raises(dv.DistorchError, match="openvino"):
        loader.load_clip("clip_quickgelu_f32/model.safetensors", device="cpu", cpu_engine="tbb")
def test_eject_models_unloads_only_what_comfyui_holds_on_the_compute_device(loader, monkeypatch):
    """The seed unloads "ALL models from the target device": ComfyUI's models on the node's
    device go, those on other devices (ComfyUI's main GPU here) stay loaded."""
    monkeypatch.setattr(mm, "current_loaded_models", [])
    monkeypatch.setattr(mm, "TORCH_DEVICE", torch.device("cuda:0"))
    on_cpu = mm.load("vae on cpu", "cpu")
    on_gpu0 = mm.load("unet on cuda:0", "cuda:0")
    on_gpu1 = mm.load("clip on cuda:1", "cuda:1")
    load(loader, "siglip_f32", device="cpu", eject_models=True)
    assert on_cpu.unloaded and on_cpu not in mm.current_loaded_models
    assert not on_gpu0.unloaded and not on_gpu1.unloaded
    assert mm.current_loaded_models == [on_gpu1, on_gpu0]
    # eject_models=False unloads nothing.
    again = mm.load("vae on cpu", "cpu")
    load(loader, "siglip_f32", device="cpu", eject_models=False)
    assert not again.unloaded


def test_unsupported_uses_fail_clearly(loader):
    cv = load(loader, "clip_quickgelu_f32")
    with pytest.raises(NotImplementedError, match="load_sd is not supported"):
        cv.load_sd({})
    with pytest.raises(AttributeError, match="encode_image"):
        cv.patcher
    out = cv.encode_image(random_image(1, 32, 32))
    with pytest.raises(AttributeError, match="no_such"):
        out.no_such


def test_bad_widgets_and_missing_files_raise_with_the_message(loader):
    import distorch_vision as dv

    with pytest.raises(dv.DistorchError, match="cuda:0,xyz"):
        load(loader, "clip_quickgelu_f32", expert_mode_allocations="cuda:0,xyz")
    with pytest.raises(FileNotFoundError, match="nope"):
        load(loader, "nope")
    with pytest.raises(ValueError, match="clip_name"):
        getattr(loader, "load_clip")(device="cpu")


def test_outputs_survive_deepcopy(loader):
    import copy

    out = load(loader, "clip_quickgelu_f32").encode_image(random_image(1, 40, 30))
    dup = copy.deepcopy(out)
    assert dup.image_embeds is not out.image_embeds
    assert torch.equal(dup.image_embeds, out.image_embeds)
    assert dup.mm_projected is None and dup.image_sizes == out.image_sizes



# ------------------------------------------------------------------------------ defaults in one place


def test_every_front_end_takes_the_librarys_loader_defaults(loader):
    """The loader defaults (contract §1) are defined once, in the library. plugin.toml declares
    them to hosts (a Rust test ties it to the library); the Python API, the Ray entry point, the
    node's widgets and its FUNCTION must agree with it, and with what dv_load_options_init fills
    in, so a change there cannot leave one of them behind."""
    import ctypes
    import inspect
    import tomllib

    import distorch_vision
    import distorch_vision.ray
    from distorch_vision.library import LoadOptions, lib

    manifest = tomllib.loads((ROOT / "plugin.toml").read_text())
    inputs = {i["name"]: i for node in manifest["nodes"] for i in node["inputs"]}
    declared = {k: inputs[k]["default"]
                for k in ("virtual_vram_gb", "donor_device", "expert_mode_allocations", "eject_models")}
    o = LoadOptions()
    lib().check(lib().dv_load_options_init(ctypes.byref(o), ctypes.sizeof(o)), "dv_load_options_init")
    assert o.virtual_vram_gb == declared["virtual_vram_gb"]
    assert bool(o.eject_models) == declared["eject_models"]
    functions = [("distorch_vision.load", distorch_vision.load),
                 ("distorch_vision.ray.encode", distorch_vision.ray.encode),
                 ("the node's FUNCTION", getattr(loader, type(loader).FUNCTION))]
    for where, fn in functions:
        params = inspect.signature(fn).parameters
        for k, v in declared.items():
            assert params[k].default == v, f"{where}: {k} defaults to {params[k].default!r}, plugin.toml says {v!r}"
    widgets = type(loader).INPUT_TYPES()["optional"]
    for k, v in declared.items():
        assert widgets[k][1]["default"] == v, f"node widget {k}: {widgets[k][1]['default']!r}, plugin.toml {v!r}"


# ------------------------------------------------------------------------------ beside other packs


@pytest.fixture
def comfy_registry(tmp_path, monkeypatch):
    """A custom_nodes folder and ComfyUI's global registry, both fresh for one test."""
    custom_nodes = tmp_path / "custom_nodes"
    custom_nodes.mkdir()
    monkeypatch.setattr(folder_paths, "CUSTOM_NODES", [custom_nodes])
    monkeypatch.setattr(nodes, "NODE_CLASS_MAPPINGS", dict(nodes.NODE_CLASS_MAPPINGS))
    monkeypatch.setattr(nodes, "NODE_DISPLAY_NAME_MAPPINGS", dict(nodes.NODE_DISPLAY_NAME_MAPPINGS))
    return custom_nodes


def _link(custom_nodes, name, target):
    (custom_nodes / name).symlink_to(target, target_is_directory=True)


@pytest.mark.parametrize("order", [["distorch-vision", "ComfyUI-MultiGPU"],
                                   ["ComfyUI-MultiGPU", "distorch-vision"]])
def test_the_seeds_key_stays_with_another_pack_that_provides_it(comfy_registry, order, caplog):
    """ComfyUI loads packs in os.listdir order and a later pack's key replaces an earlier one's:
    whichever order, a workflow's CLIPVisionLoaderDisTorch2MultiGPU node is the other pack's,
    and ours is reachable under its own key; the log says so."""
    _link(comfy_registry, "distorch-vision", ROOT / "comfyui")
    _link(comfy_registry, "ComfyUI-MultiGPU", OTHER_PACKS / "ComfyUI-MultiGPU")
    with caplog.at_level(logging.INFO, logger="DisTorch2"):
        nodes.init_external_custom_nodes(order=order)
    registry = nodes.NODE_CLASS_MAPPINGS
    assert registry[SEED_ID].__name__ == "MultiGPUCLIPVisionLoader"
    assert registry[NODE_ID].__name__ == "DistorchVisionCLIPVisionLoader"
    assert registry[NODE_ID].RELATIVE_PYTHON_MODULE == "custom_nodes.distorch-vision"
    assert f"{SEED_ID} is provided by" in caplog.text and "ComfyUI-MultiGPU" in caplog.text
    assert NODE_ID in caplog.text


def test_the_seeds_key_is_ours_when_no_other_pack_provides_it(comfy_registry, caplog):
    _link(comfy_registry, "distorch-vision", ROOT / "comfyui")
    # A pack that registers other nodes only, and a disabled copy of ComfyUI-MultiGPU.
    other = comfy_registry.parent / "other"
    other.mkdir()
    (other / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    _link(comfy_registry, "some-other-pack", other)
    _link(comfy_registry, "ComfyUI-MultiGPU.disabled", OTHER_PACKS / "ComfyUI-MultiGPU")
    with caplog.at_level(logging.INFO, logger="DisTorch2"):
        nodes.init_external_custom_nodes()
    registry = nodes.NODE_CLASS_MAPPINGS
    assert registry[SEED_ID].__name__ == "CLIPVisionLoaderDisTorch2MultiGPU"
    assert issubclass(registry[SEED_ID], registry[NODE_ID])
    assert f"no other node pack provides {SEED_ID}" in caplog.text


# ------------------------------------------------------------------------------ outputs as core makes them


def test_the_output_is_comfys_output_class(loader):
    out = load(loader, "clip_quickgelu_f32").encode_image(random_image(1, 40, 30))
    assert type(out) is comfy.clip_vision.Output
    assert out["image_embeds"] is out.image_embeds


def test_a_one_channel_image_is_broadcast_to_rgb_as_core_does(loader):
    name = "clip_quickgelu_f32"
    grey = random_image(2, 45, 61, c=1, seed=12)
    for crop in (True, False):
        out = load(loader, name).encode_image(grey, crop=crop)
        ref = reference(name, grey, crop=crop)  # core's broadcast in (x - mean) / std
        for k in ("last_hidden_state", "image_embeds", "penultimate_hidden_states"):
            assert max_diff(out[k], ref[k]) <= TOL, (crop, k)
        rgb = load(loader, name).encode_image(grey.expand(-1, -1, -1, 3).contiguous(), crop=crop)
        assert torch.equal(out.image_embeds, rgb.image_embeds)


def test_get_sd_is_the_vision_towers_state_dict(loader):
    """ImageOnlyCheckpointSave calls get_sd(): the tower's tensors under HF names. Checked by
    loading them into HF transformers, which must then give the node's outputs."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from reference import config, hf_model

    image = random_image(1, 40, 40, seed=13)
    for name in ("clip_quickgelu_f32", "siglip_f32", "llava_f32"):
        sd = load(loader, name).get_sd()
        model, projector = hf_model(name)
        # ComfyUI's tower has no SigLIP pooling head (HF's has).
        want = {k for k in model.state_dict() if "position_ids" not in k and not k.startswith("head.")}
        got = {k[len("vision_model."):] if k[len("vision_model."):] in want else k for k in sd}
        got -= {k for k in got if k.startswith("multi_modal_projector.")}
        assert got == want, (name, sorted(got ^ want))
        assert any(k.startswith("multi_modal_projector.") for k in sd) == (projector is not None)
    # open_clip keys come back under HF names (q/k/v split, projection transposed).
    cv = load(loader, "open_clip_f32")
    sd = cv.get_sd()
    assert not any(k.startswith("visual.") for k in sd) and "logit_scale" not in sd
    cfg = config("open_clip_f32")
    hf = CLIPVisionModelWithProjection(CLIPVisionConfig(
        **cfg["vision_config"], projection_dim=cfg["projection_dim"], attn_implementation="eager"))
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    out = cv.encode_image(image, crop=True)
    pixels = comfy_preprocess(image, 32, *mean_std("clip_quickgelu_f32"), crop=True)
    with torch.no_grad():
        h = hf.eval()(pixel_values=pixels, output_hidden_states=True)
    assert max_diff(out.image_embeds, h.image_embeds) <= TOL
    assert max_diff(out.penultimate_hidden_states, h.hidden_states[-2]) <= TOL


def test_checkpoint_save_flow_writes_the_clip_vision_tensors(loader, tmp_path):
    """What ImageOnlyCheckpointSave does with get_sd(): prefix the keys for the checkpoint and
    save them beside the model's (here: with safetensors, as comfy.utils.save_torch_file)."""
    from safetensors.torch import load_file, save_file

    sd = load(loader, "clip_gelu_f16").get_sd()
    prefixed = {f"conditioner.embedders.0.{k}": v for k, v in sd.items()}
    save_file(prefixed, str(tmp_path / "ckpt.safetensors"))
    back = load_file(str(tmp_path / "ckpt.safetensors"))
    original = load_file(str(ROOT / "tests/fixtures/models/clip_gelu_f16/model.safetensors"))
    for k, v in sd.items():
        assert torch.equal(back[f"conditioner.embedders.0.{k}"], original[k])
        assert v.dtype == original[k].dtype


def test_a_file_that_is_no_vision_tower_gets_a_readable_message(loader, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    save_file({"decoder.conv_in.weight": torch.zeros(4, 4)}, str(tmp_path / "vae.safetensors"))
    monkeypatch.setattr(folder_paths, "CLIP_VISION_EXTRA", [tmp_path])
    with pytest.raises(Exception) as e:
        getattr(loader, "load_clip")(clip_name="vae.safetensors", device="cpu", eject_models=False)
    msg = str(e.value)
    assert "no known CLIP Vision family matches this file. Looked for: CLIP and SigLIP," in msg, msg
    assert ") DINOv2" not in msg and "; DINOv2, encoder.layer" in msg, msg
    assert msg.rstrip().endswith("beside the weights"), msg
