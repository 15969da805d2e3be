//! The shared CPU attention engine. A work item holds query rows for `heads` consecutive KV heads
//! (`rows_per_head` rows each: the GQA group of one or more query tokens) and scans a range of KV
//! tokens tile by tile with online softmax. Each tile is loaded for all the item's heads in memory
//! order (whole token rows), so the pool is streamed sequentially. Decode and prefill differ only
//! in how rows are laid out and where each row may look.

use super::math::Isa;
use pal_core::Element;

/// Where the K/V rows of one sequence live: `paged_len` tokens in pool pages, then optionally
/// further tokens in a contiguous ragged buffer.
pub(crate) struct KvRows<'a, KV> {
    pub k: &'a [KV],
    pub v: &'a [KV],
    pub pages: &'a [u32],
    pub block_size: usize,
    /// Elements between tokens (`num_kv_heads * head_dim`).
    pub token_stride: usize,
    /// Offset of the item's first KV head within a token (`first_head * head_dim`).
    pub head_off: usize,
    pub head_dim: usize,
    pub paged_len: usize,
    /// Ragged K/V after the paged tokens: `(k, v, first row)`; rows use `token_stride` too.
    pub tail: Option<(&'a [KV], &'a [KV], usize)>,
}

impl<KV: Element> KvRows<'_, KV> {
    /// Convert tokens `start..start+n` of K (`which_v == false`) or V for `heads` heads into
    /// `dst`, laid out `[head][tile][head_dim]` with `tile` rows per head.
    #[inline(always)]
    fn load(&self, which_v: bool, start: usize, n: usize, heads: usize, tile: usize, dst: &mut [f32]) {
        let d = self.head_dim;
        let width = heads * d;
        let mut put = |t: usize, src: &[KV]| {
            for h in 0..heads {
                KV::load_row(&src[h * d..(h + 1) * d], &mut dst[(h * tile + t) * d..(h * tile + t + 1) * d]);
            }
        };
        let pool = if which_v { self.v } else { self.k };
        let mut j = start;
        let mut t = 0;
        if j < self.paged_len {
            let mut page = j / self.block_size;
            let mut off = j % self.block_size;
            while t < n && j < self.paged_len {
                let slot = self.pages[page] as usize * self.block_size + off;
                let row = slot * self.token_stride + self.head_off;
                put(t, &pool[row..row + width]);
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
                put(t, &src[row..row + width]);
                t += 1;
                j += 1;
            }
        }
    }
}

/// Running softmax state of an item's rows plus tile scratch; reused across work items.
pub(crate) struct RowBlock {
    pub d: usize,
    heads: usize,
    rows_per_head: usize,
    tile: usize,
    /// Queries, pre-multiplied by the softmax scale, `[heads * rows_per_head, d]`.
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
    /// Scratch for up to `max_heads` heads of up to `max_rows_per_head` rows.
    pub fn new(max_heads: usize, max_rows_per_head: usize, d: usize) -> Self {
        // Tokens per tile: ~64 KiB of f32 K per tile, between 8 and 32 tokens.
        let tile = (16384 / (max_heads * d).max(1)).clamp(8, 32);
        let rows = max_heads * max_rows_per_head;
        RowBlock {
            d,
            heads: 0,
            rows_per_head: 0,
            tile,
            q: vec![0.0; rows * d],
            lo: vec![0; rows],
            hi: vec![0; rows],
            m: vec![f32::NEG_INFINITY; rows],
            l: vec![0.0; rows],
            acc: vec![0.0; rows * d],
            kt: vec![0.0; max_heads * tile * d],
            vt: vec![0.0; max_heads * tile * d],
            s: vec![0.0; rows * tile],
        }
    }

    /// Start a new item; the caller then fills `q`, `lo`, `hi` for `heads * rows_per_head` rows
    /// (row `h * rows_per_head + i` belongs to the item's head `h`).
    pub fn reset(&mut self, heads: usize, rows_per_head: usize) {
        self.heads = heads;
        self.rows_per_head = rows_per_head;
        let rows = heads * rows_per_head;
        self.m[..rows].fill(f32::NEG_INFINITY);
        self.l[..rows].fill(0.0);
        self.acc[..rows * self.d].fill(0.0);
    }

    /// Load query row `r` from storage, scaled.
    #[inline(always)]
    pub fn load_q<Q: Element>(&mut self, r: usize, src: &[Q], scale: f32) {
        let d = self.d;
        let dst = &mut self.q[r * d..(r + 1) * d];
        Q::load_row(src, dst);
        for x in dst.iter_mut() {
            *x *= scale;
        }
    }

    /// Attend every row to the KV tokens in `start..end` that it may see.
    #[inline(always)]
    pub fn scan<I: Isa, KV: Element>(&mut self, isa: I, kv: &KvRows<'_, KV>, start: usize, end: usize, cap: Option<f32>) {
        let (heads, rph, d, tile) = (self.heads, self.rows_per_head, self.d, self.tile);
        let rows = heads * rph;
        let mut t0 = start;
        while t0 < end {
            let n = tile.min(end - t0);
            kv.load(false, t0, n, heads, tile, &mut self.kt);
            for h in 0..heads {
                isa.scores(&self.q[h * rph * d..], rph, &self.kt[h * tile * d..], n, d, &mut self.s[h * rph * tile..], tile);
            }
            let mut any = false;
            for r in 0..rows {
                let s = &mut self.s[r * tile..r * tile + n];
                if let Some(c) = cap {
                    let inv = 1.0 / c;
                    for x in s.iter_mut() {
                        *x = c * (*x * inv).tanh();
                    }
                }
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
                let sum = isa.exp_shift_sum(s, m_new);
                if m_new > self.m[r] {
                    let alpha = isa.exp1(self.m[r] - m_new);
                    self.l[r] *= alpha;
                    for x in &mut self.acc[r * d..(r + 1) * d] {
                        *x *= alpha;
                    }
                    self.m[r] = m_new;
                }
                self.l[r] += sum;
            }
            if any {
                kv.load(true, t0, n, heads, tile, &mut self.vt);
                for h in 0..heads {
                    isa.pv(&mut self.acc[h * rph * d..], rph, &self.s[h * rph * tile..], tile, n, &self.vt[h * tile * d..], d);
                }
            }
            t0 += n;
        }
    }

    /// Normalised output of row `r` into `out` (`d` values); returns its natural log-sum-exp.
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
