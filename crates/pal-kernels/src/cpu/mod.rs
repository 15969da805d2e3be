//! Optimized CPU kernels: rayon over work items from the host plan, f32 accumulation, inner loops
//! vectorised for AVX2/FMA when the CPU has them (detected at run time) and portable otherwise.

mod append;
mod attend;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2_tokens;
mod decode;
pub(crate) mod math;
mod prefill;

pub use append::append_kv;
pub use decode::paged_decode;
pub use prefill::paged_prefill;

/// Whether the AVX2 + FMA + F16C code path is used on this machine. Set `PAL_CPU_PORTABLE=1` to
/// force the portable path (for testing it on a machine that has AVX2).
pub fn uses_avx2() -> bool {
    static FLAG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FLAG.get_or_init(|| {
        if std::env::var_os("PAL_CPU_PORTABLE").is_some_and(|v| v != "0") {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// A pointer that rayon workers may share. Only for writes to regions the plan proves disjoint.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub *mut T);
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper, not the raw field).
    #[inline(always)]
    pub fn get(self) -> *mut T {
        self.0
    }
}

/// Compute-ceiling probe for benchmarks: `iters` rounds of 80 independent multiply-adds (10 chains
/// of 8 lanes), i.e. `160 * iters` FLOPs, on the fastest path this CPU has. Returns a value that
/// depends on every chain so the work cannot be optimised away.
pub fn fma_probe(iters: usize, seed: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn burn(iters: usize, seed: f32) -> f32 {
            avx2::fma_burn(iters, seed)
        }
        if uses_avx2() {
            // SAFETY: uses_avx2 checked AVX2 and FMA.
            return unsafe { burn(iters, seed) };
        }
    }
    let mut a = [[seed; 8]; 10];
    for _ in 0..iters {
        for chain in a.iter_mut() {
            for x in chain.iter_mut() {
                *x = *x * 0.999_999 + 1e-7;
            }
        }
    }
    a.iter().flatten().sum()
}
