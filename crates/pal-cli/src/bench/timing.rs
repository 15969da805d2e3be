//! Wall-clock timing: warm up, then repeat until a time budget or an iteration cap; report the
//! median (robust to the occasional preemption on a shared machine). Kernels compared with each
//! other are timed interleaved, round by round, so that a slow phase of the machine hits them all.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub median_ms: f64,
    pub min_ms: f64,
    pub iters: usize,
}

pub fn time_it(budget: Duration, mut f: impl FnMut()) -> Timing {
    f();
    f();
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 5 || (start.elapsed() < budget && samples.len() < 200) {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    Timing { median_ms: samples[samples.len() / 2], min_ms: samples[0], iters: samples.len() }
}

/// A kernel call under test; an error stops the measurement and is reported.
pub type Call<'a> = &'a mut dyn FnMut() -> Result<(), pal_core::PalError>;

/// Time several kernels in interleaved rounds (`fs[0]`, `fs[1]`, ... then again) for `budget`
/// in total; one [`Timing`] per kernel.
pub fn time_interleaved(budget: Duration, fs: &mut [Call<'_>]) -> Result<Vec<Timing>, pal_core::PalError> {
    for f in fs.iter_mut() {
        f()?;
        f()?;
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); fs.len()];
    let start = Instant::now();
    while samples[0].len() < 5 || (start.elapsed() < budget * fs.len() as u32 && samples[0].len() < 200) {
        for (f, s) in fs.iter_mut().zip(samples.iter_mut()) {
            let t = Instant::now();
            f()?;
            s.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(|a, b| a.total_cmp(b));
            Timing { median_ms: s[s.len() / 2], min_ms: s[0], iters: s.len() }
        })
        .collect())
}
