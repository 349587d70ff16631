"""The distorch_vision package over the C ABI: HF parity through encode_pixels, the IMAGE path
against the CLI's preprocess + encode, errors, lifetime, input and output handling."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file

import distorch_vision as dv
from reference import (FIXTURES, ROOT, assert_openvino_cpu_refused, fixture, hf_outputs, intel_cpu, max_diff,
                       random_image)

ALL_FIXTURES = sorted(p.name for p in FIXTURES.iterdir() if (p / "expected.safetensors").is_file())
TOL = 1e-4  # contract §3 accuracy contract (fp32 CPU)


def load_fixture(name, **kw):
    kw.setdefault("device", "cpu")
    kw.setdefault("eject_models", False)
    return dv.load(fixture(name) / "model.safetensors", **kw)


def pixels_of(name):
    """A fixture's NCHW pixels, or a naflex fixture's (patches, spatial_shapes)."""
    px = load_file(str(fixture(name) / "pixels.safetensors"))
    if "spatial_shapes" in px:
        return px["pixel_values"], px["spatial_shapes"]
    (px,) = px.values()
    return px


def encode_fixture(m, px, **kw):
    """encode_pixels, or encode_patches for a naflex fixture's (patches, grids)."""
    if isinstance(px, tuple):
        return m.encode_patches(*px, **kw)
    return m.encode_pixels(px, **kw)


def cli() -> Path:
    env = os.environ.get("DISTORCH_VISION_CLI")
    candidates = [Path(env)] if env else [ROOT / "target/release/distorch-vision",
                                          ROOT / "target/debug/distorch-vision"]
    for p in candidates:
        if p.is_file():
            return p
    pytest.fail(f"the distorch-vision CLI is not built (looked in {', '.join(map(str, candidates))}); "
                "run `cargo build` or scripts/test.sh", pytrace=False)


# ------------------------------------------------------------------------------ parity

def test_fixtures_present():
    assert len(ALL_FIXTURES) >= 6, ALL_FIXTURES


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_encode_pixels_matches_hugging_face(library_path, name):
    expected = load_file(str(fixture(name) / "expected.safetensors"))
    px = pixels_of(name)
    # all_hidden_states is never a default output: it is encoded only when named.
    on_request = sorted(k for k in expected if k == "all_hidden_states")
    naflex = isinstance(px, tuple)
    with load_fixture(name) as m:
        assert m.naflex == naflex
        if naflex:  # any aspect ratio: no square size; the grids come back as int64
            assert (m.image_size, m.patch_size, m.num_patches) == (0, 4, 64)
        else:
            assert m.image_size == px.shape[-1]
        defaults = set(expected) - set(on_request)
        assert set(m.output_names) == defaults, (m.output_names, sorted(expected))
        out = encode_fixture(m, px)
        assert list(out) == list(m.output_names) + (["spatial_shapes"] if naflex else [])
        if naflex:
            assert out["spatial_shapes"].dtype == np.int64
            assert (out.pop("spatial_shapes") == px[1]).all()
        if on_request:
            out.update(encode_fixture(m, px, outputs=on_request))
        for k, v in expected.items():
            assert out[k].dtype == np.float32
            d = max_diff(out[k], v)
            print(f"{name}/{k}: max |diff| vs HF = {d:.2e}")
            assert d <= TOL, f"{name}/{k}: {d}"
        # The same pixels as a torch tensor, asking for torch back and one output by name.
        tpx = tuple(map(torch.from_numpy, px)) if naflex else torch.from_numpy(px)
        t = encode_fixture(m, tpx, outputs=["image_embeds"], as_torch=True)
        t.pop("spatial_shapes", None)
        assert list(t) == ["image_embeds"] and isinstance(t.image_embeds, torch.Tensor)
        assert max_diff(t.image_embeds, expected["image_embeds"]) <= TOL


@pytest.mark.parametrize("engine", ["mlas", "openvino"])
def test_each_cpu_engine_matches_hugging_face(library_path, engine):
    """cpu_engine through the Python API (dv_load_options version 5): both engines within the
    fp32 tolerance of Hugging Face, and the plan names the engine of every block."""
    if engine == "openvino" and not intel_cpu():
        with pytest.raises(dv.DistorchError) as e:
            load_fixture("clip_quickgelu_f32", cpu_engine=engine, openvino_ep=ROOT / ".runtime/openvino")
        assert_openvino_cpu_refused(str(e.value), "cpu_engine: openvino")
        assert isinstance(e.value, ValueError), type(e.value)
        pytest.skip(f"not an Intel CPU, so OpenVINO's CPU device is not offered (the refusal checked): {e.value}")
    for name in ("clip_quickgelu_f32", "dinov2_swiglu_f32"):
        expected = load_file(str(fixture(name) / "expected.safetensors"))
        with load_fixture(name, cpu_engine=engine, openvino_ep=ROOT / ".runtime/openvino") as m:
            assert {b["engine"] for b in m.plan()["blocks"]} == {engine}
            out = m.encode_pixels(pixels_of(name), outputs=list(expected))
            for k, v in expected.items():
                assert max_diff(out[k], v) <= TOL, f"{engine} {name}/{k}"


def test_an_openvino_load_leaves_the_hosts_locale_alone(library_path, tmp_path):
    """OpenVINO's compile sets the process's C locale to "C" and back; two compiles at once left
    "C" behind, and this interpreter's default text encoding became ASCII."""
    import locale

    if not intel_cpu():
        pytest.skip("not an Intel CPU: the OpenVINO plugin compiles nothing here")
    before = (locale.setlocale(locale.LC_ALL), locale.getpreferredencoding(False))
    for name in ("clip_quickgelu_f32", "siglip_f32"):
        with load_fixture(name, cpu_engine="openvino", openvino_ep=ROOT / ".runtime/openvino",
                          graphs_dir=tmp_path) as m:  # a fresh folder: every block compiled
            m.encode_pixels(pixels_of(name))
    assert (locale.setlocale(locale.LC_ALL), locale.getpreferredencoding(False)) == before


def test_bf16_through_python_or_the_missing_cpu_feature(library_path):
    expected = load_file(str(fixture("clip_quickgelu_f32") / "expected.safetensors"))["image_embeds"]
    try:
        m = load_fixture("clip_quickgelu_f32", dtype="bf16", openvino_ep=str(ROOT / ".runtime/openvino"))
    except dv.DistorchError as e:
        # On CPUs without a bf16 unit the message names what is missing; off Intel CPUs, the plugin.
        if intel_cpu() or "this CPU has neither" in str(e):
            assert "AMX" in str(e) and "AVX512_BF16" in str(e), e
        else:
            assert_openvino_cpu_refused(str(e), "dtype: bf16")
        pytest.skip(f"bf16 does not run on this CPU (the refusal checked): {e}")
    with m:
        got = m.encode_pixels(pixels_of("clip_quickgelu_f32"), outputs=["image_embeds"]).image_embeds
    cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    print(f"bf16 image_embeds cosine vs HF fp32: {cos.min():.6f}")
    assert cos.min() >= 0.999


def test_an_intel_gpu_that_is_not_there_is_a_clear_error(library_path):
    """xpu:N through Python: on a machine whose OpenVINO plugin lists no Intel GPU the load says
    so (where one exists, this check does not apply)."""
    if any(d["device"].startswith("xpu:") for d in dv.devices()):
        pytest.skip("this machine has an Intel GPU")
    with pytest.raises(dv.DistorchError, match="xpu:0"):
        load_fixture("clip_quickgelu_f32", device="xpu:0")
def test_naflex_images_match_hugging_face_processor_and_model(library_path):
    # Images of several aspect ratios, each encoded from its uint8 array (our preprocessing,
    # ComfyUI's siglip2_preprocess), against HF's own processor and Siglip2VisionModel.
    from reference import hf_siglip2
    from transformers import Siglip2ImageProcessorPil

    name = "siglip2_naflex_f32"
    processor = Siglip2ImageProcessorPil(patch_size=4, max_num_patches=64)
    model = hf_siglip2(name)
    files = ["big_480x400.png", "landscape_131x33.png", "portrait_45x77.png", "down_97x61.png",
             "rgba_33x50.png", "up_20x13.png"]
    with load_fixture(name) as m:
        for f in files:
            img = Image.open(ROOT / "tests/fixtures/images" / f).convert("RGB")
            ours = m.encode_images(np.asarray(img))
            inputs = processor(images=[img], return_tensors="pt")
            with torch.no_grad():
                hf = model(**inputs)
            assert (ours["spatial_shapes"] == inputs["spatial_shapes"].numpy()).all(), f
            rows, cols = ours["spatial_shapes"][0]
            n = int(rows * cols)
            cos = torch.nn.functional.cosine_similarity
            c = float(cos(torch.from_numpy(ours["image_embeds"]), hf.pooler_output)[0])
            cl = float(cos(torch.from_numpy(ours["last_hidden_state"][0, :n]).flatten()[None],
                           hf.last_hidden_state[0, :n].flatten()[None])[0])
            print(f"{f} ({rows}x{cols}): image_embeds cosine {c:.6f}, last_hidden_state {cl:.6f}")
            assert c >= 0.999 and cl >= 0.999, (f, c, cl)
            assert not ours["last_hidden_state"][0, n:].any()  # padding rows are zero


def test_all_hidden_states_on_request_or_a_clear_error(library_path):
    """all_hidden_states (contract §3, on request) is passed through by name when the library has it."""
    name = "siglip_f32"
    px = pixels_of(name)
    with load_fixture(name) as m:
        try:
            out = m.encode_pixels(px, outputs="all_hidden_states")
        except dv.DistorchError as e:
            print(f"library without all_hidden_states: {e}")
            assert "all_hidden_states" in e.message, e.message
            return
        ref = hf_outputs(name, torch.from_numpy(px))["all_hidden_states"]
        d = max_diff(out.all_hidden_states, ref)
        print(f"{name}/all_hidden_states: max |diff| vs HF = {d:.2e}")
        assert d <= TOL


# ------------------------------------------------------------------------------ IMAGE path

def _read_safetensors_f32(path):
    return {k: v for k, v in load_file(str(path)).items()}


@pytest.mark.parametrize("image,crop", [("portrait_45x77.png", "center"),
                                        ("landscape_131x33.png", "none"),
                                        ("up_20x13.png", "center")])
def test_encode_images_equals_cli_preprocess_then_encode(library_path, tmp_path, image, crop):
    name = "clip_quickgelu_f32"
    model = fixture(name) / "model.safetensors"
    src = ROOT / "tests/fixtures/images" / image
    px_file, out_file = tmp_path / "px.safetensors", tmp_path / "out.safetensors"
    env = dict(os.environ, DISTORCH_LOG="error")
    for args in (["preprocess", "--model", model, "--images", src, "--crop", crop, "--out", px_file],
                 ["encode", "--model", model, "--pixels", px_file, "--out", out_file,
                  "--device", "cpu", "--eject-models", "false"]):
        r = subprocess.run([cli(), *map(str, args)], capture_output=True, text=True, env=env)
        assert r.returncode == 0, f"{args[0]}: {r.stderr}"
    cli_pixels = _read_safetensors_f32(px_file)
    cli_out = _read_safetensors_f32(out_file)

    rgb = np.asarray(Image.open(src).convert("RGB"), dtype=np.float32) / 255.0
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 0.25, np.float32)], axis=-1)
    with load_fixture(name) as m:
        for img in (rgb[None], torch.from_numpy(rgba)):  # [1,H,W,3] numpy; [H,W,4] torch
            out = m.encode_images(img, crop=crop)
            assert sorted(out) == sorted(cli_out)
            for k, v in cli_out.items():
                d = max_diff(out[k], v)
                assert d <= 1e-5, f"{image}/{crop}/{k}: {d}"
    (px,) = cli_pixels.values()
    assert px.shape == (1, 3, 32, 32)


def test_crop_accepts_comfyui_booleans(library_path):
    img = random_image(2, 40, 24, seed=3)
    with load_fixture("siglip_f32") as m:
        a = m.encode_images(img, crop=True)
        b = m.encode_images(img, crop="center")
        c = m.encode_images(img, crop=False)
        d = m.encode_images(img, crop="none")
    assert max_diff(a.last_hidden_state, b.last_hidden_state) == 0
    assert max_diff(c.last_hidden_state, d.last_hidden_state) == 0
    assert max_diff(a.last_hidden_state, c.last_hidden_state) > 1e-3


def test_encode_images_scales_uint8_and_flags_wrong_ranges(library_path):
    img = random_image(1, 20, 28, seed=5)
    u8 = np.round(np.asarray(img) * 255).astype(np.uint8)
    with load_fixture("clip_quickgelu_f32") as m:
        ref = m.encode_images(u8.astype(np.float32) / 255.0).image_embeds
        for x in (u8, torch.from_numpy(u8)):
            assert max_diff(m.encode_images(x).image_embeds, ref) <= 1e-6
        for bad in (u8.astype(np.int16), torch.from_numpy(u8.astype(np.int32)), u8 > 0):
            name = str(bad.dtype).replace("torch.", "")
            with _raises("DV_ERR_INVALID_ARGUMENT", f"dtype {name}", "uint8"):
                m.encode_images(bad)
        with pytest.warns(UserWarning, match="0..1"):
            m.encode_images(u8.astype(np.float32))
        with pytest.warns(UserWarning, match="0..1"):
            m.encode_images(torch.from_numpy(u8.astype(np.float32)))


# ------------------------------------------------------------------------------ errors

def _raises(status, *fragments):
    class Check:
        def __enter__(self):
            return self

        def __exit__(self, typ, e, tb):
            assert typ is not None, f"expected DistorchError {status}"
            assert isinstance(e, dv.DistorchError), f"{typ.__name__}: {e}"
            assert e.status == status, f"{e.status}: {e.message}"
            for f in fragments:
                assert f in e.message, f"{f!r} not in {e.message!r}"
            assert str(e).startswith(status + ": ")
            return True

    return Check()


def test_load_errors_name_the_bad_value(library_path, tmp_path):
    model = fixture("clip_quickgelu_f32") / "model.safetensors"
    with _raises("DV_ERR_NOT_FOUND", "nope.safetensors"):
        dv.load(tmp_path / "nope.safetensors", device="cpu")
    with _raises("DV_ERR_INVALID_ARGUMENT", "tpu:0"):
        dv.load(model, device="tpu:0")
    with _raises("DV_ERR_INVALID_ARGUMENT", "cpu,abc"):
        dv.load(model, device="cpu", expert_mode_allocations="cpu,abc")
    with _raises("DV_ERR_INVALID_ARGUMENT", "virtual_vram_gb"):
        dv.load(model, device="cpu", virtual_vram_gb=500.0)
    with _raises("DV_ERR_INVALID_ARGUMENT", "virtual_vram_gb", "'lots'"):
        dv.load(model, device="cpu", virtual_vram_gb="lots")
    with _raises("DV_ERR_INVALID_ARGUMENT", "dtype"):
        dv.load(model, device="cpu", dtype="fp8")
    for flag in ("false", "no", 0, None):
        with _raises("DV_ERR_INVALID_ARGUMENT", "eject_models", repr(flag)):
            dv.load(model, device="cpu", eject_models=flag)
    with _raises("DV_ERR_INVALID_ARGUMENT", "device", "0"):
        dv.load(model, device=0)
    with _raises("DV_ERR_INVALID_ARGUMENT", "dtype", "32"):
        dv.load(model, device="cpu", dtype=32)
    with _raises("DV_ERR_INVALID_ARGUMENT", "virtual_vram_gb", "'4'"):
        dv.load(model, device="cpu", virtual_vram_gb="4")
    dv.load(model, device="cpu", eject_models=np.bool_(False)).close()
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with _raises("DV_ERR_INVALID_MODEL"):
        dv.load(bad, device="cpu")
    assert dv.live_objects()["models"] == 0


def test_errors_name_keyword_arguments_and_kinds_match_the_cli(library_path, tmp_path, monkeypatch):
    """Library messages name options as this API's keyword arguments (the CLI shows its own
    flags instead), and DistorchError.kind is the kind the CLI's --json errors print."""
    model = fixture("clip_quickgelu_f32") / "model.safetensors"
    monkeypatch.delenv("COMFYUI_PATH", raising=False)  # no model folders: the message says how
    with _raises("DV_ERR_NOT_FOUND", "`comfyui_path=PATH`", "`extra_model_paths=FILE`"):
        dv.load("no_such_model", device="cpu")
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    cases = [  # (keyword arguments, the CLI's flags) of one mistake
        (dict(clip_vision=tmp_path / "nope.safetensors"), ["inspect", "--model", str(tmp_path / "nope.safetensors")]),
        (dict(clip_vision=model, device="tpu:0"), ["plan", "--model", str(model), "--device", "tpu:0"]),
        (dict(clip_vision=bad), ["inspect", "--model", str(bad)]),
        (dict(clip_vision=model, donor_policy="sideways"), None),
    ]
    for kwargs, argv in cases:
        kwargs.setdefault("device", "cpu")
        with pytest.raises(dv.DistorchError) as e:
            dv.load(**kwargs)
        assert "--" not in e.value.message, e.value.message
        assert e.value.kind == e.value.status.removeprefix("DV_ERR_").lower()
        if argv is None:
            assert e.value.kind == "invalid_argument" and "donor_policy" in e.value.message
            continue
        r = subprocess.run([str(cli()), *argv, "--json"], capture_output=True, text=True)
        assert r.returncode == 1, r.stderr
        assert json.loads(r.stdout)["error"]["kind"] == e.value.kind, (r.stdout, e.value)


def test_cpu_engine_errors_name_keyword_arguments_here_and_flags_in_the_cli(library_path, tmp_path):
    """The CPU engine's messages (contract §6.4) name this API's keyword arguments, not the
    CLI's flags, which the CLI shows instead; a missing plugin's advice is a command that works
    where the wheel is installed (no package named distorch-vision is on PyPI)."""
    model = fixture("clip_quickgelu_f32") / "model.safetensors"
    nowhere = tmp_path / "no-openvino-plugin"
    flags_re = re.compile(r"--(cpu-engine|dtype|device|openvino-ep)\b")
    cases = [  # (keyword arguments, the CLI's flags, what the message names here, in the CLI)
        (dict(dtype="bf16", cpu_engine="mlas"), ["--dtype", "bf16", "--cpu-engine", "mlas"],
         "`cpu_engine=openvino`", "--cpu-engine openvino"),
        (dict(dtype="int8", cpu_engine="openvino"), ["--dtype", "int8", "--cpu-engine", "openvino"],
         "`cpu_engine=mlas`", "--cpu-engine mlas"),
        (dict(dtype="fp16", cpu_engine="openvino"), ["--dtype", "fp16", "--cpu-engine", "openvino"],
         "`dtype=fp32`", "--dtype fp32"),
    ]
    for kwargs, flags, here, in_cli in cases:
        with pytest.raises(dv.DistorchError) as e:
            dv.load(model, device="cpu", **kwargs)
        msg = e.value.message
        assert here in msg and not flags_re.search(msg), msg
        r = subprocess.run([str(cli()), "plan", "--model", str(model), "--device", "cpu", *flags],
                           capture_output=True, text=True)
        assert r.returncode == 1 and in_cli in r.stderr, r.stderr
    # A plugin path that holds none: in a process of its own (this one may have registered the
    # checkout's plugin already, and a process keeps the first).
    code = textwrap.dedent(f"""
        import distorch_vision as dv
        try:
            dv.load({str(model)!r}, device="cpu", cpu_engine="openvino", openvino_ep={str(nowhere)!r})
        except dv.DistorchError as e:
            print(e.message)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    msg = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout
    assert "`cpu_engine=openvino` needs the OpenVINO plugin" in msg and not flags_re.search(msg), msg
    assert "pip install onnxruntime-ep-openvino==1.8.1" in msg and 'pip install "distorch-vision[' not in msg, msg
    r = subprocess.run([str(cli()), "plan", "--model", str(model), "--device", "cpu", "--cpu-engine", "openvino",
                        "--openvino-ep", str(nowhere)], capture_output=True, text=True)
    assert r.returncode == 1 and "--cpu-engine openvino needs the OpenVINO plugin" in r.stderr, r.stderr


def test_load_options_reach_the_library_with_every_version(library_path):
    """The package fills the newest dv_load_options (capi_mirrors holds its fields to the
    header's): donor_policy (version 3) reaches the plan."""
    from distorch_vision.library import LoadOptions

    assert {"dtype", "donor_policy", "micro_batch"} <= {f for f, _ in LoadOptions._fields_}
    for policy in ("stream", "execute"):
        with load_fixture("clip_quickgelu_f32", donor_policy=policy) as m:
            assert m.plan()["donor_policy"] == policy


def test_encode_errors_name_the_shape(library_path):
    with load_fixture("clip_quickgelu_f32") as m:
        with _raises("DV_ERR_INVALID_ARGUMENT", "[B, 3, 32, 32]"):
            m.encode_pixels(np.zeros((3, 32, 32), np.float32))
        with _raises("DV_ERR_INVALID_ARGUMENT", "32"):
            m.encode_pixels(np.zeros((1, 3, 16, 16), np.float32))
        with _raises("DV_ERR_INVALID_ARGUMENT", "[B, H, W, C]"):
            m.encode_images(np.zeros((32, 32), np.float32))
        with _raises("DV_ERR_INVALID_ARGUMENT", "C is 2"):
            m.encode_images(np.zeros((1, 8, 8, 2), np.float32))
        with _raises("DV_ERR_INVALID_ARGUMENT", "crop", "'middle'"):
            m.encode_images(np.zeros((1, 8, 8, 3), np.float32), crop="middle")
        with _raises("DV_ERR_INVALID_ARGUMENT", "batch_size"):
            m.encode_pixels(np.zeros((1, 3, 32, 32), np.float32), batch_size=-1)
        with _raises("DV_ERR_INVALID_ARGUMENT", "pixels"):
            m.encode_pixels([["not", "numbers"]])
        with pytest.raises(dv.DistorchError) as e:
            m.encode_pixels(np.zeros((1, 3, 32, 32), np.float32), outputs="no_such_output")
        assert "no_such_output" in e.value.message
    with _raises("DV_ERR_INVALID_HANDLE", "closed"):
        m.encode_pixels(np.zeros((1, 3, 32, 32), np.float32))
    assert dv.live_objects() == {"models": 0, "outputs": 0, "strings": 0}


def test_missing_library_names_setup_sh(tmp_path):
    """An installed copy without the library, and a wrong DISTORCH_VISION_LIBRARY, both fail
    with one message that says how to build it."""
    shutil.copytree(ROOT / "python/distorch_vision", tmp_path / "site/distorch_vision",
                    ignore=shutil.ignore_patterns("lib", "__pycache__"))
    code = textwrap.dedent("""
        import distorch_vision as dv
        try:
            dv.devices()
        except dv.LibraryNotFoundError as e:
            print(e.status, e.message)
        else:
            raise SystemExit("no error")
    """)
    env = {k: v for k, v in os.environ.items() if k != "DISTORCH_VISION_LIBRARY"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    for extra in ({}, {"DISTORCH_VISION_LIBRARY": str(tmp_path / "missing.so")}):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=dict(env, **extra), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert "DV_ERR_RUNTIME" in r.stdout and "scripts/setup.sh" in r.stdout, r.stdout
        assert "libdistorch_vision.so not found" in r.stdout, r.stdout


# ------------------------------------------------------------------------------ API

def test_plan_image_size_and_lifetime(library_path):
    before = dv.live_objects()["models"]
    with load_fixture("llava_f32") as m:
        assert dv.live_objects()["models"] == before + 1
        plan = m.plan()
        assert plan["compute_device"] == "cpu" and plan["mode"] == "none"
        assert [b["name"] for b in plan["blocks"]][0] == "embed"
        assert all(b["exec"] == "cpu" for b in plan["blocks"])
        assert plan["model_bytes"] == sum(b["bytes"] for b in plan["blocks"])
        table = m.plan_table()
        assert "embed..head" in table and "cpu" in table
        assert m.image_size == 32
        assert m.output_names == ("last_hidden_state", "image_embeds",
                                  "penultimate_hidden_states", "mm_projected")
        assert "image_size=32" in repr(m)
    assert m.closed and dv.live_objects()["models"] == before
    m.close()  # a second close is a no-op
    with _raises("DV_ERR_INVALID_HANDLE"):
        m.plan()


def test_donor_policy_micro_batch_and_identity(library_path):
    """dv_load_options version 4 from Python: the donor policy reaches the plan, micro-batches
    give the same rows, bad values are named; identity() is the weights' content id."""
    px = np.random.default_rng(3).random((5, 3, 32, 32), dtype=np.float32)
    with load_fixture("clip_quickgelu_f32") as plain:
        ref = plain.encode_pixels(px)["image_embeds"]
        ident = plain.identity()
    path = fixture("clip_quickgelu_f32") / "model.safetensors"
    with dv.load(path, device="cpu", eject_models=False, donor_policy="execute", micro_batch=2) as m:
        assert m.plan()["donor_policy"] == "execute"
        assert np.abs(m.encode_pixels(px)["image_embeds"] - ref).max() == 0
        assert m.identity() == ident
    assert len(ident["model_id"]) == 32 and ident["dtype"] == "fp32" and ident["config"]["image_size"] == 32
    with load_fixture("siglip_f32") as other:
        assert other.identity()["model_id"] != ident["model_id"]
    with _raises("DV_ERR_INVALID_ARGUMENT", "micro_batch is 0"):
        dv.load(path, device="cpu", micro_batch=0)
    with _raises("DV_ERR_INVALID_ARGUMENT", "donor_policy"):
        dv.load(path, device="cpu", donor_policy="sideways")


def test_devices_and_version(library_path):
    devs = dv.devices()
    assert any(d["device"] == "cpu" and d["total_bytes"] > 0 for d in devs), devs
    assert dv.version() == "0.1.0"


def test_outputs_read_by_attribute_and_key(library_path):
    with load_fixture("clip_quickgelu_f32") as m:
        out = m.encode_pixels(pixels_of("clip_quickgelu_f32"))
    assert out.image_embeds is out["image_embeds"]
    assert "image_embeds" in dir(out)
    with pytest.raises(AttributeError, match="mm_projected"):
        out.mm_projected


def test_contiguous_f32_inputs_are_not_copied():
    from distorch_vision.arrays import F32Buffer

    a = np.zeros((2, 3, 4, 4), np.float32)
    assert F32Buffer(a, "x").ptr == a.ctypes.data
    t = torch.zeros((2, 3, 4, 4))
    assert F32Buffer(t, "x").ptr == t.data_ptr()
    # Views that are not contiguous f32 are converted (a copy), with the same values.
    nc = torch.arange(2 * 3 * 4 * 4, dtype=torch.float64).reshape(2, 4, 4, 3).permute(0, 3, 1, 2)
    b = F32Buffer(nc, "x")
    assert b.ptr != nc.data_ptr() and b.shape == (2, 3, 4, 4)
    assert torch.equal(b.owner, nc.float())


def test_non_contiguous_and_f64_inputs_encode_the_same(library_path):
    px = pixels_of("clip_gelu_f16")
    with load_fixture("clip_gelu_f16") as m:
        ref = m.encode_pixels(px)
        nhwc = np.ascontiguousarray(px.transpose(0, 2, 3, 1)).astype(np.float64)
        again = m.encode_pixels(nhwc.transpose(0, 3, 1, 2))
    for k in ref:
        assert max_diff(ref[k], again[k]) == 0


def test_threads_encode_one_model_concurrently(library_path):
    from concurrent.futures import ThreadPoolExecutor

    px = pixels_of("clip_quickgelu_f32")
    with load_fixture("clip_quickgelu_f32") as m:
        ref = m.encode_pixels(px).image_embeds
        with ThreadPoolExecutor(4) as pool:
            outs = list(pool.map(lambda _: m.encode_pixels(px).image_embeds, range(8)))
    for o in outs:
        assert max_diff(o, ref) == 0


def test_interpreter_exits_cleanly_after_use(library_path, tmp_path):
    """A script that encodes and exits (the atexit hook runs dv_shutdown when the library has it)."""
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT / 'python')!r})
        import numpy as np, distorch_vision as dv
        from distorch_vision import library
        m = dv.load({str(fixture('clip_quickgelu_f32') / 'model.safetensors')!r}, device="cpu")
        print(m.encode_pixels(np.zeros((1, 3, 32, 32), np.float32)).image_embeds.shape)
        print("has dv_shutdown:", library.lib().has("dv_shutdown"))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "(1, 16)" in r.stdout


def test_python_m_cli_encodes_and_reports_errors(library_path, tmp_path):
    name = "llava_f32"
    px = tmp_path / "px.npy"
    np.save(px, pixels_of(name))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    model = str(fixture(name) / "model.safetensors")
    r = subprocess.run([sys.executable, "-m", "distorch_vision", "encode", model, "--device", "cpu",
                        "--pixels", str(px), "--out", str(tmp_path / "o.npz")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "mm_projected [2, 16, 48]" in r.stdout
    got = np.load(tmp_path / "o.npz")
    expected = load_file(str(fixture(name) / "expected.safetensors"))
    for k, v in expected.items():
        assert max_diff(got[k], v) <= TOL
    r = subprocess.run([sys.executable, "-m", "distorch_vision", "plan", model, "--device", "tpu:1"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "DV_ERR_INVALID_ARGUMENT" in r.stderr and "tpu:1" in r.stderr, r.stderr
    # Every loader option of load() is a flag: the CPU engine (and bf16) of contract §6.4 too.
    r = subprocess.run([sys.executable, "-m", "distorch_vision", "plan", model, "--device", "cpu",
                        "--cpu-engine", "mlas", "--micro-batch", "2", "--json"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert {b["engine"] for b in json.loads(r.stdout)["blocks"]} == {"mlas"}, r.stdout
    r = subprocess.run([sys.executable, "-m", "distorch_vision", "plan", model, "--device", "cpu",
                        "--dtype", "bf16", "--cpu-engine", "mlas"], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "cpu_engine is mlas" in r.stderr, r.stderr
    for args, fragment in ((["--pixels", str(tmp_path / "missing.npy")], "missing.npy"),
                           (["--image", str(tmp_path / "o.npz")], "o.npz")):
        r = subprocess.run([sys.executable, "-m", "distorch_vision", "encode", model, "--device", "cpu",
                            *args, "--out", str(tmp_path / "p.npz")], capture_output=True, text=True, env=env)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("error: ") and fragment in r.stderr, r.stderr


def test_python_m_encode_never_replaces_a_file_it_did_not_write_and_names_its_rows(library_path, tmp_path):
    """`python -m distorch_vision encode --out` follows the CLI's rule (README, "What --out may
    replace"): an existing file is replaced only if this program wrote it, and --out is written
    under the name given; rows of --images come with their sources, folders expanded."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    model = str(fixture("clip_quickgelu_f32") / "model.safetensors")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("b.png", "a.png"):
        shutil.copy(ROOT / "tests/fixtures/images/exact_32x32.png", folder / name)
    single = ROOT / "tests/fixtures/images/plain_64x48.jpg"

    def encode(out):
        return subprocess.run([sys.executable, "-m", "distorch_vision", "encode", model, "--device", "cpu",
                               "--images", str(single), str(folder), "--out", str(out)],
                              capture_output=True, text=True, env=env)

    theirs = tmp_path / "theirs.npz"
    np.savez(theirs, keep=np.arange(3))
    before = theirs.read_bytes()
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not ours")
    array = tmp_path / "array.npy"
    np.save(array, np.arange(3))
    for out in (theirs, photo, array):
        r = encode(out)
        assert r.returncode == 1 and str(out) in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert theirs.read_bytes() == before and photo.read_bytes() == b"not ours"
    out = tmp_path / "emb"  # written under this very name, not emb.npz
    for _ in range(2):  # the second run replaces the first's file: this program wrote it
        r = encode(out)
        assert r.returncode == 0, r.stderr
    assert not (tmp_path / "emb.npz").exists()
    got = np.load(out)
    assert list(got["sources"]) == [str(single), str(folder / "a.png"), str(folder / "b.png")]
    assert got["image_embeds"].shape == (3, 16)


def test_exit_hook_calls_dv_shutdown_once_when_exported():
    from types import SimpleNamespace

    from distorch_vision.library import Library

    calls = []
    fake = object.__new__(Library)
    fake.cdll = SimpleNamespace(dv_shutdown=lambda: calls.append(1) or 0)
    fake.shut_down = False
    fake.shutdown()
    fake.shutdown()
    assert calls == [1] and fake.shut_down
    older = object.__new__(Library)  # a library without dv_shutdown: the hook does nothing
    older.cdll = SimpleNamespace()
    older.shut_down = False
    older.shutdown()
    assert older.shut_down


def test_exit_hook_is_registered_when_the_library_loads(library_path):
    code = textwrap.dedent(f"""
        import atexit, sys
        sys.path.insert(0, {str(ROOT / 'python')!r})
        registered = []
        real = atexit.register
        atexit.register = lambda f, *a, **k: (registered.append(f), real(f, *a, **k))[1]
        import distorch_vision as dv
        assert not registered, "registered before the library was used"
        dv.devices()
        from distorch_vision import library
        print([f == library.lib().shutdown for f in registered])
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[True]", r.stdout


def test_nearest_neighbours_reads_every_output_layout(library_path, tmp_path):
    model = fixture("clip_quickgelu_f32") / "model.safetensors"
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for f in ("portrait_45x77.png", "landscape_131x33.png", "up_20x13.png"):
        shutil.copy(ROOT / "tests/fixtures/images" / f, imgs / f)
    env = dict(os.environ, DISTORCH_LOG="error")
    layouts = {"one.safetensors": [], "one.npy": ["--outputs", "image_embeds"],
               "npydir": ["--format", "npy"], "shards": ["--shard-size", "2"]}
    script = ROOT / "scripts/nearest_neighbours.py"
    for out, extra in layouts.items():
        r = subprocess.run([cli(), "encode", "--model", model, "--images", imgs, "--out", tmp_path / out,
                            "--device", "cpu", "--eject-models", "false", "--graphs-dir", tmp_path / "g",
                            *extra], capture_output=True, text=True, env=env)
        assert r.returncode == 0, f"{out}: {r.stderr}"
        r = subprocess.run([sys.executable, script, tmp_path / out, "-k", "1"], capture_output=True, text=True)
        assert r.returncode == 0 and "Traceback" not in r.stderr, f"{out}: {r.stderr}"
        assert r.stdout.count("portrait_45x77.png") >= 1 and len(r.stdout.splitlines()) == 6, r.stdout
    r = subprocess.run([sys.executable, script, tmp_path / "nope"], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "nope" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, script, tmp_path / "one.safetensors", "--tensor", "x"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "'x'" in r.stderr and "image_embeds" in r.stderr, r.stderr


# ------------------------------------------------------------------------------ encode_files


def _comfy_load_image(path):
    """ComfyUI's LoadImage pixels (PIL: EXIF orientation applied, RGB) as 0..1 floats [1, H, W, 3]."""
    from PIL import ImageOps

    u8 = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    return torch.from_numpy(u8.astype(np.float32) / 255.0)[None]


def test_encode_files_takes_paths_and_pil_images_of_any_size(library_path):
    from reference import comfy_preprocess, mean_std

    name = "clip_quickgelu_f32"
    images = ROOT / "tests/fixtures/images"
    # Lossless files of several sizes (PIL's decode is the reference), EXIF-rotated ones included.
    files = [images / f for f in ("portrait_45x77.png", "exif6_27x18.png", "landscape_131x33.png",
                                  "palette_25x25.png", "grey_40x30.png", "exif8_27x18.webp")]
    with load_fixture(name) as m:
        for crop in ("center", "none"):
            out = m.encode_files([str(files[0]), *files[1:]], crop=crop)
            assert out.image_embeds.shape == (len(files), 16)
            pixels = torch.cat([comfy_preprocess(_comfy_load_image(f), 32, *mean_std(name),
                                                 crop=crop == "center") for f in files])
            ref = hf_outputs(name, pixels)
            for k in ("last_hidden_state", "image_embeds", "penultimate_hidden_states"):
                d = max_diff(out[k], ref[k])
                assert d <= TOL, f"{crop}/{k}: {d}"
            # PIL images give the same rows as their files, one file alone a batch of 1.
            pil = m.encode_files([Image.open(f) for f in files], crop=crop)
            for k in out:
                assert np.array_equal(pil[k], out[k]), k
            one = m.encode_files(files[2], crop=crop)
            assert np.array_equal(one.image_embeds[0], out.image_embeds[2])
        # A PIL image of a JPEG: the pixels PIL decoded, as ComfyUI's LoadImage has them.
        jpg = images / "exif6_40x24.jpg"
        out = m.encode_files(Image.open(jpg))
        ref = hf_outputs(name, comfy_preprocess(_comfy_load_image(jpg), 32, *mean_std(name), crop=True))
        assert max_diff(out.image_embeds, ref["image_embeds"]) <= TOL


def test_encode_files_errors_are_the_matching_builtins(library_path, tmp_path):
    (tmp_path / "notes.png").write_bytes(b"not an image")
    with load_fixture("clip_quickgelu_f32") as m:
        with pytest.raises(FileNotFoundError, match="missing.jpg"):
            m.encode_files([tmp_path / "missing.jpg"])
        with pytest.raises(ValueError, match="notes.png"):
            m.encode_files([tmp_path / "notes.png"])
        with pytest.raises(ValueError, match="PIL image"):
            m.encode_files([42])
        with pytest.raises(ValueError, match="empty"):
            m.encode_files([])


# ------------------------------------------------------------------------------ exceptions


def test_errors_are_also_the_matching_builtin_exceptions(library_path, tmp_path):
    model = fixture("clip_quickgelu_f32") / "model.safetensors"
    with pytest.raises(FileNotFoundError) as e:
        dv.load(tmp_path / "nope.safetensors")
    assert isinstance(e.value, dv.NotFoundError) and e.value.status == "DV_ERR_NOT_FOUND"
    with pytest.raises(ValueError) as e:
        dv.load(model, virtual_vram_gb=500.0, device="cpu")
    assert isinstance(e.value, dv.InvalidArgumentError) and "virtual_vram_gb" in e.value.message
    with pytest.raises(ValueError):
        dv.load(model, device="tpu:0")
    (tmp_path / "vae.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(ValueError) as e:
        dv.load(tmp_path / "vae.safetensors", device="cpu")
    assert isinstance(e.value, dv.InvalidModelError), type(e.value)
    # Status codes from the library map through the same classes (DV_ERR_DOES_NOT_FIT is 5).
    from distorch_vision.library import lib

    with pytest.raises(MemoryError) as e:
        lib().check(5, "dv_model_load")
    assert isinstance(e.value, dv.DoesNotFitError) and e.value.status == "DV_ERR_DOES_NOT_FIT"
    # Still one DistorchError to catch, picklable as itself.
    import pickle

    err = dv.DistorchError("DV_ERR_NOT_FOUND", "x.safetensors")
    assert type(err) is dv.NotFoundError and isinstance(err, OSError)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is dv.NotFoundError and back.message == "x.safetensors"
    assert type(dv.DistorchError("DV_ERR_RUNTIME", "r")) is dv.DistorchError


def test_as_torch_without_torch_says_to_install_it(library_path, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # this Python has no PyTorch
        import numpy as np
        import distorch_vision as dv
        m = dv.load({str(fixture("clip_quickgelu_f32") / "model.safetensors")!r}, device="cpu",
                    eject_models=False)
        print(m.encode_pixels(np.zeros((1, 3, 32, 32), np.float32)).image_embeds.shape)
        try:
            m.encode_pixels(np.zeros((1, 3, 32, 32), np.float32), as_torch=True)
        except ImportError as e:
            print("ImportError:", e)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "(1, 16)" in r.stdout
    assert "ImportError: as_torch=True returns torch tensors" in r.stdout, r.stdout
    assert "pip install torch" in r.stdout, r.stdout


def test_as_torch_without_torch_says_so_before_a_naflex_encode(library_path):
    """encode_patches (SigLIP2 naflex) checks as_torch up front, as the other encodes do."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # this Python has no PyTorch
        import numpy as np
        import distorch_vision as dv
        m = dv.load({str(fixture("siglip2_naflex_f32") / "model.safetensors")!r}, device="cpu",
                    eject_models=False)
        patches = np.zeros((1, 4, 3 * m.patch_size ** 2), np.float32)
        print(m.encode_patches(patches, [[2, 2]]).image_embeds.shape)
        try:
            m.encode_patches(patches, [[2, 2]], as_torch=True)
        except ImportError as e:
            print("ImportError:", e)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "ImportError: as_torch=True returns torch tensors" in r.stdout, r.stdout


def test_python_m_help_is_plain_text_with_examples():
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    for args in (["--help"], ["encode", "--help"]):
        r = subprocess.run([sys.executable, "-m", "distorch_vision", *args],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        assert "``" not in r.stdout and ":class:" not in r.stdout, r.stdout
        assert "examples:" in r.stdout and "--images" in r.stdout, r.stdout
