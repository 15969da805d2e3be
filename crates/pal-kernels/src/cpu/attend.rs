//! The shared CPU attention engine: a block of query rows (the GQA group of one or more query
//! tokens, all reading one KV head) scans a range of KV tokens tile by tile with online softmax.
//! Decode and prefill differ only in how many rows there are and where each row may look.

use super::math::{exp_shift_sum, pv_row, scores, Arith};
use pal_core::Element;

/// KV tokens per tile: enough to amortise the softmax bookkeeping, small enough for L1.
pub(crate) const TILE: usize = 32;

/// Where the K/V rows of one (sequence, KV head) live: `paged_len` tokens in pool pages, then
/// optionally further tokens in a contiguous ragged buffer.
pub(crate) struct KvRows<'a, KV> {
    pub k: &'a [KV],
    pub v: &'a [KV],
    pub pages: &'a [u32],
    pub block_size: usize,
    /// Elements between tokens (`num_kv_heads * head_dim`) and this head's offset in a token.
    pub token_stride: usize,
    pub head_off: usize,
    pub head_dim: usize,
    pub paged_len: usize,
    /// Ragged K/V after the paged tokens: `(k, v, first row)`; rows use `token_stride` too.
    pub tail: Option<(&'a [KV], &'a [KV], usize)>,
}

impl<KV: Element> KvRows<'_, KV> {
    /// Convert tokens `start..start+n` of K (`which_v == false`) or V into `dst` (`n * head_dim`).
    #[inline(always)]
    fn load(&self, which_v: bool, start: usize, n: usize, dst: &mut [f32]) {
        let d = self.head_dim;
        let pool = if which_v { self.v } else { self.k };
        let mut j = start;
        let mut t = 0;
        if j < self.paged_len {
            let mut page = j / self.block_size;
            let mut off = j % self.block_size;
            while t < n && j < self.paged_len {
                let slot = self.pages[page] as usize * self.block_size + off;
                let row = slot * self.token_stride + self.head_off;
                KV::load_row(&pool[row..row + d], &mut dst[t * d..(t + 1) * d]);
                off += 1;
                if off == self.block_size {
                    off = 0;
                    page += 1;
                }
                t += 1;
                j += 1;
            }
        }
        if t < n {
            let (tk, tv, first) = self.tail.expect("validated: tokens past the pages come from the ragged tail");
            let src = if which_v { tv } else { tk };
            while t < n {
                let row = (first + j - self.paged_len) * self.token_stride + self.head_off;
                KV::load_row(&src[row..row + d], &mut dst[t * d..(t + 1) * d]);
                t += 1;
                j += 1;
            }
        }
    }
}

/// Running softmax state of `rows` query rows plus tile scratch, reused across work items.
pub(crate) struct RowBlock {
    pub rows: usize,
    pub d: usize,
    /// Queries, pre-multiplied by the softmax scale, `[rows, d]`.
    pub q: Vec<f32>,
    /// Visible key range `[lo, hi)` of each row.
    pub lo: Vec<usize>,
    pub hi: Vec<usize>,
    m: Vec<f32>,
    l: Vec<f32>,
    acc: Vec<f32>,
    kt: Vec<f32>,
    vt: Vec<f32>,
    s: Vec<f32>,
}

impl RowBlock {
    pub fn new(max_rows: usize, d: usize) -> Self {
        RowBlock {
            rows: 0,
            d,
            q: vec![0.0; max_rows * d],
            lo: vec![0; max_rows],
            hi: vec![0; max_rows],
            m: vec![f32::NEG_INFINITY; max_rows],
            l: vec![0.0; max_rows],
            acc: vec![0.0; max_rows * d],
            kt: vec![0.0; TILE * d],
            vt: vec![0.0; TILE * d],
            s: vec![0.0; max_rows * TILE],
        }
    }

    /// Start a new item with `rows` rows; the caller then fills `q`, `lo`, `hi`.
    pub fn reset(&mut self, rows: usize) {
        self.rows = rows;
        self.m[..rows].fill(f32::NEG_INFINITY);
        self.l[..rows].fill(0.0);
        self.acc[..rows * self.d].fill(0.0);
    }

    /// Load query rows from storage, scaled.
    #[inline(always)]
    pub fn load_q<Q: Element>(&mut self, r: usize, src: &[Q], scale: f32) {
        let d = self.d;
        let dst = &mut self.q[r * d..(r + 1) * d];
        Q::load_row(src, dst);
        for x in dst.iter_mut() {
            *x *= scale;
        }
    }

    /// Attend every row to the KV tokens `start..end` it may see.
    #[inline(always)]
    pub fn scan<A: Arith, KV: Element>(&mut self, kv: &KvRows<'_, KV>, start: usize, end: usize, cap: Option<f32>) {
        let (rows, d) = (self.rows, self.d);
        let mut t0 = start;
        while t0 < end {
            let n = TILE.min(end - t0);
            kv.load(false, t0, n, &mut self.kt[..n * d]);
            scores::<A>(&self.q[..rows * d], rows, &self.kt[..n * d], n, d, &mut self.s, TILE);
            let mut any = false;
            for r in 0..rows {
                let s = &mut self.s[r * TILE..r * TILE + n];
                if let Some(c) = cap {
                    let inv = 1.0 / c;
                    for x in s.iter_mut() {
                        *x = c * (*x * inv).tanh();
                    }
                }
                // Mask keys outside [lo, hi) of this row.
                let (lo, hi) = (self.lo[r], self.hi[r]);
                if lo > t0 || hi < t0 + n {
                    for (t, x) in s.iter_mut().enumerate() {
                        let j = t0 + t;
                        if j < lo || j >= hi {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                }
                let mt = s.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                if mt == f32::NEG_INFINITY {
                    s.fill(0.0);
                    continue;
                }
                any = true;
                let m_new = self.m[r].max(mt);
                let sum = exp_shift_sum::<A>(s, m_new);
                if m_new > self.m[r] {
                    let alpha = super::math::exp_neg::<A>(self.m[r] - m_new);
                    self.l[r] *= alpha;
                    for x in &mut self.acc[r * d..(r + 1) * d] {
                        *x *= alpha;
                    }
                    self.m[r] = m_new;
                }
                self.l[r] += sum;
            }
            if any {
                kv.load(true, t0, n, &mut self.vt[..n * d]);
                for r in 0..rows {
                    pv_row::<A>(&mut self.acc[r * d..(r + 1) * d], &self.s[r * TILE..r * TILE + n], &self.vt[..n * d], d);
                }
            }
            t0 += n;
        }
    }

    /// Normalised output of row `r` into `out` (`d` values) and its log-sum-exp (natural log).
    #[inline(always)]
    pub fn finish_row(&self, r: usize, out: &mut [f32]) -> f32 {
        let d = self.d;
        let l = self.l[r];
        if l == 0.0 {
            out.fill(0.0);
            return f32::NEG_INFINITY;
        }
        let inv = 1.0 / l;
        for (o, a) in out.iter_mut().zip(&self.acc[r * d..(r + 1) * d]) {
            *o = a * inv;
        }
        self.m[r] + l.ln()
    }
}
