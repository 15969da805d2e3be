//! Every CUDA kernel variant compiles with NVRTC for Hopper (compute_90a). Needs no GPU, only NVRTC
//! and the CUDA headers (CUDA_HOME, or the nvidia-cuda-nvrtc / nvidia-cuda-runtime wheels, which
//! `.ci/run` installs). Without them the test is skipped, unless `PAL_REQUIRE_NVRTC=1` (set by CI)
//! makes a missing toolkit a failure.

use pal_kernels::cuda::{compile_variant, toolkit, Variant};

#[test]
fn every_kernel_variant_compiles_for_hopper() {
    let tk = match toolkit() {
        Ok(tk) => tk,
        Err(e) => {
            assert!(std::env::var_os("PAL_REQUIRE_NVRTC").is_none(), "PAL_REQUIRE_NVRTC is set but {e}");
            eprintln!("skipped: {e}");
            return;
        }
    };
    eprintln!("NVRTC: {}", tk.nvrtc_lib.display());
    let dir = std::env::temp_dir().join(format!("pal-kernel-cache-test-{}", std::process::id()));
    std::env::set_var("PAL_KERNEL_CACHE", &dir);
    let variants = Variant::all();
    assert!(variants.len() >= 135);
    for v in &variants {
        let ptx = compile_variant(v, "compute_90a").unwrap_or_else(|e| panic!("{e}"));
        for e in v.family.entries() {
            assert!(ptx.contains(&format!(".entry {e}(")), "{v:?} lacks {e}");
        }
        assert!(ptx.contains(".target sm_90a"), "{v:?}");
    }
    // A second compile of the same variant comes from the disk cache.
    let t = std::time::Instant::now();
    compile_variant(&variants[0], "compute_90a").unwrap();
    assert!(t.elapsed().as_millis() < 1000);
    let _ = std::fs::remove_dir_all(dir);
}
