//! `pal kernels build`: compile every CUDA kernel variant ahead of time into the on-disk cache, so
//! that the first real call does not pay for NVRTC. Needs NVRTC, not a GPU.

use indicatif::{ProgressBar, ProgressStyle};
use pal_core::PalError;
use pal_kernels::cuda::{compile_variant, toolkit, CudaDevice, Variant};
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Compile every kernel variant for the GPU's architecture (or --arch) into the cache.
    Build {
        /// Virtual architecture, e.g. compute_90a (default: the GPU's; compute_90a without a GPU).
        #[arg(long)]
        arch: Option<String>,
    },
}

pub fn run(cmd: &Cmd) -> Result<ExitCode, PalError> {
    match cmd {
        Cmd::Build { arch } => {
            let tk = toolkit().map_err(|reason| PalError::DeviceUnavailable { device: "nvrtc".into(), reason })?;
            let arch: &'static str = match arch {
                Some(a) => Box::leak(a.clone().into_boxed_str()),
                None => CudaDevice::probe().map(|d| d.arch()).unwrap_or("compute_90a"),
            };
            let variants: Vec<Variant> = Variant::all().into_iter().filter(|v| v.family.compiles_for(arch)).collect();
            eprintln!("NVRTC {} -> {arch}, {} variants", tk.nvrtc_lib.display(), variants.len());
            let bar = ProgressBar::new(variants.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let t = std::time::Instant::now();
            for v in &variants {
                bar.set_message(format!("{:?} {} D={} g={}", v.family, v.q, v.head_dim, v.group));
                compile_variant(v, arch)
                    .map_err(|reason| PalError::DeviceFailure { device: "nvrtc".into(), reason })?;
                bar.inc(1);
            }
            bar.finish_and_clear();
            println!("compiled {} kernel variants for {arch} in {:.1} s", variants.len(), t.elapsed().as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
    }
}
