//! A small builder for ONNX graphs: named values, nodes, constants, and weights that point
//! into the original safetensors file (or become graph inputs in the streaming variant).

use std::collections::HashMap;

use super::onnx::*;
use crate::model::{Activation, DType, Layout, Model};

pub const OPSET: i64 = 17;
pub const IR_VERSION: i64 = 8;

/// A dimension of a graph input or output.
#[derive(Clone, Debug)]
pub enum Dim {
    Fixed(usize),
    Batch,
    /// The token count of a naflex batch: its largest patch grid (padded rows after it).
    Tokens,
}

pub struct GraphBuilder<'m> {
    model: &'m Model,
    /// File name, relative to the graph, that external data points into.
    weights_file: String,
    /// Weights become graph inputs fed at run time instead of initializers.
    weights_as_inputs: bool,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    /// HF key -> name of its value in the compute type, so a weight is declared once.
    weights: HashMap<String, String>,
    weight_inputs: Vec<String>,
    counter: usize,
    /// Set for `--dtype int8`: the layers' linear weights are quantised into this sink.
    quant: Option<super::quant::QuantSink>,
    uses_ms_domain: bool,
    /// Element type of the activations and weights inside the graph: FLOAT, or FLOAT16 in
    /// fp16 mode (graph inputs and outputs stay f32 either way).
    compute: i32,
    /// The first failure while reading weights (builder methods return value names).
    error: Option<crate::Error>,
}

pub fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i,
        ..Default::default()
    }
}
pub fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: ints.to_vec(),
        ..Default::default()
    }
}
pub fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f,
        ..Default::default()
    }
}

fn onnx_dtype(d: DType) -> i32 {
    match d {
        DType::F16 => data_type::FLOAT16,
        DType::BF16 => data_type::BFLOAT16,
        _ => data_type::FLOAT,
    }
}

fn value_info(name: &str, elem_type: i32, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => DimValue::DimValue(*n as i64),
                Dim::Batch => DimValue::DimParam("batch".into()),
                Dim::Tokens => DimValue::DimParam("tokens".into()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

impl<'m> GraphBuilder<'m> {
    pub fn new(model: &'m Model, weights_file: &str, weights_as_inputs: bool) -> Self {
        GraphBuilder {
            model,
            weights_file: weights_file.into(),
            weights_as_inputs,
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            weights: HashMap::new(),
            weight_inputs: Vec::new(),
            counter: 0,
            quant: None,
            uses_ms_domain: false,
            compute: data_type::FLOAT,
            error: None,
        }
    }

    /// fp16 compute: weights and activations are f16 inside the graph; the f32 inputs are
    /// cast on the way in and the outputs back to f32 on the way out, so blocks of either
    /// precision plug into the same runner. LayerNormalization keeps its statistics in f32
    /// (its default `stash_type`).
    pub fn with_fp16_compute(mut self) -> Self {
        self.compute = data_type::FLOAT16;
        self
    }

    /// Quantises the layers' linear weights into a data file named `file` (int8 mode).
    pub fn with_quantization(mut self, file: &str) -> Self {
        self.quant = Some(super::quant::QuantSink {
            file: file.into(),
            bytes: Vec::new(),
        });
        self
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Declares an f32 graph input and returns the value the graph computes on (the input
    /// cast to the compute type in fp16 mode).
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, data_type::FLOAT, dims));
        self.cast_to(name, self.compute)
    }

    /// Declares a graph input of element type `elem_type` (an integer input such as a mask or
    /// the patch grids) and returns it as it is.
    pub fn input_typed(&mut self, name: &str, elem_type: i32, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, elem_type, dims));
        name.to_string()
    }

    /// An f32 value as the compute type (a Cast in fp16 mode).
    pub fn to_compute(&mut self, f32_value: &str) -> String {
        self.cast_to(f32_value, self.compute)
    }

    /// Declares `value` as an f32 graph output named `name` (through an Identity when
    /// renamed, a Cast from f16 in fp16 mode).
    pub fn output(&mut self, value: &str, name: &str, dims: &[Dim]) {
        let (op, attribute) = if self.compute == data_type::FLOAT {
            ("Identity", vec![])
        } else {
            ("Cast", vec![attr_int("to", data_type::FLOAT as i64)])
        };
        if value != name || op == "Cast" {
            self.nodes.push(NodeProto {
                input: vec![value.into()],
                output: vec![name.into()],
                name: format!("out_{name}"),
                op_type: op.into(),
                attribute,
                ..Default::default()
            });
        }
        self.outputs.push(value_info(name, data_type::FLOAT, dims));
    }

    /// `value` (of element type `from`) as element type `to`: itself, or a Cast.
    fn cast(&mut self, value: &str, from: i32, to: i32) -> String {
        if from == to {
            value.to_string()
        } else {
            self.op("Cast", &[value], vec![attr_int("to", to as i64)])
        }
    }

    fn cast_to(&mut self, f32_value: &str, to: i32) -> String {
        self.cast(f32_value, data_type::FLOAT, to)
    }

    /// Adds a node with one output and returns that output's name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.op_in("", op, inputs, attrs)
    }

    /// Adds a node with `n` outputs (e.g. `Split`) and returns their names.
    pub fn op_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        n: usize,
    ) -> Vec<String> {
        let base = self.fresh(&op.to_lowercase());
        let outputs: Vec<String> = (0..n).map(|i| format!("{base}_{i}")).collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.clone(),
            name: base,
            op_type: op.into(),
            attribute: attrs,
            domain: String::new(),
        });
        outputs
    }

    /// A node of ONNX Runtime's `com.microsoft` contrib domain (in every stock build).
    pub fn op_ms(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.uses_ms_domain = true;
        self.op_in("com.microsoft", op, inputs, attrs)
    }

    fn op_in(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op.into(),
            attribute: attrs,
            domain: domain.into(),
        });
        out
    }

    /// True in int8 mode, where the layers' linear weights are quantised.
    pub fn quantizing(&self) -> bool {
        self.quant.is_some()
    }

    /// The packed `[D, 3D]` q/k/v weight and `[3D]` bias of `com.microsoft.Attention`, made
    /// from the three projections (prefixes of `.weight` / `.bias`, in order q, k, v) as
    /// stored (ONNX Runtime folds the Concat and Transpose once when the session is built).
    pub fn packed_qkv(&mut self, qkv: [&str; 3]) -> (String, String) {
        let ws: Vec<String> = qkv
            .iter()
            .map(|p| self.raw_weight(&format!("{p}.weight")))
            .collect();
        let bs: Vec<String> = qkv
            .iter()
            .map(|p| self.raw_weight(&format!("{p}.bias")))
            .collect();
        let w = self.op(
            "Concat",
            &[&ws[0], &ws[1], &ws[2]],
            vec![attr_int("axis", 0)],
        );
        let w = self.op("Transpose", &[&w], vec![attr_ints("perm", &[1, 0])]);
        let b = self.op(
            "Concat",
            &[&bs[0], &bs[1], &bs[2]],
            vec![attr_int("axis", 0)],
        );
        (w, b)
    }

    /// A constant of the compute type (f32, or f16 in fp16 mode).
    pub fn const_float(&mut self, dims: &[i64], values: &[f32]) -> String {
        let name = self.fresh("const");
        let raw_data = if self.compute == data_type::FLOAT16 {
            let h = values.iter().map(|&v| half::f16::from_f32(v));
            h.flat_map(|v| v.to_le_bytes()).collect()
        } else {
            values.iter().flat_map(|v| v.to_le_bytes()).collect()
        };
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: self.compute,
            name: name.clone(),
            raw_data,
            ..Default::default()
        });
        name
    }

    /// An f32 constant whatever the compute type (index arithmetic that f16 cannot hold).
    pub fn const_f32(&mut self, dims: &[i64], values: &[f32]) -> String {
        let name = self.fresh("const");
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: data_type::FLOAT,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    pub fn const_i64(&mut self, dims: &[i64], values: &[i64]) -> String {
        let name = self.fresh("const");
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: data_type::INT64,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    pub fn scalar(&mut self, v: f32) -> String {
        self.const_float(&[], &[v])
    }

    /// The weight `key` as a value of the compute type, in the layout stored in the file.
    fn raw_weight(&mut self, key: &str) -> String {
        if let Some(v) = self.weights.get(key) {
            return v.clone();
        }
        let w = self.model.weight(key);
        let mut dims: Vec<i64> = w.info.shape.iter().map(|&d| d as i64).collect();
        if w.layout == Layout::InOut {
            dims.reverse();
        }
        let mut dtype = onnx_dtype(w.info.dtype);
        if self.weights_as_inputs {
            // Streamed weights of an fp16 graph are fed as f16 whatever the file holds: half
            // the bytes of an f32 file cross to the GPU each pass (the runner converts them
            // once, when it pins them).
            if self.compute == data_type::FLOAT16 {
                dtype = data_type::FLOAT16;
            }
            let fixed: Vec<Dim> = dims.iter().map(|&d| Dim::Fixed(d as usize)).collect();
            self.inputs.push(value_info(key, dtype, &fixed));
            self.weight_inputs.push(key.to_string());
        } else {
            self.initializers.push(TensorProto {
                dims,
                data_type: dtype,
                name: key.to_string(),
                external_data: vec![
                    entry("location", &self.weights_file),
                    entry("offset", &w.info.offset.to_string()),
                    entry("length", &w.info.nbytes.to_string()),
                ],
                data_location: 1,
                ..Default::default()
            });
        }
        // Weights stay in the file's dtype on disk; ONNX Runtime folds the Cast to the compute
        // type (f32 by default, contract §2.4) once, when the session is built.
        let value = self.cast(key, dtype, self.compute);
        self.weights.insert(key.to_string(), value.clone());
        value
    }

    /// A vector or table weight, as stored.
    pub fn weight(&mut self, key: &str) -> String {
        self.raw_weight(key)
    }

    /// A linear weight as `[in, out]`, ready for `MatMul(x, w)`. Transposes of constant
    /// weights are folded by ONNX Runtime when the session is built.
    pub fn linear_weight(&mut self, key: &str) -> String {
        let raw = self.raw_weight(key);
        match self.model.weight(key).layout {
            Layout::InOut => raw,
            Layout::OutIn => self.op("Transpose", &[&raw], vec![attr_ints("perm", &[1, 0])]),
        }
    }

    /// `x · Wᵀ + b` for a `torch.nn.Linear` named `prefix`.
    pub fn linear(&mut self, x: &str, prefix: &str, bias: bool) -> String {
        let w = self.linear_weight(&format!("{prefix}.weight"));
        let y = self.op("MatMul", &[x, &w], vec![]);
        if bias {
            let b = self.weight(&format!("{prefix}.bias"));
            self.op("Add", &[&y, &b], vec![])
        } else {
            y
        }
    }

    /// `x · Wᵀ + b` for a 2-D `x`: one `Gemm` on the weight as stored in the file, or a
    /// `DynamicQuantizeMatMul` on int8 weights in int8 mode.
    pub fn gemm(&mut self, x: &str, prefix: &str, bias: bool) -> String {
        if self.quant.is_some() && crate::model::names::is_layer_linear(prefix) {
            return self.quantized_linear(x, prefix, bias);
        }
        let key = format!("{prefix}.weight");
        let w = self.raw_weight(&key);
        let trans_b = i64::from(self.model.weight(&key).layout == Layout::OutIn);
        let mut inputs = vec![x.to_string(), w];
        if bias {
            inputs.push(self.weight(&format!("{prefix}.bias")));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.op("Gemm", &inputs, vec![attr_int("transB", trans_b)])
    }

    fn quantized_linear(&mut self, x: &str, prefix: &str, bias: bool) -> String {
        let key = format!("{prefix}.weight");
        let w = self.model.weight(&key).clone();
        let (out, inp) = (w.info.shape[0], w.info.shape[1]);
        let values = match self.model.weight_f32(&key) {
            Ok(v) => v,
            Err(e) => {
                self.error.get_or_insert(e);
                vec![0.0; out * inp]
            }
        };
        let (q, scales) = super::quant::quantize_per_output(&values, out, inp);
        let sink = self.quant.as_mut().expect("int8 mode");
        let file = sink.file.clone();
        let q_bytes: Vec<u8> = q.iter().map(|&v| v as u8).collect();
        let (qo, ql) = sink.push(&q_bytes);
        let s_bytes: Vec<u8> = scales.iter().flat_map(|v| v.to_le_bytes()).collect();
        let (so, sl) = sink.push(&s_bytes);
        let external = |name: &str, dims: Vec<i64>, dtype: i32, off: u64, len: u64| TensorProto {
            dims,
            data_type: dtype,
            name: name.into(),
            external_data: vec![
                entry("location", &file),
                entry("offset", &off.to_string()),
                entry("length", &len.to_string()),
            ],
            data_location: 1,
            ..Default::default()
        };
        let (qn, sn) = (format!("{key}.int8"), format!("{key}.scale"));
        self.initializers.push(external(
            &qn,
            vec![inp as i64, out as i64],
            data_type::INT8,
            qo,
            ql,
        ));
        self.initializers
            .push(external(&sn, vec![out as i64], data_type::FLOAT, so, sl));
        let mut inputs = vec![x.to_string(), qn, sn, String::new()];
        if bias {
            inputs.push(self.weight(&format!("{prefix}.bias")));
        }
        self.uses_ms_domain = true;
        let name = self.fresh("dqmatmul");
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![name.clone()],
            name: name.clone(),
            op_type: "DynamicQuantizeMatMul".into(),
            attribute: vec![],
            domain: "com.microsoft".into(),
        });
        name
    }

    /// The quantised weights gathered so far (int8 mode), and any error met reading weights.
    pub fn take_quantized(&mut self) -> crate::Result<Option<super::quant::QuantSink>> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        Ok(self.quant.take())
    }

    pub fn layer_norm(&mut self, x: &str, prefix: &str) -> String {
        let eps = self.model.config.layer_norm_eps;
        let w = self.weight(&format!("{prefix}.weight"));
        let b = self.weight(&format!("{prefix}.bias"));
        self.op(
            "LayerNormalization",
            &[x, &w, &b],
            vec![attr_int("axis", -1), attr_float("epsilon", eps)],
        )
    }

    /// The MLP activation, as transformers' `ACT2FN` (activations.py) defines it: `silu`
    /// (`SiLUActivation`), `quick_gelu` (`QuickGELUActivation`), `gelu` (`GELUActivation`, erf),
    /// `gelu_pytorch_tanh` (`GELUTanh`).
    pub fn activation(&mut self, x: &str, act: Activation) -> String {
        match act {
            Activation::Silu => {
                let s = self.op("Sigmoid", &[x], vec![]);
                self.op("Mul", &[x, &s], vec![])
            }
            Activation::QuickGelu => {
                let k = self.scalar(1.702);
                let kx = self.op("Mul", &[x, &k], vec![]);
                let s = self.op("Sigmoid", &[&kx], vec![]);
                self.op("Mul", &[x, &s], vec![])
            }
            Activation::Gelu => {
                // The exact pattern ONNX Runtime's GeluFusion recognises.
                let r2 = self.scalar(std::f32::consts::SQRT_2);
                let xd = self.op("Div", &[x, &r2], vec![]);
                let e = self.op("Erf", &[&xd], vec![]);
                let one = self.scalar(1.0);
                let e1 = self.op("Add", &[&e, &one], vec![]);
                let m = self.op("Mul", &[x, &e1], vec![]);
                let half = self.scalar(0.5);
                self.op("Mul", &[&m, &half], vec![])
            }
            Activation::GeluTanh => {
                let x2 = self.op("Mul", &[x, x], vec![]);
                let x3 = self.op("Mul", &[&x2, x], vec![]);
                let k = self.scalar(0.044715);
                let kx3 = self.op("Mul", &[&x3, &k], vec![]);
                let inner = self.op("Add", &[x, &kx3], vec![]);
                let c = self.scalar((2.0f32 / std::f32::consts::PI).sqrt());
                let ci = self.op("Mul", &[&inner, &c], vec![]);
                let t = self.op("Tanh", &[&ci], vec![]);
                let one = self.scalar(1.0);
                let t1 = self.op("Add", &[&t, &one], vec![]);
                let half = self.scalar(0.5);
                let hx = self.op("Mul", &[x, &half], vec![]);
                self.op("Mul", &[&hx, &t1], vec![])
            }
        }
    }

    /// Names of weights that are graph inputs (streaming variant), in input order.
    pub fn weight_inputs(&self) -> &[String] {
        &self.weight_inputs
    }

    pub fn finish(self, name: &str) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: {
                let mut v = vec![OperatorSetIdProto {
                    domain: String::new(),
                    version: OPSET,
                }];
                if self.uses_ms_domain {
                    v.push(OperatorSetIdProto {
                        domain: "com.microsoft".into(),
                        version: 1,
                    });
                }
                v
            },
            producer_name: "distorch-vision".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: name.into(),
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
            }),
            metadata_props: vec![],
        }
    }
}

fn entry(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: key.into(),
        value: value.into(),
    }
}
