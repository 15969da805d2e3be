//! Decode cell: one query token per sequence over `context` cached tokens.

use super::timing::time_interleaved;
use super::{add_ratios, fragmented_lists, random_vec, row, Ceilings, Cell, Row};
use pal_core::{bf16, f16, AttentionOptions, DType, Element, KvLayout, PageTable, PagedKv, PalError};
use pal_kernels::gather::{dense_decode, Contiguous};
use pal_kernels::{cpu, DecodeArgs, DecodePlan};

pub fn run(c: &Cell, ceil: &Ceilings) -> Result<Vec<Row>, PalError> {
    match c.dtype {
        DType::F32 => typed::<f32>(c, ceil),
        DType::F16 => typed::<f16>(c, ceil),
        DType::BF16 => typed::<bf16>(c, ceil),
    }
}

fn typed<T: Element>(c: &Cell, ceil: &Ceilings) -> Result<Vec<Row>, PalError> {
    let pages = c.context.div_ceil(c.page);
    let layout = KvLayout::new(c.batch * pages, c.page, c.hkv, c.head_dim)?;
    let k: Vec<T> = random_vec(layout.elems(), 1);
    let v: Vec<T> = random_vec(layout.elems(), 2);
    let table = PageTable::from_lists(&fragmented_lists(c.batch, pages, 3), &vec![c.context; c.batch], c.page)?;
    let q: Vec<T> = random_vec(c.batch * c.hq * c.head_dim, 4);
    let opts = AttentionOptions::default();
    let a = DecodeArgs { q: &q, num_qo_heads: c.hq, kv: PagedKv::new(&k, &v, layout)?, page_table: &table, opts };
    let plan = DecodePlan::new(&table, c.hkv, &opts, rayon::current_num_threads());
    let mut out = vec![T::default(); q.len()];
    let mut dense_out = vec![T::default(); q.len()];

    let mut cont = Contiguous::<T>::for_table(&table, c.hkv, c.head_dim)?;
    cont.gather_from(&a.kv, &table);
    let mut gather_out = vec![T::default(); q.len()];
    let mut gather_cont = Contiguous::<T>::for_table(&table, c.hkv, c.head_dim)?;
    let times = time_interleaved(
        c.budget,
        &mut [
            &mut || cpu::paged_decode(&a, &plan, &mut out),
            &mut || {
                gather_cont.gather_from(&a.kv, &table);
                dense_decode(&a, &gather_cont, &mut gather_out)
            },
            &mut || dense_decode(&a, &cont, &mut dense_out),
        ],
    )?;
    let (pal, gather, dense) = (times[0], times[1], times[2]);
    if out
        .iter()
        .zip(&dense_out)
        .chain(out.iter().zip(&gather_out))
        .any(|(x, y)| (x.to_f32() - y.to_f32()).abs() > 1e-2)
    {
        return Err(PalError::invalid("bench", "paged and dense outputs disagree; run `pal selftest`"));
    }
    // Bytes a decode step must move: all K and V once, plus q in and out.
    let bytes = (2 * c.batch * c.context * c.hkv * c.head_dim + 2 * q.len()) as f64 * c.dtype.size() as f64;
    let mut rows = vec![
        row("decode", "pal", c, &pal, bytes),
        row("decode", "gather", c, &gather, bytes),
        row("decode", "dense", c, &dense, bytes),
    ];
    for r in &mut rows {
        r.ceiling = "read_gbps";
        r.ceiling_value = ceil.read_gbps;
        r.frac_of_ceiling = r.gbps / ceil.read_gbps;
    }
    add_ratios(&mut rows);
    Ok(rows)
}
