//! The `pal` binary end to end: selftest passes, bench prints the promised JSON, bad input is a
//! clear error with a non-zero exit.

use std::process::Command;

fn pal(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pal")).args(args).output().expect("run pal")
}

#[test]
fn selftest_quick_passes() {
    let out = pal(&["selftest", "--quick", "--device", "cpu"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(" 0 failed"), "{text}");
    assert!(text.contains("max_abs") && text.contains("rms"));
}

#[test]
fn bench_json_rows_have_every_field() {
    for op in ["decode", "prefill", "append"] {
        let out = pal(&[
            "--threads",
            "2",
            "bench",
            op,
            "--batch",
            "2",
            "--context",
            "100",
            "--new-tokens",
            "10",
            "--hq",
            "4",
            "--hkv",
            "2",
            "--head-dim",
            "64",
            "--page",
            "8",
            "--budget-ms",
            "20",
            "--json",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON array");
        let rows = rows.as_array().expect("array");
        assert!(!rows.is_empty());
        for r in rows {
            for key in [
                "op",
                "kernel",
                "device",
                "batch",
                "context",
                "hq",
                "hkv",
                "head_dim",
                "page",
                "dtype",
                "ms",
                "gbps",
                "frac_of_ceiling",
                "speedup_vs_gather",
                "speedup_vs_dense",
            ] {
                assert!(r.get(key).is_some(), "{op}: row lacks {key}: {r}");
            }
            assert_eq!(r["op"], op);
            assert!(r["ms"].as_f64().unwrap() > 0.0);
            assert!(r["device"].as_str().unwrap().starts_with("cpu"));
        }
        let kernels: Vec<&str> = rows.iter().map(|r| r["kernel"].as_str().unwrap()).collect();
        match op {
            // The decode cell's ceiling is the read probe timed in the same rounds.
            "decode" => {
                assert_eq!(kernels, ["pal", "gather", "dense", "read-probe"]);
                let probe = rows[3]["gbps"].as_f64().unwrap();
                assert!(probe > 0.0 && rows[0]["ceiling_value"].as_f64().unwrap() == probe, "{}", rows[0]);
            }
            "prefill" => assert_eq!(kernels, ["pal", "gather", "dense"]),
            _ => {}
        }
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let out = pal(&["bench", "decode", "--hq", "6", "--hkv", "4", "--budget-ms", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("num_qo_heads"));
    let out = pal(&["selftest", "--device", "cuda"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cuda"));
    let out = pal(&["bench", "decode", "--dtype", "f64"]);
    assert!(!out.status.success());
}
