//! `pal fetch`, `pal generate` and `pal score` end to end: JSON fields, batching from a file,
//! and clear errors (missing or corrupt model, prompt longer than the context, bad sampling).

use pal_model::testing::{tiny_model, TinySpec};
use std::process::Command;

fn pal(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pal")).args(args).output().expect("run pal")
}

fn tiny_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pal-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, tiny_model(&TinySpec { context: 128, ..TinySpec::default() }, 11)).unwrap();
    p
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn generate_json_and_prompts_file_on_a_tiny_model() {
    let m = tiny_file("gen.gguf");
    let m = m.to_str().unwrap();
    let out = pal(&["generate", "--model", m, "--prompt", "the cat", "--max-tokens", "5", "--ignore-eos", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["prompt_ids", "gen_ids", "text", "prefill_tok_s", "decode_tok_s", "finish_reason"] {
        assert!(row.get(key).is_some(), "missing {key}: {row}");
    }
    assert_eq!(row["gen_ids"].as_array().unwrap().len(), 5);

    let prompts = std::env::temp_dir().join(format!("pal-prompts-{}.txt", std::process::id()));
    std::fs::write(&prompts, "one\ntwo two\n\nthree three three\n").unwrap();
    let out = pal(&[
        "generate",
        "--model",
        m,
        "--prompts-file",
        prompts.to_str().unwrap(),
        "--max-tokens",
        "4",
        "--ignore-eos",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3, "one JSON object per non-empty line");
    assert!(stderr(&out).contains("aggregate"), "{}", stderr(&out));
}

#[test]
fn score_json_has_a_row_per_position_and_ppl() {
    let m = tiny_file("score.gguf");
    let out = pal(&["score", "--model", m.to_str().unwrap(), "--text", "the the cat in", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = v["ids"].as_array().unwrap().len();
    let rows = v["positions"].as_array().unwrap();
    assert_eq!(rows.len(), n - 1);
    for r in rows {
        assert!(r["top1_logit"].as_f64().unwrap() >= r["top2_logit"].as_f64().unwrap());
        assert!(r["logprob_next"].as_f64().unwrap() <= 0.0);
    }
    let nll: f64 = rows.iter().map(|r| -r["logprob_next"].as_f64().unwrap()).sum::<f64>() / rows.len() as f64;
    assert!((v["ppl"].as_f64().unwrap() - nll.exp()).abs() < 1e-6 * nll.exp());
}

#[test]
fn bad_inputs_are_clear_errors() {
    let m = tiny_file("bad.gguf");
    let ms = m.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["generate", "--model", "/nonexistent/model.gguf", "--prompt", "x"], "no such file"),
        // A negative number is the option's value (the typed error names it), not an unknown flag.
        (vec!["generate", "--model", ms, "--prompt", "x", "--temperature", "-1"], "temperature"),
        (vec!["generate", "--model", ms, "--prompt", "x", "--top-p", "0"], "top_p"),
    ];
    for (args, want) in cases {
        let out = pal(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    // Negative frequency and presence penalties are valid (they favour repeats).
    let out = pal(&[
        "generate",
        "--model",
        ms,
        "--prompt",
        "x",
        "--max-tokens",
        "2",
        "--temperature",
        "0.7",
        "--frequency-penalty",
        "-0.5",
        "--presence-penalty",
        "-0.25",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let long = "a ".repeat(300);
    let out = pal(&["generate", "--model", ms, "--prompt", &long]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("context"), "{}", stderr(&out));
    // A corrupt file: truncated in the middle of the tensor index.
    let bytes = std::fs::read(&m).unwrap();
    let cut = m.with_file_name("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let out = pal(&["generate", "--model", cut.to_str().unwrap(), "--prompt", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cut.gguf"), "{}", stderr(&out));
    // An unsupported architecture.
    let mut w = pal_model::gguf::GgufWriter::new();
    w.meta("general.architecture", pal_model::gguf::MetaValue::String("mamba".into()));
    let arch = m.with_file_name("mamba.gguf");
    w.write(&arch).unwrap();
    let out = pal(&["score", "--model", arch.to_str().unwrap(), "--text", "x y"]);
    assert!(stderr(&out).contains("architecture `mamba`"), "{}", stderr(&out));
}

#[test]
fn fetch_and_generate_smollm2() {
    let out = pal(&["fetch", "smollm2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(path.ends_with("SmolLM2-135M-Instruct.Q4_1.gguf") && std::path::Path::new(&path).is_file());
    let out = pal(&[
        "generate",
        "--model",
        "smollm2",
        "--prompt",
        "What is the capital of France? Answer in one word.",
        "--chat",
        "--max-tokens",
        "12",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // llama.cpp (llama-cpp-python 0.3.36, greedy, the file's chat template) answers exactly this.
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), "The capital of France is Paris.", "{text}");
    assert!(stderr(&out).contains("tok/s"));
    let out = pal(&["fetch", "nosuchmodel"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("smollm2"), "lists the known models: {}", stderr(&out));
}
