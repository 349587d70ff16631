//! `--dtype int8`: the layers' linear weights quantised per output channel (symmetric int8)
//! for ONNX Runtime's `com.microsoft.DynamicQuantizeMatMul`, which quantises activations on
//! the fly (u8 × s8, VNNI on CPUs that have it). The int8 weights cannot point into the
//! original file, so each block gets a small `<block>.q8` data file beside its graph.

/// Bytes of one block's quantised weights, gathered while its graph is built.
#[derive(Default)]
pub struct QuantSink {
    /// File name (relative to the graph) the external data points into.
    pub file: String,
    pub bytes: Vec<u8>,
}

impl QuantSink {
    /// Appends `data`, 64-byte aligned, and returns its (offset, length).
    pub fn push(&mut self, data: &[u8]) -> (u64, u64) {
        while self.bytes.len() % 64 != 0 {
            self.bytes.push(0);
        }
        let offset = self.bytes.len() as u64;
        self.bytes.extend_from_slice(data);
        (offset, data.len() as u64)
    }
}

/// Quantises `w` (`[out, in]` row-major) per output channel: returns `[in, out]` int8 values
/// (the `B` of `A · B`) and one scale per output channel.
pub fn quantize_per_output(w: &[f32], out: usize, inp: usize) -> (Vec<i8>, Vec<f32>) {
    let mut scales = vec![0f32; out];
    for (o, s) in scales.iter_mut().enumerate() {
        let row = &w[o * inp..(o + 1) * inp];
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        *s = if max > 0.0 { max / 127.0 } else { 1.0 };
    }
    let mut q = vec![0i8; out * inp];
    for o in 0..out {
        let inv = 1.0 / scales[o];
        for i in 0..inp {
            let v = (w[o * inp + i] * inv)
                .round_ties_even()
                .clamp(-127.0, 127.0);
            q[i * out + o] = v as i8;
        }
    }
    (q, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_within_half_a_step() {
        let (out, inp) = (3, 5);
        let w: Vec<f32> = (0..15).map(|i| (i as f32 - 7.0) * 0.13).collect();
        let (q, s) = quantize_per_output(&w, out, inp);
        for o in 0..out {
            for i in 0..inp {
                let back = q[i * out + o] as f32 * s[o];
                assert!((back - w[o * inp + i]).abs() <= s[o] / 2.0 + 1e-7);
            }
        }
        // A zero row keeps a usable scale.
        let (_, s) = quantize_per_output(&[0.0; 4], 2, 2);
        assert_eq!(s, vec![1.0, 1.0]);
    }
}
