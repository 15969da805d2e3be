//! Choosing the backend a command runs on.

use pal_core::{Device, PalError};

/// Resolve `--device`: `auto` runs on CUDA when a GPU (driver, device and NVRTC) is usable, and on
/// the CPU otherwise with a one-line notice; `cuda` fails clearly when it cannot be honoured.
pub fn resolve(requested: Device) -> Result<Device, PalError> {
    match requested {
        Device::Cpu => Ok(Device::Cpu),
        Device::Cuda => pal_kernels::cuda::CudaDevice::probe().map(|_| Device::Cuda),
        Device::Auto => match pal_kernels::cuda::CudaDevice::probe() {
            Ok(_) => Ok(Device::Cuda),
            Err(e) => {
                eprintln!("note: no usable GPU ({e}); running on the CPU");
                Ok(Device::Cpu)
            }
        },
    }
}

/// A one-line description of the CPU for reports.
pub fn cpu_name() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let isa = if pal_kernels::cpu::uses_avx2() { "avx2+fma" } else { "portable" };
    format!("{model} ({} threads, {isa})", rayon::current_num_threads())
}
