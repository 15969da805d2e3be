//! Dequantization against the `gguf` Python package, quantize round trips, and the quantized
//! matmul against dequantize-then-dot.

use pal_model::gguf::GgmlType;
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
    for (t, steps) in [
        (GgmlType::Q8_0, 127.0),
        (GgmlType::Q4_0, 8.0),
        (GgmlType::Q4_1, 15.0),
        (GgmlType::Q5_0, 16.0),
        (GgmlType::Q5_1, 31.0),
    ] {
        let bytes = quantize(t, &x).unwrap();
        let mut y = vec![0f32; x.len()];
        dequantize(t, &bytes, &mut y).unwrap();
        for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let range = if matches!(t, GgmlType::Q4_1 | GgmlType::Q5_1) {
                xb.iter().cloned().fold(f32::MIN, f32::max) - xb.iter().cloned().fold(f32::MAX, f32::min)
            } else {
                amax
            };
            let step = range / steps;
            // Q4_0 / Q5_0 map [-8d, 7d] / [-16d, 15d]: the side opposite the largest magnitude can
            // clip by one step.
            let bound = if matches!(t, GgmlType::Q4_0 | GgmlType::Q5_0) { 1.01 } else { 0.51 } * step;
            for (a, b2) in xb.iter().zip(yb) {
                assert!((a - b2).abs() <= bound + 2e-3 * amax, "{t} block {b}: {a} -> {b2} (step {step})");
            }
        }
    }
}

/// The packed integer kernel (AVX2 where present) against its portable twin (same integer sums,
/// same f32 operations: equal to the bit) and against an f64 product of the dequantized weights
/// with the 8-bit activations it was given (f32 rounding only), over awkward row counts (partial
/// groups of 8) and lengths, with activation row counts that exercise every token tile (16, 8,
/// 4, 3, 2, 1) and their edges.
#[test]
fn packed_kernel_matches_its_portable_twin_and_the_exact_product() {
    use pal_model::gguf::{GgufFile, GgufWriter};
    use pal_model::packed::{quantize_acts, PackedMatrix, GROUP};
    use pal_model::QMatrix;
    use std::sync::Arc;
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    for t in GgmlType::ALL.into_iter().filter(|&t| PackedMatrix::supports(t)) {
        let shapes: &[(usize, usize)] = if t.block_elems() == 256 {
            &[(1, 256), (7, 512), (9, 1536), (24, 256), (13, 768)]
        } else {
            &[(1, 32), (7, 64), (9, 576), (24, 1536), (13, 96)]
        };
        for &(rows, k) in shapes {
            let wb = pal_model::testing::random_weights(t, rows, k, 1.0, rng.gen());
            let mut wd = vec![0f32; rows * k];
            dequantize(t, &wb, &mut wd).unwrap();
            let packed = PackedMatrix::pack(t, &wb, rows, k).unwrap();
            let mut wr = GgufWriter::new();
            wr.tensor("w", &[k, rows], t, wb).unwrap();
            let f = Arc::new(GgufFile::from_bytes(wr.to_bytes()).unwrap());
            let qm = QMatrix::new(f.clone(), f.tensor("w").unwrap().clone()).unwrap();
            for m in (1..=9).chain([12, 16, 17, 23, 33]) {
                // Outliers in some blocks, as in real activations.
                let x: Vec<f32> =
                    (0..m * k).map(|i| rng.gen_range(-2.0..2.0) * if i % 97 == 5 { 30.0 } else { 1.0 }).collect();
                let mut acts = Vec::new();
                quantize_acts(&x, &mut acts);
                let mut out = vec![f32::NAN; m * rows];
                qm.matmul(&x, &mut out).unwrap();
                let nb = k / 32;
                for ti in 0..m {
                    let a = &acts[ti * nb..(ti + 1) * nb];
                    for g in 0..packed.groups() {
                        let mut tile = [0f32; GROUP];
                        packed.group_dot_portable(g, a, &mut tile);
                        for (r, &p) in tile.iter().enumerate().take(rows.saturating_sub(g * GROUP)) {
                            let row = g * GROUP + r;
                            let got = out[ti * rows + row];
                            assert_eq!(
                                got.to_bits(),
                                p.to_bits(),
                                "{t} {rows}x{k} m={m} [{ti},{row}]: simd {got} vs portable {p}"
                            );
                            let (mut exact, mut mag) = (0f64, 0f64);
                            for (j, &wv) in wd[row * k..(row + 1) * k].iter().enumerate() {
                                let xq = a[j / 32].d as f64 * a[j / 32].qs[j % 32] as f64;
                                exact += wv as f64 * xq;
                                mag += (wv as f64 * xq).abs();
                            }
                            assert!(
                                (got as f64 - exact).abs() <= 1e-5 * mag + 1e-6,
                                "{t} [{ti},{row}]: {got} vs {exact}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The 8-bit activation blocks: every element within half a step (`amax / 254`) of its input,
/// `s` the scaled sum of the quants, zero blocks exact.
#[test]
fn activation_blocks_round_to_half_a_step() {
    use pal_model::packed::quantize_acts;
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let mut x: Vec<f32> = (0..32 * 50).map(|_| rng.gen_range(-5.0..5.0)).collect();
    x[32..64].fill(0.0);
    x[100] = 1e4;
    let mut acts = Vec::new();
    quantize_acts(&x, &mut acts);
    assert_eq!(acts.len(), 50);
    for (b, a) in acts.iter().enumerate() {
        let xb = &x[b * 32..(b + 1) * 32];
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (q, v) in a.qs.iter().zip(xb) {
            assert!((a.d * *q as f32 - v).abs() <= amax / 254.0 * 1.0001 + 1e-30, "block {b}: {v} -> {q} * {}", a.d);
        }
        let sum: i32 = a.qs.iter().map(|&q| q as i32).sum();
        assert!((a.s - a.d * sum as f32).abs() <= 1e-6 * a.s.abs().max(1e-30));
        let half = |h: &[i8]| h.iter().map(|&q| q as i32).sum::<i32>();
        assert_eq!([a.half_sums[0] as i32, a.half_sums[1] as i32], [half(&a.qs[..16]), half(&a.qs[16..])]);
    }
    assert!(acts[1].qs.iter().all(|&q| q == 0) && acts[1].d == 0.0);
    // The SIMD rounding (where the CPU has it) equals the portable one to the bit, ties included.
    let mut x2: Vec<f32> = (0..32 * 64).map(|_| rng.gen_range(-3.0..3.0)).collect();
    for (b, blk) in x2.chunks_exact_mut(32).enumerate() {
        // Exact halves: amax 127 makes d = 1, so v = k + 0.5 rounds to the even neighbour.
        if b % 2 == 0 {
            blk[0] = 127.0;
            for (j, v) in blk.iter_mut().enumerate().skip(1) {
                *v = j as f32 - 16.5;
            }
        }
    }
    let mut portable = vec![pal_model::packed::ActBlock::default(); 64];
    pal_model::packed::quantize_acts_portable(&x2, &mut portable);
    quantize_acts(&x2, &mut acts);
    for (b, (p, f)) in portable.iter().zip(&acts).enumerate() {
        assert_eq!(
            (p.d.to_bits(), p.s.to_bits(), p.qs, p.half_sums),
            (f.d.to_bits(), f.s.to_bits(), f.qs, f.half_sums),
            "block {b}"
        );
    }
    assert_eq!(portable[0].qs[1], -16, "-15.5 rounds half to even");
    assert_eq!(portable[0].qs[2], -14, "-14.5 rounds half to even");
}

#[test]
fn pack_rejects_bad_arguments() {
    use pal_model::packed::PackedMatrix;
    use pal_model::ModelError;
    let bytes = vec![0u8; 3 * 2 * 20];
    assert!(PackedMatrix::pack(GgmlType::Q4_1, &bytes, 3, 64).is_ok());
    let err = |r: pal_model::Result<PackedMatrix>| match r {
        Err(ModelError::InvalidArgument { arg, .. }) => arg,
        other => panic!("expected a typed error, got {other:?}"),
    };
    assert_eq!(err(PackedMatrix::pack(GgmlType::Q4_1, &bytes[1..], 3, 64)), "bytes");
    assert_eq!(err(PackedMatrix::pack(GgmlType::Q4_1, &bytes, 4, 64)), "bytes");
    assert_eq!(err(PackedMatrix::pack(GgmlType::Q4_1, &bytes, 3, 48)), "cols");
    assert_eq!(err(PackedMatrix::pack(GgmlType::F16, &bytes, 3, 64)), "dtype");
    // K-quants: columns in whole super-blocks of 256.
    assert_eq!(err(PackedMatrix::pack(GgmlType::Q4_K, &vec![0u8; 2 * 144], 4, 128)), "cols");
    assert!(PackedMatrix::pack(GgmlType::Q5_K, &vec![0u8; 2 * 176], 2, 256).is_ok());
    assert_eq!(err(PackedMatrix::pack(GgmlType::Q5_K, &vec![0u8; 2 * 176], 1, 256)), "bytes");
}

/// `QMatrix::matmul` (packed integer kernels where the format has them; f32 dots below 4 rows
/// and dequantize + SGEMM from 4 on for the others), for every format, against an f64 product of the dequantized weights
/// and the unrounded activations, at awkward sizes, outputs poisoned first. The integer formats
/// round activations to 8 bits per block: their bound adds half a step of each block's largest
/// activation per weight.
#[test]
fn matmul_paths_match_the_dequantized_product() {
    use pal_model::gguf::{GgufFile, GgufWriter};
    use pal_model::packed::PackedMatrix;
    use pal_model::QMatrix;
    use std::sync::Arc;
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    for t in GgmlType::ALL {
        let shapes: &[(usize, usize)] = if t.block_elems() == 256 {
            &[(1, 256), (7, 512), (100, 256), (131, 768)]
        } else {
            &[(1, 32), (7, 64), (100, 96), (131, 576)]
        };
        for &(rows, k) in shapes {
            let mut wr = GgufWriter::new();
            wr.tensor("w", &[k, rows], t, pal_model::testing::random_weights(t, rows, k, 1.0, rng.gen())).unwrap();
            let f = Arc::new(GgufFile::from_bytes(wr.to_bytes()).unwrap());
            let m = QMatrix::new(f.clone(), f.tensor("w").unwrap().clone()).unwrap();
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
                        let rounding: f64 = if PackedMatrix::supports(t) {
                            (0..k)
                                .map(|j| {
                                    let blk = &x[i * k + j / 32 * 32..][..32];
                                    wd[r * k + j].abs() as f64 * blk.iter().fold(0f32, |a, v| a.max(v.abs())) as f64
                                        / 254.0
                                })
                                .sum()
                        } else {
                            0.0
                        };
                        let got = out[i * rows + r] as f64;
                        assert!(
                            (got - exact).abs() <= 1e-4 * mag + rounding + 1e-6,
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
    let m = QMatrix::new(f.clone(), f.tensor("w").unwrap().clone()).unwrap();
    let mut o = vec![7f32; 5];
    assert!(matches!(m.matmul(&[0.0; 33], &mut o), Err(ModelError::InvalidArgument { arg: "x", .. })));
    assert!(matches!(m.matmul(&[0.0; 64], &mut o), Err(ModelError::InvalidArgument { arg: "out", .. })));
    assert!(o.iter().all(|&v| v == 7.0), "nothing written on error");
    assert!(matches!(m.row_into(3, &mut [0f32; 32]), Err(ModelError::InvalidArgument { arg: "row", .. })));
}

/// SwiGLU's vector exp (where the CPU has one) against f64, over the whole f32 range that matters
/// and beyond it (saturation), awkward length for the scalar tail.
#[test]
fn swiglu_matches_f64() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let n = 10_007;
    let mut gate: Vec<f32> =
        (0..n).map(|i| if i % 50 == 0 { rng.gen_range(-200.0..200.0) } else { rng.gen_range(-20.0..20.0) }).collect();
    gate[1] = 0.0;
    gate[2] = -0.0;
    let up: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0..3.0)).collect();
    let want: Vec<f64> = gate.iter().zip(&up).map(|(&g, &u)| g as f64 / (1.0 + (-g as f64).exp()) * u as f64).collect();
    pal_model::swiglu(&mut gate, &up);
    for (i, (g, w)) in gate.iter().zip(&want).enumerate() {
        assert!((*g as f64 - w).abs() <= 4e-7 * w.abs() + 1e-30, "element {i}: {g} vs {w}");
    }
}

/// The fused gate/up/SwiGLU pass (`swiglu_product`) equals the unfused steps to the bit, its
/// activation blocks equal rounding its output, and `matmul_acts` with them equals `matmul`: every
/// format (the packed ones fuse when the rows are a multiple of 32, the others fall back), batch
/// sizes on both sides of the batched tasks, outputs poisoned first. Mismatched shapes are errors.
#[test]
fn fused_swiglu_equals_the_unfused_steps() {
    use pal_model::gguf::{GgufFile, GgufWriter};
    use pal_model::packed::{quantize_acts, ActBlock};
    use pal_model::qmatmul::{matmul_many, swiglu_product};
    use pal_model::{ModelError, QMatrix};
    use std::sync::Arc;
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let act_bits = |a: &[ActBlock]| a.iter().map(|b| (b.d.to_bits(), b.s.to_bits(), b.qs)).collect::<Vec<_>>();
    for t in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::F16] {
        for (n, k) in [(32usize, 32usize), (96, 64), (200, 96), (1536, 576)] {
            let mut wr = GgufWriter::new();
            for name in ["gate", "up", "down"] {
                let (rows, cols) = if name == "down" { (k, n) } else { (n, k) };
                // A block format's rows are whole blocks: 200 columns only as F32.
                let tt = if cols % 32 == 0 { t } else { GgmlType::F32 };
                let w: Vec<f32> = (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
                wr.tensor(name, &[cols, rows], tt, quantize(tt, &w).unwrap()).unwrap();
            }
            let f = Arc::new(GgufFile::from_bytes(wr.to_bytes()).unwrap());
            let mat = |name: &str| QMatrix::new(f.clone(), f.tensor(name).unwrap().clone()).unwrap();
            let (gate, up, down) = (mat("gate"), mat("up"), mat("down"));
            for m in [1usize, 3, 16, 17] {
                let x: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-2.0..2.0)).collect();
                let (mut want, mut want_up) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
                matmul_many(&mut [(&gate, &mut want), (&up, &mut want_up)], &x).unwrap();
                pal_model::swiglu(&mut want, &want_up);
                let (mut got, mut scratch, mut acts) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n], Vec::new());
                swiglu_product(&gate, &up, &x, &mut got, &mut scratch, &mut acts).unwrap();
                let what = format!("{t} {n}x{k} m={m}");
                assert_eq!(bits(&got), bits(&want), "{what}");
                let fused = t != GgmlType::F16 && n % 32 == 0;
                if fused {
                    let mut again = Vec::new();
                    quantize_acts(&got, &mut again);
                    assert_eq!(act_bits(&acts), act_bits(&again), "{what}: activation blocks");
                } else {
                    assert!(acts.is_empty(), "{what}: no blocks without the fused pass");
                }
                let (mut a, mut b) = (vec![f32::NAN; m * k], vec![f32::NAN; m * k]);
                down.matmul(&got, &mut a).unwrap();
                down.matmul_acts(&got, &acts, &mut b).unwrap();
                assert_eq!(bits(&a), bits(&b), "{what}: down product");
            }
        }
    }
    // Shapes: gate and up must agree, and the outputs must fit.
    let mut wr = GgufWriter::new();
    wr.tensor("g", &[32, 64], GgmlType::Q8_0, vec![0u8; 64 * 34]).unwrap();
    wr.tensor("u", &[32, 32], GgmlType::Q8_0, vec![0u8; 32 * 34]).unwrap();
    let f = Arc::new(GgufFile::from_bytes(wr.to_bytes()).unwrap());
    let (g, u) = (f.tensor("g").unwrap().clone(), f.tensor("u").unwrap().clone());
    let (g, u) = (QMatrix::new(f.clone(), g).unwrap(), QMatrix::new(f.clone(), u).unwrap());
    let (mut o, mut s, mut a) = (vec![0f32; 64], vec![0f32; 64], Vec::new());
    assert!(matches!(
        swiglu_product(&g, &u, &[0.0; 32], &mut o, &mut s, &mut a),
        Err(ModelError::InvalidArgument { arg: "up", .. })
    ));
    assert!(matches!(
        swiglu_product(&g, &g, &[0.0; 32], &mut o[..63], &mut s, &mut a),
        Err(ModelError::InvalidArgument { arg: "out", .. })
    ));
}
