//! `pal selftest`: the correctness grid against the f64 reference, as a table.

use pal_core::Device;
use pal_kernels::testing::{append_cases, fresh_seed, run_append_case, run_case_on, selftest_grid, Backend, Rng};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// auto, cpu or cuda.
    #[arg(long, default_value = "auto", value_parser = crate::parse_device)]
    pub device: Device,
    /// A grid of a few seconds (bf16 seed shapes up to 4k tokens and a few random shapes).
    #[arg(long)]
    quick: bool,
    /// Only the cases of this op: decode, prefill or append (default: all).
    #[arg(long, value_parser = ["decode", "prefill", "append"])]
    op: Option<String>,
    /// Seed for the random data and shapes (default: fresh each run).
    #[arg(long)]
    seed: Option<u64>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &Args, device: Device) -> Result<ExitCode, pal_core::PalError> {
    let seed = a.seed.unwrap_or_else(fresh_seed);
    let mut rng = Rng::new(seed);
    let keep = |op: &str| a.op.as_deref().is_none_or(|o| o == op);
    let cases: Vec<_> = selftest_grid(&mut rng, a.quick).into_iter().filter(|c| keep(c.op())).collect();
    let gpu = match device {
        Device::Cuda => Some(pal_kernels::cuda::CudaDevice::probe()?),
        _ => None,
    };
    let backends: Vec<Backend> = match &gpu {
        Some(_) => Backend::CUDA.to_vec(),
        None => Backend::ALL.to_vec(),
    };
    let dev_name = match &gpu {
        Some(g) => format!("{} ({})", g.name(), g.arch()),
        None => crate::device::cpu_name(),
    };
    if !a.json {
        println!(
            "pal selftest: device {device} ({dev_name}), seed {seed}, {} cases x {} backends",
            cases.len(),
            backends.len()
        );
        if gpu.is_some() {
            println!(
                "(GPU prefill: `cuda` the device's tensor-core kernel for f16/bf16 and head dims divisible by 16 (wgmma on Hopper at head dims 64/128), `cuda-split` the same with 3 key splits and the merge (rows in chunks of 7 elsewhere), `cuda-whole` the row-by-row fallback, `cuda-mma` the mma.sync kernel; ragged new K/V stays CPU-only)"
            );
        }
        println!("{:<26} {:<7} {:<10} {:>10} {:>10} {:>5}  shape", "case", "op", "backend", "max_abs", "rms", "pass");
    }
    let (mut passed, mut failed) = (0, 0);
    let mut rows: Vec<(String, &'static str, String, Vec<pal_kernels::testing::Outcome>)> = Vec::new();
    for case in &cases {
        rows.push((
            case.name.clone(),
            case.op(),
            case.shape(),
            run_case_on(case, rng.next_u64(), &backends, gpu.as_ref())?,
        ));
    }
    let app_backends: Vec<Backend> = match &gpu {
        Some(_) => vec![Backend::Cuda],
        None => vec![Backend::Cpu],
    };
    for c in append_cases().into_iter().filter(|_| keep("append")) {
        let shape = format!(
            "T={} Hq={} Hkv={} D={} page={} {} rope={}",
            c.tokens,
            c.hq,
            c.hkv,
            c.head_dim,
            c.page,
            c.dtype,
            c.rope
                .map(|r| format!("{:?}{}", r.style, if r.llama3.is_some() { "+llama3" } else { "" }))
                .unwrap_or("none".into())
        );
        rows.push((c.name.clone(), "append", shape, run_append_case(&c, rng.next_u64(), &app_backends, gpu.as_ref())?));
    }
    for (name, op, shape, outcomes) in rows {
        for o in outcomes {
            let ok = o.pass && o.deterministic;
            if ok {
                passed += 1;
            } else {
                failed += 1;
            }
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "case": name, "op": op, "backend": o.backend.name(), "shape": shape,
                        "max_abs": o.err.max_abs, "rms": o.err.rms,
                        "non_finite": o.err.non_finite, "deterministic": o.deterministic, "pass": ok,
                    })
                );
            } else {
                println!(
                    "{:<26} {:<7} {:<10} {:>10.2e} {:>10.2e} {:>5}  {}",
                    name,
                    op,
                    o.backend.name(),
                    o.err.max_abs,
                    o.err.rms,
                    if ok {
                        "ok"
                    } else if !o.deterministic {
                        "NONDET"
                    } else {
                        "FAIL"
                    },
                    shape
                );
            }
        }
    }
    if !a.json {
        println!("selftest: {passed} passed, {failed} failed (seed {seed}; rerun with --seed {seed})");
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
