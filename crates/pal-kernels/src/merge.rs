//! Merging partial attention states `(o, lse)`: the one algebraic step behind split-KV decode,
//! chunked prefill and shared-prefix (cascade) attention.

use pal_core::{check_len, PalError, Result};

/// Merge partial states into `out` (normalised) and return the merged log-sum-exp (natural log).
/// States with `lse = -inf` (no key seen) contribute nothing.
#[inline]
pub(crate) fn merge_rows<'a>(parts: impl Iterator<Item = (&'a [f32], f32)> + Clone, out: &mut [f32]) -> f32 {
    let m = parts.clone().fold(f32::NEG_INFINITY, |a, (_, l)| a.max(l));
    out.fill(0.0);
    if m == f32::NEG_INFINITY {
        return m;
    }
    let mut total = 0.0f32;
    for (o, l) in parts {
        let w = (l - m).exp();
        if w == 0.0 {
            continue;
        }
        total += w;
        for (x, y) in out.iter_mut().zip(o) {
            *x += w * y;
        }
    }
    let inv = 1.0 / total;
    for x in out.iter_mut() {
        *x *= inv;
    }
    m + total.ln()
}

/// Merge `num_states` partial states of the same rows.
///
/// `v`: `[num_states, rows, head_dim]` normalised partial outputs; `lse`: `[num_states, rows]`
/// natural-log log-sum-exp of each; `out`: `[rows, head_dim]`; `out_lse`: `[rows]`.
pub fn merge_states(
    v: &[f32],
    lse: &[f32],
    num_states: usize,
    head_dim: usize,
    out: &mut [f32],
    out_lse: &mut [f32],
) -> Result<()> {
    if num_states == 0 {
        return Err(PalError::EmptyBatch { arg: "num_states", reason: "nothing to merge".into() });
    }
    if head_dim == 0 {
        return Err(PalError::invalid("head_dim", "must be at least 1"));
    }
    let rows = out_lse.len();
    check_len("out", out.len(), rows * head_dim, || format!("[rows={rows}, head_dim={head_dim}]"))?;
    check_len("lse", lse.len(), num_states * rows, || format!("[num_states={num_states}, rows={rows}]"))?;
    check_len("v", v.len(), num_states * rows * head_dim, || {
        format!("[num_states={num_states}, rows={rows}, head_dim={head_dim}]")
    })?;
    for r in 0..rows {
        let parts = (0..num_states).map(|s| {
            let off = (s * rows + r) * head_dim;
            (&v[off..off + head_dim], lse[s * rows + r])
        });
        out_lse[r] = merge_rows(parts, &mut out[r * head_dim..(r + 1) * head_dim]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_two_halves_equals_the_whole() {
        // Scores of 4 keys, values 1-d: split {0,1} and {2,3}.
        let s = [0.5f32, -1.0, 2.0, 0.25];
        let v = [1.0f32, 2.0, 3.0, 4.0];
        let part = |r: std::ops::Range<usize>| {
            let m = s[r.clone()].iter().cloned().fold(f32::MIN, f32::max);
            let w: Vec<f32> = s[r.clone()].iter().map(|x| (x - m).exp()).collect();
            let l: f32 = w.iter().sum();
            let o: f32 = w.iter().zip(&v[r]).map(|(a, b)| a * b).sum::<f32>() / l;
            (o, m + l.ln())
        };
        let (a, b) = (part(0..2), part(2..4));
        let whole = part(0..4);
        let mut out = [0.0];
        let mut lse = [0.0];
        merge_states(&[a.0, b.0], &[a.1, b.1], 2, 1, &mut out, &mut lse).unwrap();
        assert!((out[0] - whole.0).abs() < 1e-6 && (lse[0] - whole.1).abs() < 1e-6);
        assert_eq!(merge_states(&[a.0], &[a.1], 2, 1, &mut out, &mut lse).unwrap_err().arg(), Some("lse"));
    }
}
