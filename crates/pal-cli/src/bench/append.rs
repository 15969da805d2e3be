//! Append cell: `batch * new_tokens` tokens written into scattered slots, RoPE fused on q and k.

use super::timing::time_interleaved;
use super::{random_vec, row, Ceilings, Cell, Row};
use pal_core::{bf16, f16, DType, Element, KvLayout, PagedKvMut, PalError};
use pal_kernels::testing::Rng;
use pal_kernels::{cpu, AppendArgs, Rope, RopeConfig, RopeStyle};

pub fn run(c: &Cell, ceil: &Ceilings) -> Result<Vec<Row>, PalError> {
    match c.dtype {
        DType::F32 => typed::<f32>(c, ceil),
        DType::F16 => typed::<f16>(c, ceil),
        DType::BF16 => typed::<bf16>(c, ceil),
    }
}

fn typed<T: Element>(c: &Cell, ceil: &Ceilings) -> Result<Vec<Row>, PalError> {
    let t = c.batch * c.new_tokens;
    let (hq, hkv, d) = (c.hq, c.hkv, c.head_dim);
    // A pool twice the size needed, tokens scattered over it.
    let layout = KvLayout::new((2 * t).div_ceil(c.page), c.page, hkv, d)?;
    let mut pk: Vec<T> = pal_core::alloc::large_vec(layout.elems());
    let mut pv: Vec<T> = pal_core::alloc::large_vec(layout.elems());
    let mut slots: Vec<u32> = (0..layout.num_slots() as u32).collect();
    Rng::new(5).shuffle(&mut slots);
    let slots: Vec<Option<u32>> = slots[..t].iter().map(|&s| Some(s)).collect();
    let positions: Vec<u32> = (0..t).map(|i| (c.context - c.new_tokens + i % c.new_tokens) as u32).collect();
    let rope = Rope::new(RopeConfig::new(RopeStyle::HalfSplit, 500000.0), d, c.context)?;
    let mut q: Vec<T> = random_vec(t * hq * d, 1);
    let k: Vec<T> = random_vec(t * hkv * d, 2);
    let v: Vec<T> = random_vec(t * hkv * d, 3);
    let mut q2 = q.clone();
    let (mut pk2, mut pv2) = (pk.clone(), pv.clone());
    let times = time_interleaved(
        c.budget,
        &mut [
            &mut || {
                let args = AppendArgs {
                    q: &mut q,
                    num_qo_heads: hq,
                    k: &k,
                    v: &v,
                    positions: &positions,
                    slots: &slots,
                    rope: Some(&rope),
                };
                let mut cache = PagedKvMut::new(&mut pk, &mut pv, layout)?;
                cpu::append_kv(args, &mut cache)
            },
            &mut || {
                let args = AppendArgs {
                    q: &mut q2,
                    num_qo_heads: hq,
                    k: &k,
                    v: &v,
                    positions: &positions,
                    slots: &slots,
                    rope: None,
                };
                let mut cache = PagedKvMut::new(&mut pk2, &mut pv2, layout)?;
                cpu::append_kv(args, &mut cache)
            },
        ],
    )?;
    let mut rows = Vec::new();
    for ((name, with_rope), timing) in [("pal", true), ("pal-norope", false)].into_iter().zip(&times) {
        // Bytes moved: q read and written (only with RoPE), k and v read, k and v written.
        let q_bytes = if with_rope { 2 * t * hq * d } else { 0 };
        let bytes = (q_bytes + 4 * t * hkv * d) as f64 * c.dtype.size() as f64;
        let mut rw = row("append", name, c, timing, bytes);
        rw.ceiling = "copy_gbps";
        rw.ceiling_value = ceil.copy_gbps;
        rw.frac_of_ceiling = rw.gbps / ceil.copy_gbps;
        rows.push(rw);
    }
    Ok(rows)
}
