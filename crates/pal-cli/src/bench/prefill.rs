//! Prefill cell: `new_tokens` new queries per sequence attending causally to `context - new_tokens`
//! cached tokens plus themselves.

use super::timing::time_interleaved;
use super::{add_ratios, fragmented_lists, random_vec, row, Ceilings, Cell, Row};
use pal_core::{bf16, f16, AttentionOptions, DType, Element, KvLayout, PageTable, PagedKv, PalError};
use pal_kernels::gather::{dense_prefill, Contiguous};
use pal_kernels::{cpu, PrefillArgs, PrefillPlan};

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
    let n = c.new_tokens;
    let qo: Vec<u32> = (0..=c.batch).map(|b| (b * n) as u32).collect();
    let q: Vec<T> = random_vec(c.batch * n * c.hq * c.head_dim, 4);
    let a = PrefillArgs {
        q: &q,
        qo_indptr: &qo,
        num_qo_heads: c.hq,
        kv: PagedKv::new(&k, &v, layout)?,
        page_table: &table,
        new_kv: None,
        opts: AttentionOptions::default(),
    };
    let plan = PrefillPlan::new(&qo, &table, c.hq / c.hkv);
    let mut out = vec![T::default(); q.len()];
    let mut dense_out = vec![T::default(); q.len()];
    let mut cont = Contiguous::<T>::for_table(&table, c.hkv, c.head_dim)?;
    cont.gather_from(&a.kv, &table);
    let mut gather_out = vec![T::default(); q.len()];
    let mut gather_cont = Contiguous::<T>::for_table(&table, c.hkv, c.head_dim)?;
    let times = time_interleaved(
        c.budget,
        &mut [
            &mut || cpu::paged_prefill(&a, &plan, &mut out),
            &mut || {
                gather_cont.gather_from(&a.kv, &table);
                dense_prefill(&a, &gather_cont, &mut gather_out)
            },
            &mut || dense_prefill(&a, &cont, &mut dense_out),
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
    // Causal pairs: query i of a sequence sees history + i + 1 keys. 4 FLOPs per pair and dim.
    let hist = c.context - n;
    let pairs = c.batch as f64 * (n as f64 * hist as f64 + (n * (n + 1) / 2) as f64);
    let flops = 4.0 * pairs * c.head_dim as f64 * c.hq as f64;
    let bytes = (2 * c.batch * c.context * c.hkv * c.head_dim + 2 * q.len()) as f64 * c.dtype.size() as f64;
    let mut rows = vec![
        row("prefill", "pal", c, &pal, bytes),
        row("prefill", "gather", c, &gather, bytes),
        row("prefill", "dense", c, &dense, bytes),
    ];
    for r in &mut rows {
        let gf = flops / r.ms / 1e6;
        r.gflops = Some(gf);
        r.ceiling = "fma_gflops";
        r.ceiling_value = ceil.fma_gflops;
        r.frac_of_ceiling = gf / ceil.fma_gflops;
    }
    add_ratios(&mut rows);
    Ok(rows)
}
