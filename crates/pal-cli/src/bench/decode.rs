//! Decode cell: one query token per sequence over `context` cached tokens.

use super::timing::time_interleaved;
use super::{bench_pool, check_agree, kernel_rows, random_vec, BenchPool, Ceilings, Cell, Row};
use pal_core::{bf16, f16, AttentionOptions, DType, Element, PagedKv, PalError};
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
    let BenchPool { layout, k, v, table } = bench_pool::<T>(c)?;
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
    check_agree(c, &out, &[&dense_out, &gather_out])?;
    // Bytes a decode step must move: all K and V once, plus q in and out.
    let bytes = (2 * c.batch * c.context * c.hkv * c.head_dim + 2 * q.len()) as f64 * c.dtype.size() as f64;
    let rows = kernel_rows("decode", c, [times[0], times[1], times[2]], bytes, None, ("read_gbps", ceil.read_gbps));
    Ok(rows)
}
