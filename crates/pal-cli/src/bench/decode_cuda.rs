//! Decode cell on the GPU: PAL's paged decode, gather-then-dense (gather kernel + the same decode
//! kernel on contiguous K/V) and dense, timed with CUDA events on device-resident data.

use super::cuda_cell::{iters_for, DeviceCell};
use super::{check_agree, kernel_rows, random_vec, Cell, Row};
use pal_core::{bf16, f16, AttentionOptions, DType, Element, HeadConfig, PalError};
use pal_kernels::cuda::{paged_decode, CudaDecodePlan, CudaDevice};

pub fn run(dev: &CudaDevice, c: &Cell, read_gbps: f64) -> Result<Vec<Row>, PalError> {
    match c.dtype {
        DType::F32 => typed::<f32>(dev, c, read_gbps),
        DType::F16 => typed::<f16>(dev, c, read_gbps),
        DType::BF16 => typed::<bf16>(dev, c, read_gbps),
    }
}

fn typed<T: Element + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    dev: &CudaDevice,
    c: &Cell,
    read_gbps: f64,
) -> Result<Vec<Row>, PalError> {
    let heads = HeadConfig::new(c.hq, c.hkv, c.head_dim)?;
    let opts = AttentionOptions::default();
    let mut cell = DeviceCell::<T>::new(dev, c)?;
    let q = dev.upload(&random_vec::<T>(c.batch * c.hq * c.head_dim, 4))?;
    let mut out = dev.zeros::<T>(c.batch * c.hq * c.head_dim)?;
    let dtypes = (T::DTYPE, T::DTYPE);
    let mut plan = CudaDecodePlan::new(dev, &cell.table, heads, &opts, dtypes)?;
    let mut dense_plan = CudaDecodePlan::new(dev, &cell.dense_table, heads, &opts, dtypes)?;
    let mut dense_out = dev.zeros::<T>(c.batch * c.hq * c.head_dim)?;

    let n = iters_for(dev, c, || paged_decode(dev, &q, &cell.pool, &cell.table_d, &mut plan, &opts, &mut out))?;
    let pal_ms = dev.time_ms(n, || paged_decode(dev, &q, &cell.pool, &cell.table_d, &mut plan, &opts, &mut out))?;
    let dense_ms = dev.time_ms(n, || {
        paged_decode(dev, &q, &cell.dense, &cell.dense_table_d, &mut dense_plan, &opts, &mut dense_out)
    })?;
    let gather_ms = dev.time_ms(n, || {
        cell.gather(dev)?;
        paged_decode(dev, &q, &cell.dense, &cell.dense_table_d, &mut dense_plan, &opts, &mut dense_out)
    })?;
    check_agree(c, &dev.download(&out)?, &[&dev.download(&dense_out)?])?;
    let bytes =
        (2 * c.batch * c.context * c.hkv * c.head_dim + 2 * c.batch * c.hq * c.head_dim) as f64 * c.dtype.size() as f64;
    let t = |ms: f64| super::timing::Timing { median_ms: ms, min_ms: ms, iters: n };
    let mut rows =
        kernel_rows("decode", c, [t(pal_ms), t(gather_ms), t(dense_ms)], bytes, None, ("read_gbps", read_gbps));
    // What a pure streaming read of the same bytes takes: the ceiling for this size, fixed costs
    // (ramp-up, tail) included, which the 2 GiB probe behind `read_gbps` amortises away. Skipped
    // where the GPU has no room for one more buffer of the cell's size (the pool and its dense
    // copy are resident already).
    if let Ok(buf) = dev.zeros::<u8>(bytes as usize) {
        let probe_ms = dev.read_probe_ms(&buf, n)?;
        let mut probe = rows[0].clone();
        probe.kernel = "read-probe";
        (probe.ms, probe.min_ms) = (probe_ms, probe_ms);
        probe.gbps = (bytes as usize / 16 * 16) as f64 / probe_ms / 1e6;
        probe.frac_of_ceiling = probe.gbps / read_gbps;
        (probe.speedup_vs_gather, probe.speedup_vs_dense) = (None, None);
        rows.push(probe);
    }
    Ok(rows)
}
