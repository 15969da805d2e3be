//! Prefill cell on the GPU: `new_tokens` new queries per sequence attending causally to their
//! history plus themselves. PAL's tensor-core kernel over the pages, gather-then-dense (PAL's
//! gather kernel, then the same prefill kernel on contiguous K/V) and dense (contiguous K/V from the
//! start), timed with CUDA events on device-resident data. FLOP rates against cuBLAS's bf16 GEMM.

use super::cuda_cell::{iters_for, DeviceCell};
use super::{check_agree, kernel_rows, prefill_flops, random_vec, Cell, Row};
use pal_core::{bf16, f16, AttentionOptions, DType, Element, HeadConfig, PalError};
use pal_kernels::cuda::{paged_prefill, CudaDevice, CudaPrefillPlan, PrefillKernel};

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
    let opts = AttentionOptions::default();
    let qo: Vec<u32> = (0..=c.batch).map(|b| (b * c.new_tokens) as u32).collect();
    let mut cell = DeviceCell::<T>::new(dev, c)?;
    let tokens = c.batch * c.new_tokens;
    let q = dev.upload(&random_vec::<T>(tokens * c.hq * c.head_dim, 4))?;
    let mut out = dev.zeros::<T>(tokens * c.hq * c.head_dim)?;
    let mut dense_out = dev.zeros::<T>(tokens * c.hq * c.head_dim)?;
    let dt = (T::DTYPE, T::DTYPE);
    let mut plan = CudaPrefillPlan::new(dev, &qo, &cell.table, heads, &opts, dt, PrefillKernel::Auto)?;
    let mut dense_plan = CudaPrefillPlan::new(dev, &qo, &cell.dense_table, heads, &opts, dt, PrefillKernel::Auto)?;

    let mut pal = || paged_prefill(dev, &q, &qo, &cell.pool, &cell.table_d, &mut plan, &opts, &mut out);
    let iters = iters_for(dev, c, &mut pal)?;
    let pal_ms = dev.time_ms(iters, &mut pal)?;
    let dense_ms = dev.time_ms(iters, || {
        paged_prefill(dev, &q, &qo, &cell.dense, &cell.dense_table_d, &mut dense_plan, &opts, &mut dense_out)
    })?;
    let gather_ms = dev.time_ms(iters, || {
        cell.gather(dev)?;
        paged_prefill(dev, &q, &qo, &cell.dense, &cell.dense_table_d, &mut dense_plan, &opts, &mut dense_out)
    })?;
    check_agree(c, &dev.download(&out)?, &[&dev.download(&dense_out)?])?;
    let bytes =
        (2 * c.batch * c.context * c.hkv * c.head_dim + 2 * tokens * c.hq * c.head_dim) as f64 * c.dtype.size() as f64;
    let t = |ms: f64| super::timing::Timing { median_ms: ms, min_ms: ms, iters };
    let mut rows = kernel_rows(
        "prefill",
        c,
        [t(pal_ms), t(gather_ms), t(dense_ms)],
        bytes,
        Some(prefill_flops(c)),
        ("bf16_mma_gflops", mma_gflops),
    );
    for r in &mut rows {
        // Either tensor-core kernel (mma.sync or wgmma) is "pal"; the fallback is labelled apart.
        if r.kernel == "pal" && plan.kernel() == "rows" {
            r.kernel = "pal-rows";
        }
    }
    Ok(rows)
}
