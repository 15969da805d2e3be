//! Prefill cell: `new_tokens` new queries per sequence attending causally to `context - new_tokens`
//! cached tokens plus themselves.

use super::timing::time_interleaved;
use super::{bench_pool, check_agree, kernel_rows, prefill_flops, random_vec, BenchPool, Ceilings, Cell, Row};
use pal_core::{bf16, f16, AttentionOptions, DType, Element, PagedKv, PalError};
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
    let BenchPool { layout, k, v, table } = bench_pool::<T>(c)?;
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
    check_agree(c, &out, &[&dense_out, &gather_out])?;
    let bytes = (2 * c.batch * c.context * c.hkv * c.head_dim + 2 * q.len()) as f64 * c.dtype.size() as f64;
    let ceiling = ("fma_gflops", ceil.fma_gflops);
    let rows = kernel_rows("prefill", c, [times[0], times[1], times[2]], bytes, Some(prefill_flops(c)), ceiling);
    Ok(rows)
}
