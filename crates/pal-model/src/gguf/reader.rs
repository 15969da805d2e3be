use super::value::{type_id, MetaArray, MetaValue};
use super::GgmlType;
use crate::{ModelError, Result};
use std::collections::HashMap;
use std::path::Path;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: usize = 32;
/// Nested arrays deeper than this are rejected (a corrupt file must not overflow the stack).
const MAX_ARRAY_DEPTH: usize = 4;
const MAX_DIMS: usize = 4;

/// One tensor of the index: name, shape (`dims[0]` is the contiguous row length, as in ggml),
/// element type and where its bytes are.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<usize>,
    pub dtype: GgmlType,
    /// Byte offset from the start of the file.
    pub offset: usize,
    pub nbytes: usize,
}

impl TensorInfo {
    pub fn elems(&self) -> usize {
        self.dims.iter().product()
    }
    /// Length of one row (`dims[0]`).
    pub fn row_len(&self) -> usize {
        self.dims[0]
    }
    /// Number of rows (product of the outer dims).
    pub fn rows(&self) -> usize {
        self.dims[1..].iter().product()
    }
}

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// A parsed GGUF file; tensor data stays in the file mapping until asked for.
pub struct GgufFile {
    storage: Storage,
    version: u32,
    metadata: Vec<(String, MetaValue)>,
    by_key: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    alignment: usize,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// A bounds-checked little-endian reader over the header bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| {
            ModelError::corrupt(self.pos, format!("{what}: needs {n} bytes, file ends at {}", self.buf.len()))
        })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// A count that must fit the rest of the file at `min_elem_bytes` per element, so that a
    /// corrupt count cannot make us allocate gigabytes.
    fn count(&mut self, what: &str, min_elem_bytes: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_elem_bytes as u64) > left {
            return Err(ModelError::corrupt(at, format!("{what} = {n} does not fit the {left} bytes left")));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what, 1)?;
        let at = self.pos;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ModelError::corrupt(at, format!("{what} is not UTF-8")))
    }
    fn value(&mut self, ty: u32, depth: usize) -> Result<MetaValue> {
        use type_id::*;
        Ok(match ty {
            U8 => MetaValue::U8(self.array::<1>("u8")?[0]),
            I8 => MetaValue::I8(self.array::<1>("i8")?[0] as i8),
            U16 => MetaValue::U16(u16::from_le_bytes(self.array("u16")?)),
            I16 => MetaValue::I16(i16::from_le_bytes(self.array("i16")?)),
            U32 => MetaValue::U32(self.u32("u32")?),
            I32 => MetaValue::I32(i32::from_le_bytes(self.array("i32")?)),
            F32 => MetaValue::F32(f32::from_le_bytes(self.array("f32")?)),
            BOOL => {
                let at = self.pos;
                match self.array::<1>("bool")?[0] {
                    0 => MetaValue::Bool(false),
                    1 => MetaValue::Bool(true),
                    b => return Err(ModelError::corrupt(at, format!("bool byte {b}"))),
                }
            }
            STRING => MetaValue::String(self.string("string length")?),
            ARRAY => {
                let at = self.pos;
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(ModelError::corrupt(at, "arrays nested too deeply"));
                }
                let elem_type = self.u32("array type")?;
                let min = match elem_type {
                    U8 | I8 | BOOL => 1,
                    U16 | I16 => 2,
                    U32 | I32 | F32 => 4,
                    U64 | I64 | F64 | STRING => 8,
                    ARRAY => 12,
                    t => return Err(ModelError::corrupt(at, format!("unknown array element type {t}"))),
                };
                let n = self.count("array length", min)?;
                let mut values = Vec::with_capacity(n);
                for _ in 0..n {
                    values.push(self.value(elem_type, depth + 1)?);
                }
                MetaValue::Array(MetaArray { elem_type, values })
            }
            U64 => MetaValue::U64(self.u64("u64")?),
            I64 => MetaValue::I64(i64::from_le_bytes(self.array("i64")?)),
            F64 => MetaValue::F64(f64::from_le_bytes(self.array("f64")?)),
            t => return Err(ModelError::corrupt(self.pos.saturating_sub(4), format!("unknown value type {t}"))),
        })
    }
}

impl GgufFile {
    /// Memory-map and parse `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| ModelError::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only; like every mmap-based model loader we rely on nobody
        // truncating or rewriting the model file while it is open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(Storage::Mapped(map))
    }

    /// Read the whole file into anonymous memory advised for huge pages, then parse it. Costs a
    /// copy at load; saves TLB misses on every step (weights are streamed once per token).
    /// `progress(done, total)` is called as the bytes arrive.
    pub fn open_in_memory(path: impl AsRef<Path>, progress: &mut dyn FnMut(u64, u64)) -> Result<Self> {
        use std::io::Read;
        let path = path.as_ref();
        let io = |source| ModelError::Io { path: path.to_path_buf(), source };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len() as usize;
        let mut bytes = pal_core::alloc::large_vec::<u8>(len);
        for (i, chunk) in bytes.chunks_mut(16 << 20).enumerate() {
            file.read_exact(chunk).map_err(io)?;
            progress(((i << 24) + chunk.len()) as u64, len as u64);
        }
        Self::parse(Storage::Owned(bytes))
    }

    /// Parse a file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(Storage::Owned(bytes))
    }

    fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }

    fn parse(storage: Storage) -> Result<Self> {
        let buf: &[u8] = match &storage {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        };
        let mut c = Cursor { buf, pos: 0 };
        if c.take(4, "magic")? != MAGIC {
            return Err(ModelError::corrupt(0, "not a GGUF file (magic is not `GGUF`)"));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(ModelError::UnsupportedVersion(version));
        }
        // Minimum encoded sizes: a tensor info is >= 8+4+8+4+8 bytes, a key/value >= 8+4+1.
        let n_tensors = c.count("tensor count", 32)?;
        let n_kv = c.count("metadata count", 13)?;
        let mut metadata = Vec::with_capacity(n_kv);
        let mut by_key = HashMap::with_capacity(n_kv);
        for _ in 0..n_kv {
            let at = c.pos;
            let key = c.string("key length")?;
            let ty = c.u32("value type")?;
            let v = c.value(ty, 0)?;
            if by_key.insert(key.clone(), metadata.len()).is_some() {
                return Err(ModelError::corrupt(at, format!("duplicate metadata key `{key}`")));
            }
            metadata.push((key, v));
        }
        let alignment = match metadata.get(by_key.get("general.alignment").copied().unwrap_or(usize::MAX)) {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a as usize,
                _ => return Err(ModelError::bad_meta("general.alignment", format!("{v:?} is not a power of two"))),
            },
        };
        let mut raw = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string("tensor name length")?;
            let at = c.pos;
            let n_dims = c.u32("tensor dims")? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(ModelError::corrupt(at, format!("tensor `{name}` has {n_dims} dims (1..={MAX_DIMS})")));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.u64("tensor dim")?);
            }
            let type_id = c.u32("tensor type")?;
            let offset = c.u64("tensor offset")?;
            raw.push((name, dims, type_id, offset));
        }
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(n_tensors);
        let mut by_name = HashMap::with_capacity(n_tensors);
        for (name, dims, type_id, offset) in raw {
            let dtype = GgmlType::from_id(type_id)
                .ok_or_else(|| ModelError::UnknownTensorType { name: name.clone(), type_id })?;
            let info = Self::tensor_info(name, &dims, dtype, offset, data_start, alignment, buf.len())?;
            if by_name.insert(info.name.clone(), tensors.len()).is_some() {
                return Err(ModelError::bad_tensor(&info.name, "appears twice in the index"));
            }
            tensors.push(info);
        }
        Ok(GgufFile { storage, version, metadata, by_key, tensors, by_name, alignment })
    }

    fn tensor_info(
        name: String,
        dims: &[u64],
        dtype: GgmlType,
        offset: u64,
        data_start: usize,
        alignment: usize,
        file_len: usize,
    ) -> Result<TensorInfo> {
        let mut elems: u64 = 1;
        for &d in dims {
            if d == 0 {
                return Err(ModelError::bad_tensor(&name, format!("dims {dims:?} contain 0")));
            }
            elems = elems
                .checked_mul(d)
                .filter(|&e| e <= 1 << 40)
                .ok_or_else(|| ModelError::bad_tensor(&name, format!("dims {dims:?} are impossibly large")))?;
        }
        let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let row = dtype.row_bytes(dims[0]).ok_or_else(|| {
            ModelError::bad_tensor(
                &name,
                format!("row length {} is not a multiple of the {dtype} block ({})", dims[0], dtype.block_elems()),
            )
        })?;
        let nbytes = row * (elems as usize / dims[0]);
        if !offset.is_multiple_of(alignment as u64) {
            return Err(ModelError::bad_tensor(&name, format!("offset {offset} is not aligned to {alignment}")));
        }
        let start = (data_start as u64).checked_add(offset);
        let end = start.and_then(|s| s.checked_add(nbytes as u64));
        match (start, end) {
            (Some(s), Some(e)) if e <= file_len as u64 => {
                Ok(TensorInfo { name, dims, dtype, offset: s as usize, nbytes })
            }
            _ => Err(ModelError::bad_tensor(
                &name,
                format!("data [{offset}, +{nbytes}) runs past the end of the file ({file_len} bytes; truncated?)"),
            )),
        }
    }

    pub fn version(&self) -> u32 {
        self.version
    }
    pub fn alignment(&self) -> usize {
        self.alignment
    }
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &MetaValue)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.by_key.get(key).map(|&i| &self.metadata[i].1)
    }
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }
    /// The raw bytes of a tensor of this file (bounds were checked when the file was parsed).
    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        &self.bytes()[t.offset..t.offset + t.nbytes]
    }

    // Typed metadata accessors with errors naming the key.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key).ok_or_else(|| ModelError::MissingKey(key.into()))?;
        v.as_u64().ok_or_else(|| ModelError::bad_meta(key, format!("expected an unsigned integer, found {v:?}")))
    }
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        self.get_u64(key).and_then(|v| {
            usize::try_from(v)
                .ok()
                .filter(|&v| v < 1 << 40)
                .ok_or_else(|| ModelError::bad_meta(key, format!("{v} is too large")))
        })
    }
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.get(key).ok_or_else(|| ModelError::MissingKey(key.into()))?;
        v.as_f64().ok_or_else(|| ModelError::bad_meta(key, format!("expected a number, found {v:?}")))
    }
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.get(key).ok_or_else(|| ModelError::MissingKey(key.into()))?;
        v.as_str().ok_or_else(|| ModelError::bad_meta(key, "expected a string"))
    }
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let v = self.get(key).ok_or_else(|| ModelError::MissingKey(key.into()))?;
        v.as_bool().ok_or_else(|| ModelError::bad_meta(key, "expected a bool"))
    }
    pub fn get_array(&self, key: &str) -> Result<&[MetaValue]> {
        let v = self.get(key).ok_or_else(|| ModelError::MissingKey(key.into()))?;
        v.as_array().ok_or_else(|| ModelError::bad_meta(key, "expected an array"))
    }
}
