//! Append cell on the GPU: `batch * new_tokens` tokens into scattered slots, with and without
//! RoPE, timed with CUDA events on device-resident data.

use super::{random_vec, row, Cell, Row};
use pal_core::{bf16, f16, DType, Element, KvLayout, PalError};
use pal_kernels::cuda::{append_kv, CudaDevice, DeviceAppend, DevicePool, DeviceRope};
use pal_kernels::testing::Rng;
use pal_kernels::{Rope, RopeConfig, RopeStyle};

pub fn run(dev: &CudaDevice, c: &Cell, copy_gbps: f64) -> Result<Vec<Row>, PalError> {
    match c.dtype {
        DType::F32 => typed::<f32>(dev, c, copy_gbps),
        DType::F16 => typed::<f16>(dev, c, copy_gbps),
        DType::BF16 => typed::<bf16>(dev, c, copy_gbps),
    }
}

fn typed<T: Element + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    dev: &CudaDevice,
    c: &Cell,
    copy_gbps: f64,
) -> Result<Vec<Row>, PalError> {
    let t = c.batch * c.new_tokens;
    let (hq, hkv, d) = (c.hq, c.hkv, c.head_dim);
    let layout = KvLayout::new((2 * t).div_ceil(c.page), c.page, hkv, d)?;
    let mut pool = DevicePool { k: dev.zeros::<T>(layout.elems())?, v: dev.zeros::<T>(layout.elems())?, layout };
    let mut all: Vec<u32> = (0..layout.num_slots() as u32).collect();
    Rng::new(5).shuffle(&mut all);
    let slots = dev.upload(&all[..t].iter().map(|&s| s as i32).collect::<Vec<_>>())?;
    let positions =
        dev.upload(&(0..t).map(|i| (c.context - c.new_tokens + i % c.new_tokens) as i32).collect::<Vec<_>>())?;
    let rope = DeviceRope::upload(dev, &Rope::new(RopeConfig::new(RopeStyle::HalfSplit, 500000.0), d, c.context)?)?;
    let mut q = dev.upload(&random_vec::<T>(t * hq * d, 1))?;
    let k = dev.upload(&random_vec::<T>(t * hkv * d, 2))?;
    let v = dev.upload(&random_vec::<T>(t * hkv * d, 3))?;
    let mut rows = Vec::new();
    for (name, r) in [("pal", Some(&rope)), ("pal-norope", None)] {
        let mut call = || {
            let a = DeviceAppend {
                q: &mut q,
                k: &k,
                v: &v,
                positions: &positions,
                slots: &slots,
                tokens: t,
                num_qo_heads: hq,
            };
            append_kv(dev, a, r, &mut pool)
        };
        let once = dev.time_ms(1, &mut call)?.max(1e-3);
        let n = ((c.budget.as_secs_f64() * 1e3 / once) as usize).clamp(5, 2000);
        let ms = dev.time_ms(n, &mut call)?;
        let q_bytes = if r.is_some() { 2 * t * hq * d } else { 0 };
        let bytes = (q_bytes + 4 * t * hkv * d) as f64 * c.dtype.size() as f64;
        let mut rw = row("append", name, c, &super::timing::Timing { median_ms: ms, min_ms: ms, iters: n }, bytes);
        rw.ceiling = "copy_gbps";
        rw.ceiling_value = copy_gbps;
        rw.frac_of_ceiling = rw.gbps / copy_gbps;
        rows.push(rw);
    }
    Ok(rows)
}
