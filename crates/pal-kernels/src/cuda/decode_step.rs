//! A decode step on the GPU through the path a [`Dispatch`] picks: the fused kernel over the pages
//! ([`CudaDecodePlan`]), or gather-then-dense ([`CudaGatherDecode`]: copy every sequence into a
//! contiguous workspace with `pal_gather`, then the same decode over the copy). Both are planned
//! once per step shape and then run without allocating, so either can be captured in a graph.

use super::{gather, paged_decode, with_uploaded_decode, CudaDecodePlan, CudaDevice, DevicePool, DeviceTable};
use crate::dispatch::{AttentionPath, Backend, Dispatch, Op};
use cudarc::driver::{CudaSlice, DeviceRepr};
use pal_core::{AttentionOptions, DType, Element, HeadConfig, KvLayout, PageTable, PalError, Result};

/// Gather-then-dense decode: the contiguous workspace (one block per sequence, block size = the
/// longest sequence), its page table, and the plan of the dense pass.
pub struct CudaGatherDecode<KV> {
    dense: DevicePool<KV>,
    dense_table: DeviceTable,
    lens: CudaSlice<i32>,
    plan: CudaDecodePlan,
}

impl<KV: Element + DeviceRepr> CudaGatherDecode<KV> {
    /// Allocate the workspace for the sequences of `table` and plan the dense pass.
    pub fn new(
        dev: &CudaDevice,
        table: &PageTable,
        heads: HeadConfig,
        opts: &AttentionOptions,
        q_dtype: DType,
    ) -> Result<Self> {
        heads.validate()?;
        let lens = table.seq_lens();
        let longest = lens.iter().copied().max().unwrap_or(0).max(1);
        let layout = KvLayout::new(table.batch(), longest, heads.num_kv_heads, heads.head_dim)?;
        // Zero-filled once here (the gather overwrites every row a sequence uses); element types
        // need not be zeroable bit patterns for cudarc, so upload zeros from the host.
        let zeros = vec![KV::from_f32(0.0); layout.elems()];
        let dense = DevicePool { k: dev.upload(&zeros)?, v: dev.upload(&zeros)?, layout };
        let ident: Vec<[u32; 1]> = (0..table.batch() as u32).map(|b| [b]).collect();
        let host_table = PageTable::from_lists(&ident, lens, longest)?;
        let dense_table = DeviceTable::upload(dev, &host_table, &layout)?;
        let lens_d = dev.upload(&lens.iter().map(|&l| l as i32).collect::<Vec<i32>>())?;
        let plan = CudaDecodePlan::new(dev, &host_table, heads, opts, (q_dtype, KV::DTYPE))?;
        Ok(CudaGatherDecode { dense, dense_table, lens: lens_d, plan })
    }

    /// Gather the pages of `table` into the workspace, then decode over it.
    #[allow(clippy::too_many_arguments)]
    pub fn run<Q: Element + DeviceRepr>(
        &mut self,
        dev: &CudaDevice,
        q: &CudaSlice<Q>,
        pool: &DevicePool<KV>,
        table: &DeviceTable,
        opts: &AttentionOptions,
        out: &mut CudaSlice<Q>,
    ) -> Result<()> {
        if table.host.seq_lens() != self.dense_table.host.seq_lens() {
            return Err(PalError::invalid("plan", "was built for other sequence lengths than the page table's"));
        }
        gather(dev, pool, table, &self.lens, &mut self.dense)?;
        paged_decode(dev, q, &self.dense, &self.dense_table, &mut self.plan, opts, out)
    }
}

/// One decode step, planned for the path its [`Dispatch`] picks.
// Variant sizes differ by a few hundred bytes; a step is planned once and reused, never copied
// in a loop, so boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum CudaDecodeStep<KV> {
    Fused(CudaDecodePlan),
    Gather(CudaGatherDecode<KV>),
}

impl<KV: Element + DeviceRepr> CudaDecodeStep<KV> {
    /// Plan the step over `table` for q of `q_dtype` and a pool of `KV`.
    pub fn new(
        dev: &CudaDevice,
        table: &PageTable,
        heads: HeadConfig,
        opts: &AttentionOptions,
        q_dtype: DType,
        dispatch: Dispatch,
    ) -> Result<Self> {
        Ok(match dispatch.path(Backend::Cuda, Op::Decode) {
            AttentionPath::Fused => {
                CudaDecodeStep::Fused(CudaDecodePlan::new(dev, table, heads, opts, (q_dtype, KV::DTYPE))?)
            }
            AttentionPath::Gather => CudaDecodeStep::Gather(CudaGatherDecode::new(dev, table, heads, opts, q_dtype)?),
        })
    }

    pub fn path(&self) -> AttentionPath {
        match self {
            CudaDecodeStep::Fused(_) => AttentionPath::Fused,
            CudaDecodeStep::Gather(_) => AttentionPath::Gather,
        }
    }

    /// Run the step: `q` and `out` are `[batch, num_qo_heads, head_dim]` on the device.
    #[allow(clippy::too_many_arguments)]
    pub fn run<Q: Element + DeviceRepr>(
        &mut self,
        dev: &CudaDevice,
        q: &CudaSlice<Q>,
        pool: &DevicePool<KV>,
        table: &DeviceTable,
        opts: &AttentionOptions,
        out: &mut CudaSlice<Q>,
    ) -> Result<()> {
        match self {
            CudaDecodeStep::Fused(plan) => paged_decode(dev, q, pool, table, plan, opts, out),
            CudaDecodeStep::Gather(g) => g.run(dev, q, pool, table, opts, out),
        }
    }
}

/// Validate on the host, upload, run one step through `dispatch`'s path, download (tests and
/// `pal selftest`).
pub fn paged_decode_host_dispatch<Q: Element + DeviceRepr, KV: Element + DeviceRepr>(
    dev: &CudaDevice,
    a: &crate::DecodeArgs<'_, Q, KV>,
    dispatch: Dispatch,
    out: &mut [Q],
) -> Result<AttentionPath> {
    let mut path = AttentionPath::Fused;
    with_uploaded_decode(dev, a, out, |heads, pool, table, q, o| {
        let mut step = CudaDecodeStep::<KV>::new(dev, a.page_table, heads, &a.opts, Q::DTYPE, dispatch)?;
        path = step.path();
        step.run(dev, q, pool, table, &a.opts, o)
    })?;
    Ok(path)
}
