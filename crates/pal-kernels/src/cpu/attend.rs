//! The shared CPU attention engine. A work item holds query rows for `heads` consecutive KV heads
//! (`rows_per_head` rows each: the GQA group of one or more query tokens) and scans a range of KV
//! tokens tile by tile with online softmax, reading K/V straight from the pool's storage type (no
//! f32 copy). Decode and prefill differ only in how rows are laid out and where each row may look.
//!
//! Two orders within a tile:
//! - **Token-major** (items of at most 4 rows per head, i.e. decode): keys outermost and every
//!   KV head of the item inside (`Isa::scores_heads` / `Isa::pv_heads`), so K and V are read in
//!   the pool's own order (a token's heads, then the next token, a page at a time), with software
//!   prefetch [`LEAD`] tokens ahead that runs on from K into V and from V into the next tile. One
//!   core of the 2-vCPU Zen 3 dev VM reads 24 GB/s sequentially but 14 GB/s in the head-by-head
//!   pattern below; decode B=8 L=4k went 18.8 -> 22 GB/s (2 threads).
//! - **Head-major** (prefill tiles, whose many rows per head reuse each K/V row): a pass per head
//!   (K of head 0, 1, ..., then V of head 0, 1, ...), each prefetching the next pass's rows into
//!   L1, spread over its keys (a whole tile ahead overflows L1 before its rows are used).

use super::math::{Ahead, Isa};
use pal_core::{Element, PageTable, PagedKv};

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
    pub paged_len: usize,
    /// Ragged K/V after the paged tokens: `(k, v, first row)`; rows use `token_stride` too.
    pub tail: Option<(&'a [KV], &'a [KV], usize)>,
}

impl<'a, KV: Element> KvRows<'a, KV> {
    /// Sequence `b` of `table` in the pool `kv`, from `head_off` elements into each token (the
    /// item's first KV head), then the ragged `tail` if any.
    pub fn of_sequence(
        kv: &PagedKv<'a, KV>,
        table: &'a PageTable,
        b: usize,
        head_off: usize,
        tail: Option<(&'a [KV], &'a [KV], usize)>,
    ) -> Self {
        KvRows {
            k: kv.k,
            v: kv.v,
            pages: table.pages(b),
            block_size: kv.layout.block_size,
            token_stride: kv.layout.token_stride(),
            head_off,
            paged_len: table.seq_len(b),
            tail,
        }
    }

    /// Element offsets of the rows of tokens `start..` (for the item's first head) into `offs`,
    /// stopping at `offs.len()` tokens or where the source changes from the pool to the ragged
    /// tail. Returns the K and V buffers the offsets index and the number of tokens.
    #[inline(always)]
    fn rows(&self, start: usize, offs: &mut [usize]) -> (&'a [KV], &'a [KV], usize) {
        if start < self.paged_len {
            let n = offs.len().min(self.paged_len - start);
            let mut page = start / self.block_size;
            let mut off = start % self.block_size;
            for o in &mut offs[..n] {
                *o = (self.pages[page] as usize * self.block_size + off) * self.token_stride + self.head_off;
                off += 1;
                if off == self.block_size {
                    off = 0;
                    page += 1;
                }
            }
            (self.k, self.v, n)
        } else {
            let (tk, tv, first) = self.tail.expect("validated: tokens past the pages come from the ragged tail");
            let row0 = first + start - self.paged_len;
            for (i, o) in offs.iter_mut().enumerate() {
                *o = (row0 + i) * self.token_stride + self.head_off;
            }
            (tk, tv, offs.len())
        }
    }
}

/// Keys per tile: the bookkeeping of a tile (its softmax rows, page lookups) is amortised over
/// 64 keys. With the token-major loops 64 beat 32 by 1-4% in decode and 4-5% in prefill on the
/// dev VM (before those loops 32 was best).
const TILE: usize = 64;

/// Tokens the token-major loops prefetch ahead of the key they process (24 KiB for a Llama
/// item). On the dev VM 10-24 tie, 8 is 5% slower, 4 slower still; without any software prefetch
/// decode drops by a quarter: the hardware prefetchers alone do not keep up with the jumps
/// between pages.
const LEAD: usize = 12;

/// Most query-row bytes (f32) one token-major sweep keeps hot: its heads' q rows, or their
/// accumulators, share L1 with the K/V stream (16 KiB: 8 heads x 4 rows x 128 dims; sweeping
/// all 8 heads of a Llama item beat two sweeps of 4 by 5% on the dev VM).
const SWEEP_BYTES: usize = 16 << 10;

/// Running softmax state of an item's rows plus tile scratch; reused across work items.
pub(crate) struct RowBlock {
    pub d: usize,
    heads: usize,
    rows_per_head: usize,
    /// Queries, pre-multiplied by the softmax scale, `[heads * rows_per_head, d]`.
    pub q: Aligned,
    /// Visible key range `[lo, hi)` of each row.
    pub lo: Vec<usize>,
    pub hi: Vec<usize>,
    m: Vec<f32>,
    l: Vec<f32>,
    acc: Aligned,
    offs: Vec<usize>,
    next_offs: Vec<usize>,
    s: Aligned,
    /// Caller's scratch: normalised output rows (`rows * d`) and their log-sum-exps (`rows`).
    pub out_rows: Vec<f32>,
    pub lse_rows: Vec<f32>,
}

/// An f32 buffer on 64-byte boundaries (a cache line): the inner loops load 32-byte vectors of
/// q, the accumulators and the scores, and at malloc's 16-byte alignment every other one of
/// them would straddle two cache lines. Alone it measured within noise in `decode_profile`
/// (where the heap happened to place the buffers well); the eighth session's `pal bench decode`
/// A/B, B=8 L=4k: 6.36-6.41 ms with it, 6.78 without.
pub(crate) struct Aligned(Vec<Line>);

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

impl Aligned {
    fn zeros(n: usize) -> Self {
        Aligned(vec![Line([0.0; 16]); n.div_ceil(16)])
    }
}

impl std::ops::Deref for Aligned {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: `Line` is 16 f32 with no padding (repr C, 64 bytes), so the lines form one
        // initialised f32 array of `16 * len` elements.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr() as *const f32, self.0.len() * 16) }
    }
}

impl std::ops::DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`, with the unique borrow of the lines.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut f32, self.0.len() * 16) }
    }
}

thread_local! {
    /// Each worker thread's last [`RowBlock`], reused by the next call whose rows fit it.
    static CACHED: std::cell::RefCell<Option<RowBlock>> = const { std::cell::RefCell::new(None) };
}

impl RowBlock {
    /// Runs `f` with this thread's cached scratch when it fits `max_heads` heads of
    /// `max_rows_per_head` rows of `d` (a new one otherwise), then keeps it for the next call.
    /// A rayon `for_each_init` made a new block per split instead: at SmolLM2's batch-16 decode
    /// (16 items of 9 rows) its allocations and zeroing were ~6% of the call.
    pub fn with_cached<R>(max_heads: usize, max_rows_per_head: usize, d: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        let rows = max_heads * max_rows_per_head;
        let mut blk = CACHED
            .with_borrow_mut(Option::take)
            .filter(|b| b.d == d && b.lo.len() >= rows)
            .unwrap_or_else(|| RowBlock::new(max_heads, max_rows_per_head, d));
        let r = f(&mut blk);
        CACHED.with_borrow_mut(|c| *c = Some(blk));
        r
    }

    /// Scratch for up to `max_heads` heads of up to `max_rows_per_head` rows.
    pub fn new(max_heads: usize, max_rows_per_head: usize, d: usize) -> Self {
        let rows = max_heads * max_rows_per_head;
        RowBlock {
            d,
            heads: 0,
            rows_per_head: 0,
            q: Aligned::zeros(rows * d),
            lo: vec![0; rows],
            hi: vec![0; rows],
            m: vec![f32::NEG_INFINITY; rows],
            l: vec![0.0; rows],
            acc: Aligned::zeros(rows * d),
            offs: vec![0; TILE],
            next_offs: vec![0; TILE],
            s: Aligned::zeros(rows * TILE),
            out_rows: vec![0.0; rows * d],
            lse_rows: vec![0.0; rows],
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
    pub fn scan<I: Isa, KV: Element>(
        &mut self,
        isa: I,
        kv: &KvRows<'_, KV>,
        start: usize,
        end: usize,
        cap: Option<f32>,
    ) {
        let (heads, rph, d, tile) = (self.heads, self.rows_per_head, self.d, TILE);
        let rows = heads * rph;
        // Layout trick of the AVX2 bf16 loops: q and acc in swapped-quads order during the scan.
        #[cfg(target_arch = "x86_64")]
        let swap = isa.swaps_quads::<KV>(d);
        #[cfg(target_arch = "x86_64")]
        if swap {
            for row in self.q[..rows * d].chunks_exact_mut(d) {
                super::avx2::swap_quads(row);
            }
        }
        // Head-major: each pass over the tile (K of head 0, 1, ..., then V of head 0, 1, ...)
        // prefetches the rows of the pass after it; V's last pass the next tile's first K rows.
        let row_bytes = d * std::mem::size_of::<KV>();
        let mut ahead = [std::ptr::null::<u8>(); TILE];
        let fill = |ahead: &mut [*const u8; TILE], buf: &[KV], offs: &[usize], hoff: usize| {
            for (a, &o) in ahead.iter_mut().zip(offs) {
                *a = buf[o + hoff..].as_ptr() as *const u8;
            }
            offs.len()
        };
        // Decode-like items scan token-major, in `groups` sweeps of `per` heads.
        let token_major = rph <= 4 && heads > 1;
        let groups = heads.div_ceil((SWEEP_BYTES / (rph * d * 4)).max(1));
        let per = heads.div_ceil(groups.max(1));
        let mut t0 = start;
        let mut next = kv.rows(t0, &mut self.next_offs[..tile.min(end - t0)]);
        while t0 < end {
            std::mem::swap(&mut self.offs, &mut self.next_offs);
            let (ks, vs, n) = next;
            let t1 = t0 + n;
            if t1 < end {
                next = kv.rows(t1, &mut self.next_offs[..tile.min(end - t1)]);
            }
            let offs = &self.offs[..n];
            // Token-major sweeps over `per` heads at a time (K of each head group, then V of each):
            // each prefetches the rows LEAD tokens on, running on into the next sweep (the last V
            // sweep into the next tile's first K sweep).
            let lead = |ahead: &mut [*const u8; TILE],
                        (a, a_offs, a_off): (&[KV], &[usize], usize),
                        (b, b_offs, b_off): (&[KV], &[usize], usize)| {
                // Two branch-free runs (rows of `a`, then of `b`); the pointers are only
                // prefetched, so `wrapping_add` (no bounds check) is enough.
                let in_a = n.min(a_offs.len().saturating_sub(LEAD));
                for (x, &o) in ahead[..in_a].iter_mut().zip(&a_offs[LEAD.min(a_offs.len())..]) {
                    *x = a.as_ptr().wrapping_add(o + a_off) as *const u8;
                }
                let skip = (in_a + LEAD).saturating_sub(a_offs.len());
                let in_b = (n - in_a).min(b_offs.len().saturating_sub(skip));
                for (x, &o) in ahead[in_a..in_a + in_b].iter_mut().zip(&b_offs[skip.min(b_offs.len())..]) {
                    *x = b.as_ptr().wrapping_add(o + b_off) as *const u8;
                }
                in_a + in_b
            };
            if token_major {
                for g in 0..groups {
                    let (h0, nh) = (g * per, per.min(heads - g * per));
                    let after = if g + 1 < groups { (ks, offs, (h0 + nh) * d) } else { (vs, offs, 0) };
                    let m = lead(&mut ahead, (ks, offs, h0 * d), after);
                    let pf = Ahead { rows: &ahead[..m], bytes: nh * row_bytes };
                    let (q, s) = (&self.q[h0 * rph * d..], &mut self.s[h0 * rph * tile..]);
                    isa.scores_heads(q, nh, rph, ks, offs, h0 * d, d, s, tile, pf);
                }
            }
            for h in (0..heads).filter(|_| !token_major) {
                let m =
                    if h + 1 < heads { fill(&mut ahead, ks, offs, (h + 1) * d) } else { fill(&mut ahead, vs, offs, 0) };
                let pf = Ahead { rows: &ahead[..m], bytes: row_bytes };
                isa.scores(&self.q[h * rph * d..], rph, ks, offs, h * d, d, &mut self.s[h * rph * tile..], tile, pf);
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
                let mt = super::math::max_of(s);
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
            if any && token_major {
                let nx: &[usize] = if t1 < end { &self.next_offs[..next.2] } else { &[] };
                for g in 0..groups {
                    let (h0, nh) = (g * per, per.min(heads - g * per));
                    let after = if g + 1 < groups { (vs, offs, (h0 + nh) * d) } else { (next.0, nx, 0) };
                    let m = lead(&mut ahead, (vs, offs, h0 * d), after);
                    let pf = Ahead { rows: &ahead[..m], bytes: nh * row_bytes };
                    let (acc, p) = (&mut self.acc[h0 * rph * d..], &self.s[h0 * rph * tile..]);
                    isa.pv_heads(acc, nh, rph, p, tile, vs, offs, h0 * d, d, pf);
                }
            } else if any {
                for h in 0..heads {
                    let m = if h + 1 < heads {
                        fill(&mut ahead, vs, offs, (h + 1) * d)
                    } else if t1 < end {
                        fill(&mut ahead, next.0, &self.next_offs[..next.2], 0)
                    } else {
                        0
                    };
                    let pf = Ahead { rows: &ahead[..m], bytes: row_bytes };
                    isa.pv(&mut self.acc[h * rph * d..], rph, &self.s[h * rph * tile..], tile, vs, offs, h * d, d, pf);
                }
            }
            t0 = t1;
        }
        #[cfg(target_arch = "x86_64")]
        if swap {
            for row in self.acc[..rows * d].chunks_exact_mut(d) {
                super::avx2::swap_quads(row);
            }
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
