//! Allocation of large buffers (KV pools) backed by transparent huge pages where the OS allows.
//!
//! A paged KV cache is read in scattered blocks, so with 4 KiB pages nearly every block costs a TLB
//! miss; 2 MiB pages remove most of them. On Linux the buffer is `madvise(MADV_HUGEPAGE)`d before
//! its first touch; elsewhere (or when the kernel says no) it is an ordinary `Vec`.

/// A zero-initialised (`T::default()`) vector of `n` elements, huge-page backed when possible.
pub fn large_vec<T: Copy + Default>(n: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    advise_huge(v.as_mut_ptr() as *mut u8, n * std::mem::size_of::<T>());
    v.resize(n, T::default());
    v
}

#[cfg(target_os = "linux")]
fn advise_huge(ptr: *mut u8, bytes: usize) {
    const HUGE: usize = 2 << 20;
    if bytes < 2 * HUGE {
        return;
    }
    // Only whole 2 MiB-aligned stretches inside the allocation can become huge pages.
    let start = (ptr as usize).div_ceil(HUGE) * HUGE;
    let end = (ptr as usize + bytes) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside an allocation we own; MADV_HUGEPAGE only changes how the
        // kernel backs it and cannot invalidate memory. A failure just means no huge pages.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_ptr: *mut u8, _bytes: usize) {}

#[cfg(test)]
mod tests {
    #[test]
    fn large_vec_is_zeroed_and_sized() {
        let v = super::large_vec::<u16>(3 << 20);
        assert_eq!(v.len(), 3 << 20);
        assert!(v.iter().all(|&x| x == 0));
    }
}
