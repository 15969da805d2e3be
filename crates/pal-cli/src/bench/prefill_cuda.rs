//! Prefill cell on the GPU: `new_tokens` new queries per sequence attending causally to their
//! history plus themselves. PAL's tensor-core kernel over the pages, gather-then-dense (PAL's
//! gather kernel, then the same prefill kernel on contiguous K/V) and dense (contiguous K/V from the
//! start), timed with CUDA events on device-resident data. FLOP rates against cuBLAS's bf16 GEMM.

use super::{bench_pool, check_agree, kernel_rows, random_vec, BenchPool, Cell, Row};
use pal_core::{bf16, f16, AttentionOptions, DType, Element, HeadConfig, KvLayout, PageTable, PalError};
use pal_kernels::cuda::{gather, paged_prefill, CudaDevice, CudaPrefillPlan, DevicePool, DeviceTable, PrefillKernel};

pub fn run(dev: &CudaDevice, c: &Cell, mma_gflops: f64) -> Result<Vec<Row>, PalError> {
    match c.dtype {
        DType::F32 => typed::<f32>(dev, c, mma_gflops),
        DType::F16 => typed::<f16>(dev, c, mma_gflops),
        DType::BF16 => typed::<bf16>(dev, c, mma_gflops),
    }
}

fn typed<T: Element + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    dev: &CudaDevice,
    c: &Cell,
    mma_gflops: f64,
) -> Result<Vec<Row>, PalError> {
    let heads = HeadConfig::new(c.hq, c.hkv, c.head_dim)?;
    let n = c.new_tokens;
    let lens = vec![c.context; c.batch];
    let opts = AttentionOptions::default();
    let qo: Vec<u32> = (0..=c.batch).map(|b| (b * n) as u32).collect();
    let BenchPool { layout, k, v, table } = bench_pool::<T>(c)?;
    let pool = DevicePool::upload(dev, &k, &v, layout)?;
    drop((k, v));
    let table_d = DeviceTable::upload(dev, &table, &layout)?;
    let tokens = c.batch * n;
    let q = dev.upload(&random_vec::<T>(tokens * c.hq * c.head_dim, 4))?;
    let mut out = dev.zeros::<T>(tokens * c.hq * c.head_dim)?;
    let dt = (T::DTYPE, T::DTYPE);
    let mut plan = CudaPrefillPlan::new(dev, &qo, &table, heads, &opts, dt, PrefillKernel::Auto)?;

    let dense_layout = KvLayout::new(c.batch, c.context, c.hkv, c.head_dim)?;
    let mut dense = DevicePool {
        k: dev.zeros::<T>(dense_layout.elems())?,
        v: dev.zeros::<T>(dense_layout.elems())?,
        layout: dense_layout,
    };
    let ident: Vec<[u32; 1]> = (0..c.batch as u32).map(|b| [b]).collect();
    let dense_table = PageTable::from_lists(&ident, &lens, c.context)?;
    let dense_table_d = DeviceTable::upload(dev, &dense_table, &dense_layout)?;
    let mut dense_plan = CudaPrefillPlan::new(dev, &qo, &dense_table, heads, &opts, dt, PrefillKernel::Auto)?;
    let lens_d = dev.upload(&lens.iter().map(|&l| l as i32).collect::<Vec<i32>>())?;
    let mut dense_out = dev.zeros::<T>(tokens * c.hq * c.head_dim)?;
    gather(dev, &pool, &table_d, &lens_d, &mut dense)?;

    let mut pal = || paged_prefill(dev, &q, &qo, &pool, &table_d, &mut plan, &opts, &mut out);
    let once = dev.time_ms(1, &mut pal)?.max(1e-3);
    let iters = ((c.budget.as_secs_f64() * 1e3 / once) as usize).clamp(3, 2000);
    let pal_ms = dev.time_ms(iters, &mut pal)?;
    let dense_ms = dev.time_ms(iters, || {
        paged_prefill(dev, &q, &qo, &dense, &dense_table_d, &mut dense_plan, &opts, &mut dense_out)
    })?;
    let gather_ms = dev.time_ms(iters, || {
        gather(dev, &pool, &table_d, &lens_d, &mut dense)?;
        paged_prefill(dev, &q, &qo, &dense, &dense_table_d, &mut dense_plan, &opts, &mut dense_out)
    })?;
    check_agree(c, &dev.download(&out)?, &[&dev.download(&dense_out)?])?;
    let hist = c.context - n;
    let pairs = c.batch as f64 * (n as f64 * hist as f64 + (n * (n + 1) / 2) as f64);
    let flops = 4.0 * pairs * c.head_dim as f64 * c.hq as f64;
    let bytes =
        (2 * c.batch * c.context * c.hkv * c.head_dim + 2 * tokens * c.hq * c.head_dim) as f64 * c.dtype.size() as f64;
    let t = |ms: f64| super::timing::Timing { median_ms: ms, min_ms: ms, iters };
    let mut rows = kernel_rows(
        "prefill",
        c,
        [t(pal_ms), t(gather_ms), t(dense_ms)],
        bytes,
        Some(flops),
        ("bf16_mma_gflops", mma_gflops),
    );
    for r in &mut rows {
        if r.kernel == "pal" {
            r.kernel = if plan.kernel() == "tensor-core" { "pal" } else { "pal-rows" };
        }
    }
    Ok(rows)
}
