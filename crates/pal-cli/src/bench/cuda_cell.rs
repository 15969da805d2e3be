//! What the GPU cells share: the cell's paged pool on the device, its contiguous copy (one block
//! per sequence, for the gather and dense baselines), and the iteration count for a time budget.

use super::{bench_pool, BenchPool, Cell};
use pal_core::{Element, KvLayout, PageTable, PalError};
use pal_kernels::cuda::{gather, CudaDevice, DevicePool, DeviceTable};

/// A cell's K/V on the device, paged and contiguous.
pub struct DeviceCell<T> {
    /// The host page table of the paged pool (plans are built from it).
    pub table: PageTable,
    pub pool: DevicePool<T>,
    pub table_d: DeviceTable,
    /// The same sequences gathered into one block each, filled once here.
    pub dense: DevicePool<T>,
    pub dense_table: PageTable,
    pub dense_table_d: DeviceTable,
    /// Sequence lengths on the device (what [`gather`] needs).
    pub lens_d: cudarc::driver::CudaSlice<i32>,
}

impl<T: Element + cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits> DeviceCell<T> {
    pub fn new(dev: &CudaDevice, c: &Cell) -> Result<Self, PalError> {
        let lens = vec![c.context; c.batch];
        let BenchPool { layout, k, v, table } = bench_pool::<T>(c)?;
        let pool = DevicePool::upload(dev, &k, &v, layout)?;
        drop((k, v));
        let table_d = DeviceTable::upload(dev, &table, &layout)?;
        let dense_layout = KvLayout::new(c.batch, c.context, c.hkv, c.head_dim)?;
        let mut dense = DevicePool {
            k: dev.zeros::<T>(dense_layout.elems())?,
            v: dev.zeros::<T>(dense_layout.elems())?,
            layout: dense_layout,
        };
        let ident: Vec<[u32; 1]> = (0..c.batch as u32).map(|b| [b]).collect();
        let dense_table = PageTable::from_lists(&ident, &lens, c.context)?;
        let dense_table_d = DeviceTable::upload(dev, &dense_table, &dense_layout)?;
        let lens_d = dev.upload(&lens.iter().map(|&l| l as i32).collect::<Vec<i32>>())?;
        gather(dev, &pool, &table_d, &lens_d, &mut dense)?;
        Ok(DeviceCell { table, pool, table_d, dense, dense_table, dense_table_d, lens_d })
    }

    /// Refill the contiguous copy from the paged pool (the first half of gather-then-dense).
    pub fn gather(&mut self, dev: &CudaDevice) -> Result<(), PalError> {
        gather(dev, &self.pool, &self.table_d, &self.lens_d, &mut self.dense)
    }
}

/// Iterations so that one measurement of `f` takes about the cell's budget.
pub fn iters_for(dev: &CudaDevice, c: &Cell, mut f: impl FnMut() -> Result<(), PalError>) -> Result<usize, PalError> {
    let once = dev.time_ms(1, &mut f)?.max(1e-3);
    Ok(((c.budget.as_secs_f64() * 1e3 / once) as usize).clamp(5, 2000))
}
