//! Finding NVRTC and the CUDA headers: `PAL_CUDA_ROOT`, `CUDA_HOME`, `CUDA_PATH`, `/usr/local/cuda`,
//! then the `nvidia-cuda-nvrtc` / `nvidia-cuda-runtime` Python wheels (`nvidia/cu13/{lib,include}`
//! under a site-packages directory). The library found is loaded once by absolute path, so that
//! cudarc's own loading by name resolves to it without `LD_LIBRARY_PATH`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where NVRTC and the headers were found.
#[derive(Clone, Debug)]
pub struct Toolkit {
    pub nvrtc_lib: PathBuf,
    pub include_dir: PathBuf,
}

fn candidates() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> =
        ["PAL_CUDA_ROOT", "CUDA_HOME", "CUDA_PATH"].iter().filter_map(std::env::var_os).map(PathBuf::from).collect();
    roots.push("/usr/local/cuda".into());
    // Python wheels: ask the interpreter for its site-packages directories.
    for py in ["python3", "python"] {
        let Ok(out) = std::process::Command::new(py)
            .args([
                "-c",
                "import site,sys;print('\\n'.join(site.getsitepackages()+[site.getusersitepackages()]+sys.path))",
            ])
            .output()
        else {
            continue;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let p = Path::new(line.trim());
            for sub in ["nvidia/cu13", "nvidia/cuda_nvrtc", "nvidia/cuda_runtime"] {
                roots.push(p.join(sub));
            }
        }
        break;
    }
    roots
}

fn find_lib(root: &Path) -> Option<PathBuf> {
    for dir in ["lib64", "lib", "lib/x64"] {
        for name in ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"] {
            let p = root.join(dir).join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

fn find_headers(roots: &[PathBuf]) -> Option<PathBuf> {
    roots
        .iter()
        .map(|r| r.join("include"))
        .find(|inc| inc.join("cuda_fp16.h").is_file() && inc.join("cuda_bf16.h").is_file())
}

/// Locate (once) and preload NVRTC; `None` with a reason when it cannot be found.
pub fn toolkit() -> Result<&'static Toolkit, String> {
    static TK: OnceLock<Result<Toolkit, String>> = OnceLock::new();
    TK.get_or_init(|| {
        let roots = candidates();
        let lib = roots.iter().find_map(|r| find_lib(r)).ok_or_else(|| {
            "NVRTC not found: set CUDA_HOME, or `pip install nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96`"
                .to_string()
        })?;
        let include_dir = find_headers(&roots).ok_or_else(|| {
            "CUDA headers (cuda_fp16.h, cuda_bf16.h) not found: set CUDA_HOME, or `pip install nvidia-cuda-runtime==13.0.96`"
                .to_string()
        })?;
        // NVRTC opens its builtins library by name at compile time; load it first from the same
        // directory so that the name resolves without LD_LIBRARY_PATH.
        if let Some(dir) = lib.parent() {
            if let Ok(entries) = std::fs::read_dir(dir) {
                let mut builtins: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                        n.starts_with("libnvrtc-builtins.so") && !n.contains(".alt.")
                    })
                    .collect();
                builtins.sort();
                if let Some(b) = builtins.last() {
                    preload(b)?;
                }
            }
        }
        preload(&lib)?;
        Ok(Toolkit { nvrtc_lib: lib, include_dir })
    })
    .as_ref()
    .map_err(|e| e.clone())
}

#[cfg(unix)]
fn preload(lib: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(lib.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: dlopen with a valid C string; the handle is intentionally never closed (NVRTC stays
    // loaded for the life of the process, as cudarc expects).
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if h.is_null() {
        return Err(format!("cannot load {}", lib.display()));
    }
    Ok(())
}

#[cfg(not(unix))]
fn preload(_lib: &Path) -> Result<(), String> {
    Ok(())
}
