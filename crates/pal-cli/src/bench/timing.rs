//! Wall-clock timing: warm up, then repeat until a time budget or an iteration cap; report the
//! median (robust to the occasional preemption on a shared machine).

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
