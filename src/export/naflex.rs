//! The SigLIP2 naflex parts of the forward pass (contract §3.1): a batch holds images of
//! different patch grids, padded to its largest, so the token count is a graph dimension
//! (`tokens`) and every block after the embedding takes a key mask.
//!
//! - embed: `Linear` over the flattened patches, plus the square position table resized to
//!   each image's grid as Hugging Face does (`F.interpolate(bilinear, align_corners=False,
//!   antialias=True)`), computed in the graph from the grid: each token's row and column
//!   weights over the table's rows and columns (the antialiased triangle filter, normalised),
//!   their outer product times the table.
//! - layers and head: padded tokens are masked out as keys, so they never change valid ones.
//! - head: `post_layernorm` of every token, and, when the file has it, the attention-pooling
//!   head (`vision_model.head.*`) over the valid tokens.

use super::graph::{attr_int, attr_ints, GraphBuilder};
use super::onnx::data_type;
use crate::model::names;

/// The flattened patches `[B, T, 3·P²]` (the name Hugging Face gives them).
pub const PATCHES: &str = "pixel_values";
/// Each image's patch grid `[B, 2]` int64, rows then columns (as Hugging Face).
pub const SPATIAL_SHAPES: &str = "spatial_shapes";
/// `[B, T]` int32: 1 for an image's patches, 0 for padding.
pub const KEY_MASK: &str = "key_mask";

/// What masked keys get added to their attention scores (ONNX Runtime's `mask_filter_value`
/// default, which the fused `Attention` uses): their weights underflow to exactly zero.
const MASKED: f32 = -10000.0;

/// The shape `[B, T, tail…]` of a `[B, T, …]` value `x`, for reshapes whose token count is
/// only known at run time.
pub fn tokens_shape(g: &mut GraphBuilder, x: &str, tail: &[i64]) -> String {
    let shape = g.op("Shape", &[x], vec![]);
    let (st, en) = (g.const_i64(&[1], &[0]), g.const_i64(&[1], &[2]));
    let bt = g.op("Slice", &[&shape, &st, &en], vec![]);
    let tail = g.const_i64(&[tail.len() as i64], tail);
    g.op("Concat", &[&bt, &tail], vec![attr_int("axis", 0)])
}

/// Token indices `[1, T]` (int64) of a `[B, T, …]` value.
fn token_indices(g: &mut GraphBuilder, x: &str) -> String {
    let shape = g.op("Shape", &[x], vec![]);
    let (st, en) = (g.const_i64(&[1], &[1]), g.const_i64(&[1], &[2]));
    let t = g.op("Slice", &[&shape, &st, &en], vec![]);
    let axis0 = g.const_i64(&[1], &[0]);
    let t = g.op("Squeeze", &[&t, &axis0], vec![]);
    let (zero, one) = (g.const_i64(&[], &[0]), g.const_i64(&[], &[1]));
    let idx = g.op("Range", &[&zero, &t, &one], vec![]);
    g.op("Unsqueeze", &[&idx, &axis0], vec![])
}

/// Rows and columns `[B, 1]` (int64) of the grids `[B, 2]`.
fn grid_sides(g: &mut GraphBuilder, grids: &str) -> (String, String) {
    let axis = g.const_i64(&[1], &[1]);
    let mut side = |from: i64| {
        let (st, en) = (g.const_i64(&[1], &[from]), g.const_i64(&[1], &[from + 1]));
        g.op("Slice", &[grids, &st, &en, &axis], vec![])
    };
    (side(0), side(1))
}

/// The key mask `[B, T]` int32 of padded patches `[B, T, …]` and their grids: token `t` of
/// image `b` is valid when `t < rows·cols` (for the whole-model graph, which has no runner to
/// build it).
pub fn key_mask(g: &mut GraphBuilder, patches: &str, grids: &str) -> String {
    let t = token_indices(g, patches);
    let (rows, cols) = grid_sides(g, grids);
    let n = g.op("Mul", &[&rows, &cols], vec![]);
    let valid = g.op("Less", &[&t, &n], vec![]);
    g.op(
        "Cast",
        &[&valid],
        vec![attr_int("to", data_type::INT32 as i64)],
    )
}

/// `[B, 1, 1, T]` of the compute type: 0 for valid keys, -10000 for padding; added to
/// attention scores `[B, H, Q, T]`.
pub fn mask_bias(g: &mut GraphBuilder, key_mask: &str) -> String {
    let m = g.op(
        "Cast",
        &[key_mask],
        vec![attr_int("to", data_type::FLOAT as i64)],
    );
    let one = g.const_f32(&[], &[1.0]);
    let off = g.op("Sub", &[&one, &m], vec![]);
    let big = g.const_f32(&[], &[MASKED]);
    let bias = g.op("Mul", &[&off, &big], vec![]);
    let axes = g.const_i64(&[2], &[1, 2]);
    let bias = g.op("Unsqueeze", &[&bias, &axes], vec![]);
    g.to_compute(&bias)
}

/// Patches `[B, T, 3·P²]` and grids `[B, 2]` to embeddings `[B, T, D]`: the `Linear` patch
/// embedding plus each image's resized position table.
pub fn embed(g: &mut GraphBuilder, patches: &str, grids: &str) -> String {
    let c = g.model().config.clone();
    let e = names::embed(c.kind);
    let (d, p) = (c.hidden_size as i64, c.patch_size as i64);
    let rows = g.const_i64(&[2], &[-1, 3 * p * p]);
    let flat = g.op("Reshape", &[patches, &rows], vec![]);
    let prefix = e.patch_weight.trim_end_matches(".weight");
    let x = g.gemm(&flat, prefix, true);
    let shape = tokens_shape(g, patches, &[d]);
    let x = g.op("Reshape", &[&x, &shape], vec![]);
    let pos = positions(g, patches, grids);
    g.op("Add", &[&x, &pos], vec![])
}

/// The position table `[G², D]` resized to each image's grid, one row per token `[B, T, D]`.
/// Token `t` of an image with `rows × cols` patches sits at row `t / cols` (clamped to the
/// last row, so padded tokens stay finite) and column `t % cols`.
fn positions(g: &mut GraphBuilder, patches: &str, grids: &str) -> String {
    let c = g.model().config.clone();
    let side = c.grid();
    let t = token_indices(g, patches);
    let (rows, cols) = grid_sides(g, grids);
    let r = g.op("Div", &[&t, &cols], vec![]);
    let one = g.const_i64(&[], &[1]);
    let last = g.op("Sub", &[&rows, &one], vec![]);
    let r = g.op("Min", &[&r, &last], vec![]);
    let col = g.op("Mod", &[&t, &cols], vec![]);
    let float = |g: &mut GraphBuilder, v: &str| {
        g.op("Cast", &[v], vec![attr_int("to", data_type::FLOAT as i64)])
    };
    let (r, col, rows, cols) = (
        float(g, &r),
        float(g, &col),
        float(g, &rows),
        float(g, &cols),
    );
    let wr = axis_weights(g, &r, &rows, side);
    let wc = axis_weights(g, &col, &cols, side);
    let last_axis = g.const_i64(&[1], &[-1]);
    let wr = g.op("Unsqueeze", &[&wr, &last_axis], vec![]);
    let before_last = g.const_i64(&[1], &[-2]);
    let wc = g.op("Unsqueeze", &[&wc, &before_last], vec![]);
    let outer = g.op("Mul", &[&wr, &wc], vec![]);
    let flat = g.const_i64(&[3], &[0, 0, (side * side) as i64]);
    let outer = g.op("Reshape", &[&outer, &flat], vec![]);
    let outer = g.to_compute(&outer);
    let table = names::embed(c.kind).positions.unwrap_or_default();
    let table = g.weight(table);
    g.op("MatMul", &[&outer, &table], vec![])
}

/// For output indices `i` `[B, T]` (f32) on axes of `out` `[B, 1]` samples, the weights `[B,
/// T, side]` over the table's `side` samples of PyTorch's antialiased bilinear resize
/// (`_compute_indices_min_size_weights_aa` with the triangle filter): `scale = side / out`,
/// `support = max(scale, 1)`, centre `scale · (i + 0.5)`, weight of sample `j`
/// `max(0, 1 - |j + 0.5 - centre| / support)`, normalised to sum to 1. Every sample with a
/// non-zero weight lies in PyTorch's tap window, so the two agree.
fn axis_weights(g: &mut GraphBuilder, i: &str, out: &str, side: usize) -> String {
    let n = g.const_f32(&[], &[side as f32]);
    let scale = g.op("Div", &[&n, out], vec![]);
    let one = g.const_f32(&[], &[1.0]);
    let support = g.op("Max", &[&scale, &one], vec![]);
    let inv = g.op("Div", &[&one, &support], vec![]);
    let half = g.const_f32(&[], &[0.5]);
    let shifted = g.op("Add", &[i, &half], vec![]);
    let centre = g.op("Mul", &[&scale, &shifted], vec![]);
    let last_axis = g.const_i64(&[1], &[-1]);
    let centre = g.op("Unsqueeze", &[&centre, &last_axis], vec![]);
    let inv = g.op("Unsqueeze", &[&inv, &last_axis], vec![]);
    let taps: Vec<f32> = (0..side).map(|j| j as f32 + 0.5).collect();
    let taps = g.const_f32(&[side as i64], &taps);
    let dist = g.op("Sub", &[&taps, &centre], vec![]);
    let x = g.op("Mul", &[&dist, &inv], vec![]);
    let ax = g.op("Abs", &[&x], vec![]);
    let tri = g.op("Sub", &[&one, &ax], vec![]);
    let w = g.op("Relu", &[&tri], vec![]);
    let sum = g.op(
        "ReduceSum",
        &[&w, &last_axis],
        vec![attr_int("keepdims", 1)],
    );
    g.op("Div", &[&w, &sum], vec![])
}

/// The head's outputs: `post_layernorm` of every token, and the pooled `[B, D]` embedding of
/// the attention-pooling head when the model has one (`Siglip2MultiheadAttentionPoolingHead`:
/// the probe attends over the valid tokens, then `x + mlp(layernorm(x))`).
pub fn head(g: &mut GraphBuilder, x: &str, key_mask: &str) -> Vec<String> {
    let c = g.model().config.clone();
    let last = g.layer_norm(x, names::head_norm(c.kind));
    if !c.attention_pool {
        return vec![last];
    }
    let (d, h, dh) = (
        c.hidden_size as i64,
        c.num_heads as i64,
        c.head_dim() as i64,
    );
    let w = g.weight(names::HEAD_IN_PROJ_WEIGHT);
    let b = g.weight(names::HEAD_IN_PROJ_BIAS);
    // q, k, v: thirds of the packed projection, folded into constants when the session is built.
    let third = |g: &mut GraphBuilder, k: i64| {
        let (st, en) = (
            g.const_i64(&[1], &[k * d]),
            g.const_i64(&[1], &[(k + 1) * d]),
        );
        let axis = g.const_i64(&[1], &[0]);
        (
            g.op("Slice", &[&w, &st, &en, &axis], vec![]),
            g.op("Slice", &[&b, &st, &en, &axis], vec![]),
        )
    };
    let (wq, bq) = third(g, 0);
    let (wk, bk) = third(g, 1);
    let (wv, bv) = third(g, 2);
    let linear = |g: &mut GraphBuilder, x: &str, w: &str, b: &str| {
        g.op("Gemm", &[x, w, b], vec![attr_int("transB", 1)])
    };
    // The probe's query [1, D] → [1, H, 1, dh].
    let probe = g.weight(names::HEAD_PROBE);
    let row = g.const_i64(&[2], &[1, d]);
    let probe = g.op("Reshape", &[&probe, &row], vec![]);
    let q = linear(g, &probe, &wq, &bq);
    let q_heads = g.const_i64(&[4], &[1, 1, h, dh]);
    let q = g.op("Reshape", &[&q, &q_heads], vec![]);
    let q = g.op("Transpose", &[&q], vec![attr_ints("perm", &[0, 2, 1, 3])]);
    let scale = g.scalar(1.0 / (dh as f32).sqrt());
    let q = g.op("Mul", &[&q, &scale], vec![]);
    // Keys and values of every token [B, H, T, dh].
    let rows = g.const_i64(&[2], &[-1, d]);
    let flat = g.op("Reshape", &[&last, &rows], vec![]);
    let split = tokens_shape(g, &last, &[h, dh]);
    let heads = |g: &mut GraphBuilder, w: &str, b: &str| {
        let y = linear(g, &flat, w, b);
        let y = g.op("Reshape", &[&y, &split], vec![]);
        g.op("Transpose", &[&y], vec![attr_ints("perm", &[0, 2, 1, 3])])
    };
    let k = heads(g, &wk, &bk);
    let v = heads(g, &wv, &bv);
    let kt = g.op("Transpose", &[&k], vec![attr_ints("perm", &[0, 1, 3, 2])]);
    let scores = g.op("MatMul", &[&q, &kt], vec![]); // [B, H, 1, T]
    let bias = mask_bias(g, key_mask);
    let scores = g.op("Add", &[&scores, &bias], vec![]);
    let probs = g.op("Softmax", &[&scores], vec![attr_int("axis", -1)]);
    let ctx = g.op("MatMul", &[&probs, &v], vec![]); // [B, H, 1, dh]
    let ctx = g.op("Transpose", &[&ctx], vec![attr_ints("perm", &[0, 2, 1, 3])]);
    let ctx = g.op("Reshape", &[&ctx, &rows], vec![]); // [B, D]
    let attn = g.gemm(&ctx, names::HEAD_OUT_PROJ, true);
    let n = g.layer_norm(&attn, names::HEAD_NORM);
    let f1 = g.gemm(&n, names::HEAD_MLP_IN, true);
    let a = g.activation(&f1, c.activation);
    let f2 = g.gemm(&a, names::HEAD_MLP_OUT, true);
    let pooled = g.op("Add", &[&attn, &f2], vec![]);
    vec![last, pooled]
}
