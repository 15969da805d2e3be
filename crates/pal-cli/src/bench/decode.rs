//! Decode cell: one query token per sequence over `context` cached tokens.

use super::ceiling::ReadProbe;
use super::timing::time_interleaved;
use super::{bench_pool, check_agree, kernel_rows, random_vec, BenchPool, Cell, Row};
use pal_core::{bf16, f16, AttentionOptions, DType, Element, PagedKv, PalError};
use pal_kernels::gather::{dense_decode, Contiguous};
use pal_kernels::{cpu, DecodeArgs, DecodePlan};

/// The cell's ceiling is `probe` timed in the same interleaved rounds as the kernels (its median,
/// also reported as a `read-probe` row), not the run's opening measurement:
/// on a shared VM the bandwidth drifts by ±15% within minutes, and a ceiling taken earlier makes
/// the fraction swing with it.
pub fn run(c: &Cell, probe: &ReadProbe) -> Result<Vec<Row>, PalError> {
    match c.dtype {
        DType::F32 => typed::<f32>(c, probe),
        DType::F16 => typed::<f16>(c, probe),
        DType::BF16 => typed::<bf16>(c, probe),
    }
}

fn typed<T: Element>(c: &Cell, probe: &ReadProbe) -> Result<Vec<Row>, PalError> {
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
    let mut pal = || cpu::paged_decode(&a, &plan, &mut out);
    let mut gather = || {
        gather_cont.gather_from(&a.kv, &table);
        dense_decode(&a, &gather_cont, &mut gather_out)
    };
    let mut dense = || dense_decode(&a, &cont, &mut dense_out);
    let mut read = || {
        probe.run();
        Ok(())
    };
    let times = time_interleaved(c.budget, &mut [&mut pal, &mut gather, &mut dense, &mut read])?;
    check_agree(c, &out, &[&dense_out, &gather_out])?;
    // Bytes a decode step must move: all K and V once, plus q in and out.
    let bytes = (2 * c.batch * c.context * c.hkv * c.head_dim + 2 * q.len()) as f64 * c.dtype.size() as f64;
    let ceiling = probe.bytes() / times[3].median_ms / 1e6;
    let mut rows = kernel_rows("decode", c, [times[0], times[1], times[2]], bytes, None, ("read_gbps", ceiling));
    let mut r = super::row("decode", "read-probe", c, &times[3], probe.bytes());
    (r.ceiling, r.ceiling_value, r.frac_of_ceiling) = ("read_gbps", ceiling, 1.0);
    rows.push(r);
    Ok(rows)
}
