//! Decode cell on the GPU: PAL's paged decode, gather-then-dense (gather kernel + the same decode
//! kernel on contiguous K/V) and dense, timed with CUDA events on device-resident data.

use super::{bench_pool, check_agree, kernel_rows, random_vec, BenchPool, Cell, Row};
use pal_core::{bf16, f16, AttentionOptions, DType, Element, HeadConfig, KvLayout, PageTable, PalError};
use pal_kernels::cuda::{gather, paged_decode, CudaDecodePlan, CudaDevice, DevicePool, DeviceTable};

pub fn run(dev: &CudaDevice, c: &Cell, read_gbps: f64) -> Result<Vec<Row>, PalError> {
    match c.dtype {
        DType::F32 => typed::<f32>(dev, c, read_gbps),
        DType::F16 => typed::<f16>(dev, c, read_gbps),
        DType::BF16 => typed::<bf16>(dev, c, read_gbps),
    }
}

/// Iterations so that one measurement takes about `budget`.
fn iters_for(dev: &CudaDevice, c: &Cell, mut f: impl FnMut() -> Result<(), PalError>) -> Result<usize, PalError> {
    let once = dev.time_ms(1, &mut f)?.max(1e-3);
    Ok(((c.budget.as_secs_f64() * 1e3 / once) as usize).clamp(5, 2000))
}

fn typed<T: Element + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    dev: &CudaDevice,
    c: &Cell,
    read_gbps: f64,
) -> Result<Vec<Row>, PalError> {
    let heads = HeadConfig::new(c.hq, c.hkv, c.head_dim)?;
    let lens = vec![c.context; c.batch];
    let opts = AttentionOptions::default();
    let BenchPool { layout, k, v, table } = bench_pool::<T>(c)?;
    let pool = DevicePool::upload(dev, &k, &v, layout)?;
    drop((k, v));
    let table_d = DeviceTable::upload(dev, &table, &layout)?;
    let q = dev.upload(&random_vec::<T>(c.batch * c.hq * c.head_dim, 4))?;
    let mut out = dev.zeros::<T>(c.batch * c.hq * c.head_dim)?;
    let mut plan = CudaDecodePlan::new(dev, &table, heads, &opts)?;

    // Contiguous copy: one block per sequence.
    let dense_layout = KvLayout::new(c.batch, c.context, c.hkv, c.head_dim)?;
    let mut dense = DevicePool {
        k: dev.zeros::<T>(dense_layout.elems())?,
        v: dev.zeros::<T>(dense_layout.elems())?,
        layout: dense_layout,
    };
    let ident: Vec<[u32; 1]> = (0..c.batch as u32).map(|b| [b]).collect();
    let dense_table = PageTable::from_lists(&ident, &lens, c.context)?;
    let dense_table_d = DeviceTable::upload(dev, &dense_table, &dense_layout)?;
    let mut dense_plan = CudaDecodePlan::new(dev, &dense_table, heads, &opts)?;
    let lens_d = dev.upload(&lens.iter().map(|&l| l as i32).collect::<Vec<i32>>())?;
    let mut dense_out = dev.zeros::<T>(c.batch * c.hq * c.head_dim)?;
    gather(dev, &pool, &table_d, &lens_d, &mut dense)?;

    let n = iters_for(dev, c, || paged_decode(dev, &q, &pool, &table_d, &mut plan, &opts, &mut out))?;
    let pal_ms = dev.time_ms(n, || paged_decode(dev, &q, &pool, &table_d, &mut plan, &opts, &mut out))?;
    let dense_ms =
        dev.time_ms(n, || paged_decode(dev, &q, &dense, &dense_table_d, &mut dense_plan, &opts, &mut dense_out))?;
    let gather_ms = dev.time_ms(n, || {
        gather(dev, &pool, &table_d, &lens_d, &mut dense)?;
        paged_decode(dev, &q, &dense, &dense_table_d, &mut dense_plan, &opts, &mut dense_out)
    })?;
    check_agree(c, &dev.download(&out)?, &[&dev.download(&dense_out)?])?;
    let bytes =
        (2 * c.batch * c.context * c.hkv * c.head_dim + 2 * c.batch * c.hq * c.head_dim) as f64 * c.dtype.size() as f64;
    let t = |ms: f64| super::timing::Timing { median_ms: ms, min_ms: ms, iters: n };
    let rows = kernel_rows("decode", c, [t(pal_ms), t(gather_ms), t(dense_ms)], bytes, None, ("read_gbps", read_gbps));
    Ok(rows)
}
