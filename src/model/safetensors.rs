//! A safetensors file opened through mmap, with its header validated in full before any
//! tensor is touched: a lying header must give an error, never an out-of-bounds read.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::{Error, ErrorKind, Result};

/// Headers larger than this are refused (real ones are a few hundred KB).
const MAX_HEADER_BYTES: u64 = 100 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    fn parse(s: &str) -> Option<DType> {
        Some(match s {
            "F64" => DType::F64,
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "I64" => DType::I64,
            "I32" => DType::I32,
            "I16" => DType::I16,
            "I8" => DType::I8,
            "U8" => DType::U8,
            "BOOL" => DType::Bool,
            _ => return None,
        })
    }
    pub fn size(self) -> u64 {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
        }
    }
    /// Little-endian `bytes` of this float dtype as f32 values (f16/bf16 upcast exactly);
    /// `None` for a dtype that is not a weight float.
    pub fn to_f32(self, bytes: &[u8]) -> Option<Vec<f32>> {
        Some(match self {
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            _ => return None,
        })
    }

    /// Floating types a model weight may have (contract §2.4).
    pub fn is_weight_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }
}

/// One tensor's entry in the header, with its absolute position in the file.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    pub nbytes: u64,
}

/// Dtypes of the safetensors format this program does not read.
const VALID_UNSUPPORTED: [&str; 7] = ["U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4"];
/// Marks a header error that is not a malformed file (see `VALID_UNSUPPORTED`).
const UNSUPPORTED: &str = "unsupported: ";

pub struct SafeTensors {
    path: PathBuf,
    file_len: u64,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
    /// Mapped on first use, so planning from the header never touches the data.
    mmap: std::sync::OnceLock<std::result::Result<Mmap, String>>,
    file: File,
}

impl SafeTensors {
    /// Opens `path` and validates its header; the data is not read.
    pub fn open(path: &Path) -> Result<SafeTensors> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{} is a directory; expected a .safetensors file",
                    path.display()
                ),
            ));
        }
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let bad = |msg: String| {
            Error::model(format!(
                "{}: not a valid safetensors file: {msg}",
                path.display()
            ))
        };
        if file_len < 8 {
            return Err(bad(format!(
                "{file_len} bytes is too short for the 8-byte header length"
            )));
        }
        let mut len_bytes = [0u8; 8];
        read_exact_at(&mut file, 0, &mut len_bytes).map_err(|e| Error::io(path, e))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER_BYTES {
            return Err(bad(format!(
                "header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit"
            )));
        }
        if header_len > file_len - 8 {
            return Err(bad(format!(
                "header length {header_len} runs past the end of the {file_len}-byte file"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        read_exact_at(&mut file, 8, &mut header).map_err(|e| Error::io(path, e))?;
        let data_start = 8 + header_len;
        let (tensors, metadata) = parse_header(&header, file_len - data_start, data_start)
            .map_err(|m| match m.strip_prefix(UNSUPPORTED) {
                Some(m) => Error::model(format!("{}: {m}", path.display())),
                None => bad(m),
            })?;
        Ok(SafeTensors {
            path: path.to_path_buf(),
            file_len,
            tensors,
            metadata,
            mmap: std::sync::OnceLock::new(),
            file,
        })
    }

    /// The tensor names in `path`'s header, read without checking the data against them (a
    /// truncated or damaged file still names its tensors); None when the header itself
    /// cannot be read.
    pub fn header_names(path: &Path) -> Option<Vec<String>> {
        let mut file = File::open(path).ok()?;
        let file_len = file.metadata().ok()?.len();
        let mut len_bytes = [0u8; 8];
        read_exact_at(&mut file, 0, &mut len_bytes).ok()?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER_BYTES || header_len > file_len.saturating_sub(8) {
            return None;
        }
        let mut header = vec![0u8; header_len as usize];
        read_exact_at(&mut file, 8, &mut header).ok()?;
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&header).ok()?;
        Some(
            map.into_iter()
                .map(|(k, _)| k)
                .filter(|k| k != "__metadata__")
                .collect(),
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn file_len(&self) -> u64 {
        self.file_len
    }
    pub fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The whole file, mapped read-only.
    pub fn bytes(&self) -> Result<&[u8]> {
        let mapped = self.mmap.get_or_init(|| {
            // SAFETY: the map is read-only; a file truncated underneath us is the one
            // hazard of mmap that no reader can rule out, as with every mmap user.
            unsafe { Mmap::map(&self.file) }.map_err(|e| e.to_string())
        });
        match mapped {
            Ok(m) => Ok(&m[..]),
            Err(e) => Err(Error::new(
                ErrorKind::Io,
                format!("{}: cannot map the file: {e}", self.path.display()),
            )),
        }
    }

    /// The raw bytes of one tensor (bounds were checked when the header was read).
    pub fn data(&self, info: &TensorInfo) -> Result<&[u8]> {
        let bytes = self.bytes()?;
        let end = (info.offset + info.nbytes) as usize;
        bytes.get(info.offset as usize..end).ok_or_else(|| {
            Error::new(
                ErrorKind::Io,
                format!("{} changed size while open", self.path.display()),
            )
        })
    }
}

fn read_exact_at(file: &mut File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

type Header = (BTreeMap<String, TensorInfo>, BTreeMap<String, String>);

/// Parses and checks the JSON header: known dtypes, shape × dtype size = bytes,
/// offsets inside the data section and not overlapping.
fn parse_header(
    header: &[u8],
    data_len: u64,
    data_start: u64,
) -> std::result::Result<Header, String> {
    let text =
        std::str::from_utf8(header).map_err(|_| "the header is not UTF-8 text".to_string())?;
    let json: serde_json::Value = serde_json::from_str(text.trim_end_matches(' '))
        .map_err(|e| format!("the header is not valid JSON ({e})"))?;
    let obj = json.as_object().ok_or("the header is not a JSON object")?;
    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    let mut ranges = Vec::new();
    for (name, entry) in obj {
        if name == "__metadata__" {
            metadata = parse_metadata(entry)?;
            continue;
        }
        let (info, begin) = parse_entry(name, entry, data_len)?;
        if info.nbytes > 0 {
            ranges.push((begin, begin + info.nbytes, name.clone()));
        }
        let offset = data_start + begin;
        tensors.insert(name.clone(), TensorInfo { offset, ..info });
    }
    ranges.sort();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(format!(
                "tensors {:?} and {:?} overlap (bytes {}..{} and {}..{})",
                w[0].2, w[1].2, w[0].0, w[0].1, w[1].0, w[1].1
            ));
        }
    }
    Ok((tensors, metadata))
}

/// The header's `__metadata__`: an object of strings.
fn parse_metadata(
    entry: &serde_json::Value,
) -> std::result::Result<BTreeMap<String, String>, String> {
    let m = entry
        .as_object()
        .ok_or("__metadata__ is not an object of strings")?;
    m.iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .ok_or_else(|| format!("__metadata__ value of {k:?} is not a string"))?;
            Ok((k.clone(), v.to_string()))
        })
        .collect()
}

/// One tensor's header entry, checked against a data section of `data_len` bytes: its info
/// (offset 0: the caller adds where the data starts) and where its bytes begin in the section.
fn parse_entry(
    name: &str,
    entry: &serde_json::Value,
    data_len: u64,
) -> std::result::Result<(TensorInfo, u64), String> {
    let e = entry
        .as_object()
        .ok_or_else(|| format!("tensor {name:?}: entry is not an object"))?;
    let dtype_s = e
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or_else(|| format!("tensor {name:?}: missing \"dtype\""))?;
    let dtype = DType::parse(dtype_s).ok_or_else(|| {
        if VALID_UNSUPPORTED.contains(&dtype_s) {
            format!("{UNSUPPORTED}tensor {name:?} has dtype {dtype_s}, a valid safetensors dtype this program does not read (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL); a CLIP Vision tower's weights are floats, so this file is probably not one")
        } else {
            format!("tensor {name:?}: unknown dtype {dtype_s:?} (known: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)")
        }
    })?;
    let shape = e
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or_else(|| format!("tensor {name:?}: missing \"shape\" array"))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| format!("tensor {name:?}: shape must be non-negative integers"))?;
    let (begin, end) = e
        .get("data_offsets")
        .and_then(|s| s.as_array())
        .filter(|a| a.len() == 2)
        .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)))
        .ok_or_else(|| format!("tensor {name:?}: \"data_offsets\" must be [begin, end]"))?;
    if begin > end {
        return Err(format!(
            "tensor {name:?}: data_offsets [{begin}, {end}] are reversed"
        ));
    }
    if end > data_len {
        return Err(format!(
            "tensor {name:?}: data_offsets end {end} is past the end of the data section ({data_len} bytes)"
        ));
    }
    let numel = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    let expected = numel.and_then(|n| n.checked_mul(dtype.size()));
    if expected != Some(end - begin) {
        return Err(format!(
            "tensor {name:?}: shape {shape:?} of {} needs {} bytes but data_offsets span {}",
            dtype.name(),
            expected.map_or("more than 2^64".to_string(), |b| b.to_string()),
            end - begin
        ));
    }
    let info = TensorInfo {
        dtype,
        shape,
        offset: 0,
        nbytes: end - begin,
    };
    Ok((info, begin))
}
