//! The forward pass of contract §3 as ONNX: one emitter per block kind, used both for per-block
//! graphs and for the single whole-model graph.
//!
//! Each emitter names the Hugging Face code it follows: `transformers/models/<family>/
//! modeling_<family>.py` of transformers 5.23 (the version the tests compare against, pinned in
//! python/requirements-test.txt), e.g. `clip/modeling_clip.py` `CLIPEncoderLayer.forward`.

use super::graph::{attr_int, attr_ints, Dim, GraphBuilder};
use super::naflex::{self, KEY_MASK, SPATIAL_SHAPES};
use super::onnx::{data_type, ModelProto};
use super::quant::QuantSink;
use super::ComputeDtype;
use crate::model::{names, Activation, BlockKind, Kind, Mlp, Model, Output};

/// Graph inputs and outputs of one block, as listed in the manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockIo {
    pub kind: BlockKind,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

pub const PIXELS: &str = "pixel_values";
/// The embed block's output.
const EMBEDDINGS: &str = "embeddings";
/// A layer's input (and the head's, but LLaVA's).
const HIDDEN: &str = "hidden_states";
/// A layer's output.
const HIDDEN_OUT: &str = "hidden_states_out";

/// Inputs and outputs of block `kind`.
pub fn block_io(model: &Model, kind: BlockKind) -> BlockIo {
    use Output::{ImageEmbeds, LastHiddenState, MmProjected, PenultimateHiddenStates};
    let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
    let o = |s: &[Output]| s.iter().map(|o| o.name().to_string()).collect();
    if model.config.kind.is_naflex() {
        // The patches with their grids, then a key mask for every block after the embedding.
        let (inputs, outputs) = match kind {
            BlockKind::Embed => (v(&[naflex::PATCHES, SPATIAL_SHAPES]), v(&[EMBEDDINGS])),
            BlockKind::Layer { .. } => (v(&[HIDDEN, KEY_MASK]), v(&[HIDDEN_OUT])),
            BlockKind::Head if model.config.attention_pool => {
                (v(&[HIDDEN, KEY_MASK]), o(&[LastHiddenState, ImageEmbeds]))
            }
            BlockKind::Head => (v(&[HIDDEN, KEY_MASK]), o(&[LastHiddenState])),
        };
        return BlockIo {
            kind,
            inputs,
            outputs,
        };
    }
    let (inputs, outputs) = match kind {
        BlockKind::Embed => (v(&[PIXELS]), v(&[EMBEDDINGS])),
        BlockKind::Head => match model.config.kind {
            Kind::Siglip => (v(&[HIDDEN]), o(&[LastHiddenState])),
            Kind::Siglip2 => unreachable!("naflex blocks are listed above"),
            Kind::Dinov2 | Kind::Dinov3 => (v(&[HIDDEN]), o(&[LastHiddenState, ImageEmbeds])),
            Kind::Clip if model.config.llava => (
                o(&[LastHiddenState, PenultimateHiddenStates]),
                o(&[ImageEmbeds, MmProjected]),
            ),
            Kind::Clip => (o(&[LastHiddenState]), o(&[ImageEmbeds])),
        },
        BlockKind::Layer { .. } => (v(&[HIDDEN]), v(&[HIDDEN_OUT])),
    };
    BlockIo {
        kind,
        inputs,
        outputs,
    }
}

/// Which output of the head block yields `output`, if the head computes it (SigLIP's
/// `image_embeds` is its `last_hidden_state`); `None` for outputs that are layer states.
pub fn head_output(model: &Model, output: Output) -> Option<usize> {
    let name = match (model.config.kind, output) {
        (Kind::Siglip, Output::ImageEmbeds) => Output::LastHiddenState.name(),
        (_, o) => o.name(),
    };
    block_io(model, BlockKind::Head)
        .outputs
        .iter()
        .position(|o| o == name)
}

fn hidden_dims(model: &Model) -> [Dim; 3] {
    let c = &model.config;
    let tokens = if c.kind.is_naflex() {
        Dim::Tokens
    } else {
        Dim::Fixed(c.tokens)
    };
    [Dim::Batch, tokens, Dim::Fixed(c.hidden_size)]
}

/// The naflex key mask input `[B, T]` (int32).
fn key_mask_input(g: &mut GraphBuilder) -> String {
    g.input_typed(KEY_MASK, data_type::INT32, &[Dim::Batch, Dim::Tokens])
}

/// The embed block's inputs: square pixels, or naflex patches with their grids.
fn embed_inputs(g: &mut GraphBuilder, model: &Model) -> String {
    let c = &model.config;
    if let Some(p) = c.patching() {
        let x = g.input(
            naflex::PATCHES,
            &[Dim::Batch, Dim::Tokens, Dim::Fixed(p.patch_len())],
        );
        let grids = g.input_typed(
            SPATIAL_SHAPES,
            data_type::INT64,
            &[Dim::Batch, Dim::Fixed(2)],
        );
        return naflex::embed(g, &x, &grids);
    }
    let s = c.image_size;
    let x = g.input(
        PIXELS,
        &[Dim::Batch, Dim::Fixed(3), Dim::Fixed(s), Dim::Fixed(s)],
    );
    embed(g, &x)
}

/// The shape of a graph output: one of the model's outputs, or a hidden state.
fn output_dims(model: &Model, output: &str) -> Vec<Dim> {
    let c = &model.config;
    match Output::from_name(output) {
        Some(Output::ImageEmbeds) => {
            // CLIP projects the class token; DINOv2 returns it as it is.
            let width = c.projection_dim.unwrap_or(c.hidden_size);
            vec![Dim::Batch, Dim::Fixed(width)]
        }
        Some(Output::MmProjected) => {
            let (_, o2) = model.projector.unwrap_or((0, 0));
            vec![Dim::Batch, Dim::Fixed(c.tokens - 1), Dim::Fixed(o2)]
        }
        _ => hidden_dims(model).to_vec(),
    }
}

/// Builds the graph of one block computing in `dtype` (fp32 or fp16; int8 graphs come from
/// [`block_graph_int8`]). With `weights_as_inputs`, its weights are graph inputs (after the
/// activations, in the file's dtype) instead of external initializers.
pub fn block_graph(
    model: &Model,
    kind: BlockKind,
    weights_file: &str,
    weights_as_inputs: bool,
    dtype: ComputeDtype,
) -> (ModelProto, Vec<String>) {
    let g = builder(model, weights_file, weights_as_inputs, dtype);
    let (proto, weight_inputs, _) = build_block(g, kind);
    (proto, weight_inputs)
}

fn builder<'m>(
    model: &'m Model,
    weights_file: &str,
    weights_as_inputs: bool,
    dtype: ComputeDtype,
) -> GraphBuilder<'m> {
    let g = GraphBuilder::new(model, weights_file, weights_as_inputs);
    match dtype {
        ComputeDtype::Fp16 => g.with_fp16_compute(),
        ComputeDtype::Fp32 | ComputeDtype::Int8 | ComputeDtype::Bf16 => g,
    }
}

/// The int8 graph of one block and its quantised weights (`<block>.q8`), if it has any.
pub fn block_graph_int8(
    model: &Model,
    kind: BlockKind,
    weights_file: &str,
) -> crate::Result<(ModelProto, Option<QuantSink>)> {
    let g = GraphBuilder::new(model, weights_file, false).with_quantization(&format!("{kind}.q8"));
    let (proto, _, quant) = build_block(g, kind);
    Ok((proto, quant?.filter(|q| !q.bytes.is_empty())))
}

fn build_block(
    mut g: GraphBuilder,
    kind: BlockKind,
) -> (ModelProto, Vec<String>, crate::Result<Option<QuantSink>>) {
    let model = g.model();
    let io = block_io(model, kind);
    let c = &model.config;
    let naflex = c.kind.is_naflex();
    let outs: Vec<String> = match kind {
        BlockKind::Embed => vec![embed_inputs(&mut g, model)],
        BlockKind::Head if naflex => {
            let x = g.input(&io.inputs[0], &hidden_dims(model));
            let mask = key_mask_input(&mut g);
            naflex::head(&mut g, &x, &mask)
        }
        BlockKind::Head => {
            let x = g.input(&io.inputs[0], &hidden_dims(model));
            let penult = if io.inputs.len() > 1 {
                Some(g.input(&io.inputs[1], &hidden_dims(model)))
            } else {
                None
            };
            head(&mut g, &x, penult.as_deref())
        }
        BlockKind::Layer { index, .. } => {
            let x = g.input(&io.inputs[0], &hidden_dims(model));
            let mask = naflex.then(|| key_mask_input(&mut g));
            vec![layer(&mut g, index, &x, mask.as_deref())]
        }
    };
    for (value, out) in outs.iter().zip(&io.outputs) {
        let dims = output_dims(model, out);
        g.output(value, out, &dims);
    }
    let weight_inputs = g.weight_inputs().to_vec();
    let quant = g.take_quantized();
    (g.finish(&kind.name()), weight_inputs, quant)
}

/// Every output of the model from one graph (`export --granularity whole`), computing in
/// `dtype` (fp32 or fp16); with its output and input names.
pub fn whole_graph(
    model: &Model,
    weights_file: &str,
    dtype: ComputeDtype,
) -> (ModelProto, Vec<String>, Vec<String>) {
    let c = &model.config;
    let mut g = builder(model, weights_file, false, dtype);
    let mut h = embed_inputs(&mut g, model);
    // naflex: the key mask from the grids, here in the graph (the runner feeds it to blocks).
    let mask = c
        .kind
        .is_naflex()
        .then(|| naflex::key_mask(&mut g, naflex::PATCHES, SPATIAL_SHAPES));
    let mut penult = String::new();
    for l in 0..c.num_layers {
        h = layer(&mut g, l, &h, mask.as_deref());
        if l + 2 == c.num_layers {
            penult = h.clone();
        }
    }
    let head_out = match &mask {
        Some(m) => naflex::head(&mut g, &h, m),
        None => head(&mut g, &h, Some(&penult)),
    };
    let mut outputs = Vec::new();
    for o in model.default_outputs() {
        let value = match (head_output(model, o), o) {
            (Some(i), _) => &head_out[i],
            (None, Output::LastHiddenState) => &h,
            (None, Output::PenultimateHiddenStates) => &penult,
            // Every other output comes from the head (all_hidden_states is not a default).
            (None, _) => continue,
        };
        let dims = output_dims(model, o.name());
        g.output(value, o.name(), &dims);
        outputs.push(o.name().to_string());
    }
    let inputs = block_io(model, BlockKind::Embed).inputs;
    (g.finish("whole"), outputs, inputs)
}

/// Patch conv → tokens, class token (CLIP, DINOv2), position table, pre-LN (CLIP). The
/// stride-P convolution without padding yields ⌊S/P⌋ patches a side: a remainder of S is
/// dropped, as in PyTorch.
///
/// Follows `CLIPVisionEmbeddings.forward` and the `pre_layrnorm` of `CLIPVisionModel.forward`
/// (clip/modeling_clip.py), `SiglipVisionEmbeddings.forward` (siglip/modeling_siglip.py: no
/// class token), `Dinov2Embeddings.forward` (dinov2/modeling_dinov2.py, at the configured image
/// size, where its `interpolate_pos_encoding` hands back the table as it is) and
/// `DINOv3ViTEmbeddings.forward` (dinov3_vit/modeling_dinov3_vit.py: class and register tokens,
/// no position table).
fn embed(g: &mut GraphBuilder, pixels: &str) -> String {
    let c = g.model().config.clone();
    let names = names::embed(c.kind);
    let (d, p) = (c.hidden_size as i64, c.patch_size as i64);
    let w = g.weight(names.patch_weight);
    let mut conv_in = vec![pixels.to_string(), w];
    if let Some(b) = names.patch_bias {
        conv_in.push(g.weight(b));
    }
    let conv_in: Vec<&str> = conv_in.iter().map(|s| s.as_str()).collect();
    let conv = g.op(
        "Conv",
        &conv_in,
        vec![
            attr_ints("kernel_shape", &[p, p]),
            attr_ints("strides", &[p, p]),
        ],
    );
    let shape = g.const_i64(&[3], &[0, d, -1]);
    let flat = g.op("Reshape", &[&conv, &shape], vec![]);
    let mut x = g.op("Transpose", &[&flat], vec![attr_ints("perm", &[0, 2, 1])]);
    if let Some(cls) = names.class_token {
        // [D] (CLIP) or [1, 1, D] (DINOv2) → [B, 1, D].
        let cls = g.weight(cls);
        let s3 = g.const_i64(&[3], &[1, 1, d]);
        let cls3 = g.op("Reshape", &[&cls, &s3], vec![]);
        let xs = g.op("Shape", &[&x], vec![]);
        let (st, en) = (g.const_i64(&[1], &[0]), g.const_i64(&[1], &[1]));
        let b = g.op("Slice", &[&xs, &st, &en], vec![]);
        let tail = g.const_i64(&[2], &[1, d]);
        let target = g.op("Concat", &[&b, &tail], vec![attr_int("axis", 0)]);
        let cls_b = g.op("Expand", &[&cls3, &target], vec![]);
        let mut parts = vec![cls_b];
        if let Some(r) = names.registers.filter(|_| c.registers > 0) {
            // DINOv3: [1, R, D] → [B, R, D], after the class token.
            let r = g.weight(r);
            let tail = g.const_i64(&[2], &[c.registers as i64, d]);
            let target = g.op("Concat", &[&b, &tail], vec![attr_int("axis", 0)]);
            parts.push(g.op("Expand", &[&r, &target], vec![]));
        }
        parts.push(x);
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        x = g.op("Concat", &parts, vec![attr_int("axis", 1)]);
    }
    // [T, D], or DINOv2's [1, T, D]: either broadcasts over the batch. DINOv3 has none.
    if let Some(pos) = names.positions {
        let pos = g.weight(pos);
        x = g.op("Add", &[&x, &pos], vec![]);
    }
    if let Some(n) = names.pre_norm {
        x = g.layer_norm(&x, n);
    }
    x
}

/// Pre-norm residual layer `l`: attention then MLP. Every linear layer is one `Gemm` on
/// the weight as stored (`transB`: no transposed copy of any weight, the bias add fused), on
/// tokens as rows of a 2-D `[B·T, D]` view. The residual stream stays `[B, T, D]`, so the
/// graph input is never copied and the views are free reshapes of intermediates.
///
/// DINOv2 and DINOv3 scale each branch per channel (`lambda1`) before adding it; DINOv2
/// giant has a SwiGLU MLP, DINOv3 ViT-H+ a gated one, and DINOv3 rotates q and k of the
/// patch tokens (RoPE), which the fused attention cannot do.
///
/// Follows `CLIPEncoderLayer.forward` with `CLIPAttention.forward` and `CLIPMLP.forward`
/// (clip/modeling_clip.py; SigLIP's `SiglipEncoderLayer.forward` is the same),
/// `Dinov2Layer.forward` with `Dinov2LayerScale` and `Dinov2MLP` / `Dinov2SwiGLUFFN`
/// (dinov2/modeling_dinov2.py) and `DINOv3ViTLayer.forward` with `DINOv3ViTAttention.forward`,
/// `DINOv3ViTLayerScale` and `DINOv3ViTMLP` / `DINOv3ViTGatedMLP`
/// (dinov3_vit/modeling_dinov3_vit.py). naflex layers (`Siglip2EncoderLayer.forward`,
/// siglip2/modeling_siglip2.py) take a key mask `[B, T]`: padded tokens are never attended to,
/// and the token count comes from the input's shape.
fn layer(g: &mut GraphBuilder, l: usize, x: &str, mask: Option<&str>) -> String {
    let c = g.model().config.clone();
    let n = names::layer(c.kind, c.mlp, l);
    let (d, t) = (c.hidden_size as i64, c.tokens as i64);
    let rows = g.const_i64(&[2], &[-1, d]);
    let tokens = match mask {
        Some(_) => naflex::tokens_shape(g, x, &[d]),
        None => g.const_i64(&[3], &[-1, t, d]),
    };

    let n1 = g.layer_norm(x, &n.norm1);
    let ctx = if g.quantizing() {
        attention_unfused(g, &n, &n1, &c, mask)
    } else if c.kind == Kind::Dinov3 {
        attention_rotary(g, &n, &n1, &c)
    } else {
        // ONNX Runtime's fused attention: one packed q/k/v projection, softmax(q·kᵀ/√d)·v;
        // a naflex key mask is its `mask_index` (1 attend, 0 masked).
        let (w, b) = g.packed_qkv([&n.query, &n.key, &n.value]);
        let heads = attr_int("num_heads", c.num_heads as i64);
        let mut inputs = vec![n1.as_str(), &w, &b];
        inputs.extend(mask);
        let ctx = g.op_ms("Attention", &inputs, vec![heads]);
        g.op("Reshape", &[&ctx, &rows], vec![])
    };
    let mut attn = g.gemm(&ctx, &n.out, true);
    if let Some(s) = &n.scale1 {
        let s = g.weight(s);
        attn = g.op("Mul", &[&attn, &s], vec![]);
    }
    let attn = g.op("Reshape", &[&attn, &tokens], vec![]);
    let x = g.op("Add", &[x, &attn], vec![]);

    let n2 = g.layer_norm(&x, &n.norm2);
    let n2 = g.op("Reshape", &[&n2, &rows], vec![]);
    let f1 = g.gemm(&n2, &n.mlp_in, true);
    let a = match c.mlp {
        Mlp::Standard => g.activation(&f1, c.activation),
        Mlp::Gated => {
            // act(gate_proj(x)) ⊙ up_proj(x).
            let gate = n.mlp_gate.as_deref().unwrap_or_default();
            let gate = g.gemm(&n2, gate, true);
            let gate = g.activation(&gate, c.activation);
            g.op("Mul", &[&gate, &f1], vec![])
        }
        Mlp::SwiGlu => {
            // silu(first half) ⊙ second half.
            let half = g.const_i64(&[2], &[c.intermediate_size as i64; 2]);
            let parts = g.op_n("Split", &[&f1, &half], vec![attr_int("axis", -1)], 2);
            let s = g.op("Sigmoid", &[&parts[0]], vec![]);
            let silu = g.op("Mul", &[&parts[0], &s], vec![]);
            g.op("Mul", &[&silu, &parts[1]], vec![])
        }
    };
    let mut f2 = g.gemm(&a, &n.mlp_out, true);
    if let Some(s) = &n.scale2 {
        let s = g.weight(s);
        f2 = g.op("Mul", &[&f2, &s], vec![]);
    }
    let f2 = g.op("Reshape", &[&f2, &tokens], vec![]);
    g.op("Add", &[&x, &f2], vec![])
}

/// Attention as plain ONNX ops on separate q/k/v projections (int8 mode, where each
/// projection is a quantised matmul), masking padded keys when given a naflex key mask.
/// Returns the context as `[B·T, D]` rows. Follows `eager_attention_forward`
/// (clip/modeling_clip.py): softmax(q·kᵀ·scale)·v per head.
fn attention_unfused(
    g: &mut GraphBuilder,
    names: &names::LayerNames,
    n1_tokens: &str,
    c: &crate::model::VisionConfig,
    mask: Option<&str>,
) -> String {
    let (h, dh) = (c.num_heads as i64, c.head_dim() as i64);
    let (d, t) = (c.hidden_size as i64, c.tokens as i64);
    let rows = g.const_i64(&[2], &[-1, d]);
    let n1 = g.op("Reshape", &[n1_tokens, &rows], vec![]);
    let split = match mask {
        Some(_) => naflex::tokens_shape(g, n1_tokens, &[h, dh]),
        None => g.const_i64(&[4], &[-1, t, h, dh]),
    };
    let tables = (c.kind == Kind::Dinov3).then(|| rope_tables(g, c));
    let heads = |g: &mut GraphBuilder, proj: &str, bias: bool, rotate: bool| {
        let y = g.gemm(&n1, proj, bias);
        let mut y = g.op("Reshape", &[&y, &split], vec![]); // [B,T,H,dh]
        if let (true, Some((cos, sin))) = (rotate, &tables) {
            y = rope(g, &y, cos, sin, c);
        }
        g.op("Transpose", &[&y], vec![attr_ints("perm", &[0, 2, 1, 3])]) // [B,H,T,dh]
    };
    let q = heads(g, &names.query, true, true);
    let k = heads(g, &names.key, names.key_bias, true);
    let v = heads(g, &names.value, true, false);
    let k = g.op("Transpose", &[&k], vec![attr_ints("perm", &[0, 1, 3, 2])]); // [B,H,dh,T]
    let scale = g.scalar(1.0 / (dh as f32).sqrt());
    let qs = g.op("Mul", &[&q, &scale], vec![]);
    let mut scores = g.op("MatMul", &[&qs, &k], vec![]);
    if let Some(m) = mask {
        let bias = naflex::mask_bias(g, m);
        scores = g.op("Add", &[&scores, &bias], vec![]);
    }
    let probs = g.op("Softmax", &[&scores], vec![attr_int("axis", -1)]);
    let ctx = g.op("MatMul", &[&probs, &v], vec![]);
    let ctx = g.op("Transpose", &[&ctx], vec![attr_ints("perm", &[0, 2, 1, 3])]);
    g.op("Reshape", &[&ctx, &rows], vec![])
}

/// DINOv3's attention: q and k rotated (RoPE) by plain ops, then ONNX Runtime's fused
/// `MultiHeadAttention` (its memory-efficient kernels where it has them; ViT-H+ at 1024 px has
/// 4101 tokens). Returns the context as `[B·T, D]` rows. Follows `DINOv3ViTAttention.forward`
/// (dinov3_vit/modeling_dinov3_vit.py).
fn attention_rotary(
    g: &mut GraphBuilder,
    names: &names::LayerNames,
    n1: &str,
    c: &crate::model::VisionConfig,
) -> String {
    let (h, dh) = (c.num_heads as i64, c.head_dim() as i64);
    let (d, t) = (c.hidden_size as i64, c.tokens as i64);
    let rows = g.const_i64(&[2], &[-1, d]);
    let n1 = g.op("Reshape", &[n1, &rows], vec![]);
    let split = g.const_i64(&[4], &[-1, t, h, dh]);
    let tokens = g.const_i64(&[3], &[-1, t, d]);
    let (cos, sin) = rope_tables(g, c);
    let project = |g: &mut GraphBuilder, proj: &str, bias: bool, rotate: bool| {
        let y = g.gemm(&n1, proj, bias);
        let y = if rotate {
            let y = g.op("Reshape", &[&y, &split], vec![]); // [B,T,H,dh]
            rope(g, &y, &cos, &sin, c)
        } else {
            y
        };
        g.op("Reshape", &[&y, &tokens], vec![]) // [B,T,D]
    };
    let q = project(g, &names.query, true, true);
    let k = project(g, &names.key, names.key_bias, true);
    let v = project(g, &names.value, true, false);
    let heads = attr_int("num_heads", c.num_heads as i64);
    let ctx = g.op_ms("MultiHeadAttention", &[&q, &k, &v], vec![heads]);
    g.op("Reshape", &[&ctx, &rows], vec![])
}

/// DINOv3's RoPE tables `[patches, 1, dh]` (cos, sin; the 1 broadcasts over heads), as
/// `DINOv3ViTRopePositionEmbedding.forward` with `get_patches_center_coordinates`
/// (dinov3_vit/modeling_dinov3_vit.py) computes them: patch
/// centres normalised to [-1, 1] (row, column), `2π · coord · θ^(-4i/dh)` for each axis, the
/// two axes' angles side by side and the whole tiled twice.
fn rope_tables(g: &mut GraphBuilder, c: &crate::model::VisionConfig) -> (String, String) {
    let (n, dh) = (c.grid(), c.head_dim());
    let inv_freq: Vec<f32> = (0..dh / 4)
        .map(|i| 1.0 / c.rope_theta.powf((4 * i) as f32 / dh as f32))
        .collect();
    let coord = |i: usize| 2.0 * ((i as f32 + 0.5) / n as f32) - 1.0;
    let tau = (2.0 * std::f64::consts::PI) as f32;
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for row in 0..n {
        for col in 0..n {
            let mut angles = Vec::with_capacity(dh);
            for axis in [coord(row), coord(col)] {
                angles.extend(inv_freq.iter().map(|f| tau * axis * f));
            }
            let half = angles.clone();
            angles.extend(half);
            cos.extend(angles.iter().map(|a| a.cos()));
            sin.extend(angles.iter().map(|a| a.sin()));
        }
    }
    let dims = [(n * n) as i64, 1, dh as i64];
    (g.const_float(&dims, &cos), g.const_float(&dims, &sin))
}

/// `x · cos + rotate_half(x) · sin` on the patch tokens of `x` `[B, T, H, dh]`; the class and
/// register tokens before them are left as they are. Follows `apply_rotary_pos_emb` and
/// `rotate_half` (dinov3_vit/modeling_dinov3_vit.py).
fn rope(
    g: &mut GraphBuilder,
    x: &str,
    cos: &str,
    sin: &str,
    c: &crate::model::VisionConfig,
) -> String {
    let (t, dh) = (c.tokens as i64, c.head_dim() as i64);
    let prefix = (c.tokens - c.grid().pow(2)) as i64;
    let slice = |g: &mut GraphBuilder, x: &str, axis: i64, from: i64, to: i64| {
        let (st, en, ax) = (
            g.const_i64(&[1], &[from]),
            g.const_i64(&[1], &[to]),
            g.const_i64(&[1], &[axis]),
        );
        g.op("Slice", &[x, &st, &en, &ax], vec![])
    };
    let head = slice(g, x, 1, 0, prefix);
    let p = slice(g, x, 1, prefix, t);
    let lo = slice(g, &p, 3, 0, dh / 2);
    let hi = slice(g, &p, 3, dh / 2, dh);
    let neg = g.op("Neg", &[&hi], vec![]);
    let rot = g.op("Concat", &[&neg, &lo], vec![attr_int("axis", 3)]);
    let a = g.op("Mul", &[&p, cos], vec![]);
    let b = g.op("Mul", &[&rot, sin], vec![]);
    let p = g.op("Add", &[&a, &b], vec![]);
    g.op("Concat", &[&head, &p], vec![attr_int("axis", 1)])
}

/// The head block's outputs, in the order `block_io` lists them.
///
/// Follows the end of `CLIPVisionModel.forward` (`post_layernorm` of the class token) and
/// `CLIPVisionModelWithProjection.forward` (`visual_projection`) in clip/modeling_clip.py, the
/// `post_layernorm` of `SiglipVisionModel.forward` (siglip/modeling_siglip.py; its attention
/// pooling head is not an output of contract §3), `Dinov2Model.forward`
/// (dinov2/modeling_dinov2.py) and `DINOv3ViTModel.forward` (dinov3_vit/modeling_dinov3_vit.py):
/// the final norm, the class token pooled. LLaVA's projector is
/// `LlavaMultiModalProjector.forward` on the penultimate layer without its class token, as
/// `LlavaModel.get_image_features` selects it (llava/modeling_llava.py).
fn head(g: &mut GraphBuilder, x: &str, penult: Option<&str>) -> Vec<String> {
    let c = g.model().config.clone();
    let norm = names::head_norm(c.kind);
    match c.kind {
        // SigLIP: post-LN of every token (naflex heads are `naflex::head`).
        Kind::Siglip | Kind::Siglip2 => vec![g.layer_norm(x, norm)],
        // DINOv2, DINOv3: the final norm of every token, and its class token as the pooled output.
        Kind::Dinov2 | Kind::Dinov3 => {
            let all = g.layer_norm(x, norm);
            let zero = g.const_i64(&[], &[0]);
            let cls = g.op("Gather", &[&all, &zero], vec![attr_int("axis", 1)]);
            vec![all, cls]
        }
        Kind::Clip => {
            let zero = g.const_i64(&[], &[0]);
            let cls = g.op("Gather", &[x, &zero], vec![attr_int("axis", 1)]);
            let pooled = g.layer_norm(&cls, norm);
            let mut out = vec![g.gemm(&pooled, "visual_projection", false)];
            if let (true, Some(p)) = (c.llava, penult) {
                let (st, en, ax) = (
                    g.const_i64(&[1], &[1]),
                    g.const_i64(&[1], &[c.tokens as i64]),
                    g.const_i64(&[1], &[1]),
                );
                let patches = g.op("Slice", &[p, &st, &en, &ax], vec![]);
                let h1 = g.linear(&patches, "multi_modal_projector.linear_1", true);
                let a = g.activation(&h1, Activation::Gelu);
                out.push(g.linear(&a, "multi_modal_projector.linear_2", true));
            }
            out
        }
    }
}
