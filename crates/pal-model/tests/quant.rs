//! Dequantization against the `gguf` Python package, quantize round trips, and the quantized
//! matmul against dequantize-then-dot.

use pal_model::gguf::GgmlType;
use pal_model::qmatmul::{dot_f32, dot_quant, dot_quant_portable, quantize_acts};
use pal_model::quant::{dequantize, quantize};
use rand::{Rng, SeedableRng};

fn ty(name: &str) -> GgmlType {
    *GgmlType::ALL.iter().find(|t| t.name() == name).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn dequantize_matches_gguf_python_for_every_format() {
    let golden: serde_json::Value = serde_json::from_str(include_str!("golden/dequant_gguf_py.json")).unwrap();
    let mut seen = Vec::new();
    for case in golden["cases"].as_array().unwrap() {
        let t = ty(case["type"].as_str().unwrap());
        let bytes = hex(case["hex"].as_str().unwrap());
        let want: Vec<f32> = case["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let mut got = vec![f32::NAN; want.len()];
        dequantize(t, &bytes, &mut got).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // Same f32 arithmetic up to operation order: allow a few ulps.
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{t} element {i}: got {g}, gguf-py {w}");
        }
        seen.push(t);
    }
    for t in GgmlType::ALL {
        assert!(seen.contains(&t), "no golden data for {t}");
    }
}

#[test]
fn quantize_round_trip_error_is_bounded_by_the_step() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let x: Vec<f32> = (0..32 * 40).map(|_| rng.gen_range(-3.0..3.0)).collect();
    for (t, steps) in [(GgmlType::Q8_0, 127.0), (GgmlType::Q4_0, 8.0), (GgmlType::Q4_1, 15.0)] {
        let bytes = quantize(t, &x).unwrap();
        let mut y = vec![0f32; x.len()];
        dequantize(t, &bytes, &mut y).unwrap();
        for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let range = if t == GgmlType::Q4_1 {
                xb.iter().cloned().fold(f32::MIN, f32::max) - xb.iter().cloned().fold(f32::MAX, f32::min)
            } else {
                amax
            };
            let step = range / steps;
            // Q4_0 maps [-8d, 7d]: the side opposite the largest magnitude can clip by one step.
            let bound = if t == GgmlType::Q4_0 { 1.01 } else { 0.51 } * step;
            for (a, b2) in xb.iter().zip(yb) {
                assert!((a - b2).abs() <= bound + 2e-3 * amax, "{t} block {b}: {a} -> {b2} (step {step})");
            }
        }
    }
}

#[test]
fn integer_dot_products_match_dequantized_dot() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    for t in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
        for k in [32, 64, 576, 1536] {
            let w: Vec<f32> = (0..k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let x: Vec<f32> = (0..k).map(|_| rng.gen_range(-2.0..2.0)).collect();
            let wb = quantize(t, &w).unwrap();
            let mut wd = vec![0f32; k];
            dequantize(t, &wb, &mut wd).unwrap();
            let acts = quantize_acts(&x, k);
            let exact = dot_f32(&wd, &x);
            let portable = dot_quant_portable(t, &wb, &acts);
            let fast = dot_quant(t, &wb, &acts);
            // The activations are rounded to 16 bits: error <= amax/65534 per element.
            let norm = wd.iter().map(|v| v.abs()).sum::<f32>() * x.iter().fold(0f32, |a, v| a.max(v.abs())) / 32767.0;
            assert!((portable - exact).abs() <= norm * 0.6 + 1e-4, "{t} k={k}: portable {portable} vs exact {exact}");
            assert!(
                (fast - portable).abs() <= 1e-4 * portable.abs().max(1.0),
                "{t} k={k}: simd {fast} vs portable {portable}"
            );
        }
    }
}

/// `QMatrix::matmul` (integer dots below 4 rows, dequantize + SGEMM from 4 on) against an f64
/// product of the dequantized weights, at awkward sizes, outputs poisoned first.
#[test]
fn matmul_paths_match_the_dequantized_product() {
    use pal_model::gguf::{GgufFile, GgufWriter};
    use pal_model::QMatrix;
    use std::sync::Arc;
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    for t in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
        for (rows, k) in [(1usize, 32usize), (7, 64), (100, 96), (131, 576)] {
            let w: Vec<f32> = (0..rows * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut wr = GgufWriter::new();
            wr.tensor("w", &[k, rows], t, quantize(t, &w).unwrap()).unwrap();
            let f = Arc::new(GgufFile::from_bytes(wr.to_bytes()).unwrap());
            let m = QMatrix::new(f.clone(), f.tensor("w").unwrap().clone());
            let mut wd = vec![0f32; rows * k];
            dequantize(t, m.bytes(), &mut wd).unwrap();
            for mrows in [1usize, 3, 4, 5, 17] {
                let x: Vec<f32> = (0..mrows * k).map(|_| rng.gen_range(-2.0..2.0)).collect();
                let mut out = vec![f32::NAN; mrows * rows];
                m.matmul(&x, &mut out).unwrap();
                for i in 0..mrows {
                    for r in 0..rows {
                        let exact: f64 = (0..k).map(|j| x[i * k + j] as f64 * wd[r * k + j] as f64).sum();
                        let mag: f64 = (0..k).map(|j| (x[i * k + j] as f64 * wd[r * k + j] as f64).abs()).sum();
                        let got = out[i * rows + r] as f64;
                        assert!(
                            (got - exact).abs() <= 1e-4 * mag + 1e-6,
                            "{t} {rows}x{k} m={mrows} [{i},{r}]: {got} vs {exact}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn mismatched_sizes_are_typed_errors() {
    use pal_model::gguf::{GgufFile, GgufWriter};
    use pal_model::{ModelError, QMatrix};
    use std::sync::Arc;
    let mut out = vec![0f32; 31];
    assert!(matches!(
        dequantize(GgmlType::Q4_1, &[0u8; 20], &mut out),
        Err(ModelError::InvalidArgument { arg: "bytes", .. })
    ));
    let mut wr = GgufWriter::new();
    wr.tensor("w", &[32, 3], GgmlType::Q8_0, vec![0u8; 3 * 34]).unwrap();
    let f = Arc::new(GgufFile::from_bytes(wr.to_bytes()).unwrap());
    let m = QMatrix::new(f.clone(), f.tensor("w").unwrap().clone());
    let mut o = vec![7f32; 5];
    assert!(matches!(m.matmul(&[0.0; 33], &mut o), Err(ModelError::InvalidArgument { arg: "x", .. })));
    assert!(matches!(m.matmul(&[0.0; 64], &mut o), Err(ModelError::InvalidArgument { arg: "out", .. })));
    assert!(o.iter().all(|&v| v == 7.0), "nothing written on error");
    assert!(matches!(m.row_into(3, &mut [0f32; 32]), Err(ModelError::InvalidArgument { arg: "row", .. })));
}
