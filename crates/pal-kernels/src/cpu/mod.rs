//! Optimized CPU kernels: rayon over work items from the host plan, f32 accumulation, inner loops
//! vectorised for AVX2/FMA when the CPU has them (detected at run time) and portable otherwise.

mod append;
mod attend;
mod decode;
mod math;
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
