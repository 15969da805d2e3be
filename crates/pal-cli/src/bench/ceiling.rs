//! Machine ceilings measured in the same run as the kernels: memory read bandwidth (decode),
//! copy bandwidth (append) and f32 FMA throughput (prefill), each over all worker threads.

use super::timing::time_it;
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

const BUDGET: Duration = Duration::from_millis(600);

/// A streaming read over all worker threads: a parallel sum of a buffer far beyond the
/// last-level cache. Huge-page backed like the benchmark pools ([`pal_core::alloc::large_vec`]):
/// with 4 KiB pages the same sum reads ~10% slower on the dev VM, which would flatter every
/// fraction of it.
pub struct ReadProbe {
    buf: Vec<u64>,
}

impl ReadProbe {
    pub fn new(mib: usize) -> Self {
        let mut buf = pal_core::alloc::large_vec::<u64>(mib << 17);
        buf.par_chunks_mut(1 << 16)
            .enumerate()
            .for_each(|(i, c)| c.iter_mut().enumerate().for_each(|(j, x)| *x = (i ^ j) as u64));
        ReadProbe { buf }
    }

    pub fn bytes(&self) -> f64 {
        (self.buf.len() * 8) as f64
    }

    /// One pass over the buffer.
    pub fn run(&self) {
        let s: u64 = self.buf.par_chunks(1 << 16).map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x))).sum();
        black_box(s);
    }

    /// GB/s of repeated passes (median).
    pub fn gbps(&self) -> f64 {
        let t = time_it(BUDGET, || self.run());
        self.bytes() / t.median_ms / 1e6
    }
}

/// GB/s of a parallel copy, counting bytes read plus bytes written.
pub fn copy_bandwidth(mib: usize) -> f64 {
    let n = mib << 17;
    let src: Vec<u64> = (0..n as u64).collect();
    let mut dst = vec![0u64; n];
    let t = time_it(BUDGET, || {
        dst.par_chunks_mut(1 << 16).zip(src.par_chunks(1 << 16)).for_each(|(d, s)| d.copy_from_slice(s));
        black_box(&dst);
    });
    (2 * n * 8) as f64 / t.median_ms / 1e6
}

/// GFLOP/s of f32 multiply-adds held in registers, over all threads (the prefill compute ceiling).
pub fn fma_peak() -> f64 {
    let threads = rayon::current_num_threads();
    let iters = 1_000_000;
    let t = time_it(BUDGET, || {
        let s: f32 =
            (0..threads).into_par_iter().map(|i| pal_kernels::cpu::fma_probe(iters, black_box(i as f32))).sum();
        black_box(s);
    });
    (threads * iters * 160) as f64 / t.median_ms / 1e6
}
