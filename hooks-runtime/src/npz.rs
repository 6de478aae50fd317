//! `.npz` files that numpy reads as its own: one array per layer, keyed by layer path.
//!
//! Arrays are stored uncompressed with zip64 enabled, so files past 4 GiB work. Writes are
//! atomic: a temporary file in the destination folder, fsynced, then renamed over the target.
//! dtypes: f32, f64, f16 (`<f2`), i64, i32, i16, i8, u8 and bool map one to one; bf16 has no
//! numpy dtype and is written as f32, which holds every bf16 value exactly.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use ndarray_npy::{
    NpzReader, NpzWriter, ReadDataError, ReadNpyError, ReadNpyExt, ReadNpzError, ReadableElement, WritableElement,
};
use py_literal::Value as PyValue;
use tch::{Device, Kind, Tensor};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

use crate::error::{Error, Result};
use crate::store::Activations;

/// Writes `activations` to one `.npz` file at `path` and returns the path written.
///
/// `.npz` is appended when `path` lacks it, and missing parent folders are created. Each tensor is
/// written as it is stored (CPU tensors are not copied; others are copied to the CPU one at a
/// time). On any failure the previous file at `path`, if any, is untouched and no temporary file
/// is left behind.
///
/// ```
/// use hooks_runtime::{load_activations, save_activations, Activations};
/// use tch::Tensor;
///
/// let dir = tempfile::tempdir()?;
/// let mut acts = Activations::new();
/// acts.insert("encoder.layer.0", Tensor::from_slice(&[1.0f32, 2.0]));
/// let path = save_activations(&acts, dir.path().join("acts"))?;
/// assert!(path.ends_with("acts.npz"));
/// assert!(load_activations(&path)?.get("encoder.layer.0").unwrap().equal(&Tensor::from_slice(&[1.0f32, 2.0])));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::InvalidKey`] for a name numpy could not use (empty, containing `/`, or repeated),
/// [`Error::UnsupportedDtype`] for complex or quantized tensors, [`Error::Io`] when writing fails.
pub fn save_activations<'a, K, I>(activations: I, path: impl AsRef<Path>) -> Result<PathBuf>
where
    K: AsRef<str> + 'a,
    I: IntoIterator<Item = (K, &'a Tensor)>,
{
    let arrays = activations.into_iter().map(|(name, t)| (name, NpzArray::Tensor(t)));
    save_with_fault(arrays, path.as_ref(), None, None)
}

/// One array of an `.npz` that [`save_npz`] writes.
#[derive(Clone, Copy, Debug)]
pub enum NpzArray<'a> {
    /// A tensor, stored as [`save_activations`] stores it.
    Tensor(&'a Tensor),
    /// A 1-d array of strings, stored as numpy's fixed-width unicode (`<U{n}`, UTF-32, `n` the
    /// longest string's length in characters), as `numpy.array(strings)` makes it.
    Strings(&'a [String]),
}

/// Writes `arrays` to one `.npz` file at `path`, as [`save_activations`] does, where some arrays
/// may be strings (layer names, labels).
///
/// ```
/// use hooks_runtime::{save_npz, NpzArray};
/// use tch::Tensor;
///
/// let dir = tempfile::tempdir()?;
/// let names = ["model.embed_tokens".to_owned(), "model.layers.0".to_owned()];
/// let values = Tensor::from_slice(&[0.5f32, 0.25]);
/// save_npz([("layers", NpzArray::Strings(&names)), ("values", NpzArray::Tensor(&values))], dir.path().join("out.npz"))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// As [`save_activations`]; [`Error::InvalidKey`] also for a string holding a NUL character
/// (numpy drops trailing NULs, so it would not read back the same).
pub fn save_npz<'a, K, I>(arrays: I, path: impl AsRef<Path>) -> Result<PathBuf>
where
    K: AsRef<str> + 'a,
    I: IntoIterator<Item = (K, NpzArray<'a>)>,
{
    save_with_fault(arrays, path.as_ref(), None, None)
}

/// [`save_npz`], unless `cancel` is raised before the file replaces the one at `path` (Ctrl-C
/// during the write): then the temporary is removed, any earlier file at `path` is left as it
/// was, and the result is [`Error::Interrupted`].
///
/// # Errors
///
/// As [`save_npz`]; [`Error::Interrupted`].
pub fn save_npz_unless<'a, K, I>(arrays: I, path: impl AsRef<Path>, cancel: &AtomicBool) -> Result<PathBuf>
where
    K: AsRef<str> + 'a,
    I: IntoIterator<Item = (K, NpzArray<'a>)>,
{
    save_with_fault(arrays, path.as_ref(), None, Some(cancel))
}

/// [`save_npz`], failing with an I/O error after `fail_after` bytes (for tests), and stopping
/// before the rename when `cancel` is raised.
pub(crate) fn save_with_fault<'a, K, I>(
    arrays: I,
    path: &Path,
    fail_after: Option<u64>,
    cancel: Option<&AtomicBool>,
) -> Result<PathBuf>
where
    K: AsRef<str> + 'a,
    I: IntoIterator<Item = (K, NpzArray<'a>)>,
{
    let arrays: Vec<(K, NpzArray<'a>)> = arrays.into_iter().collect();
    // Validate everything before creating any file.
    for (i, (name, array)) in arrays.iter().enumerate() {
        let name = name.as_ref();
        check_key(name)?;
        if arrays[..i].iter().any(|(n, _)| n.as_ref() == name) {
            return Err(Error::InvalidKey {
                name: name.to_owned(),
                reason: "it appears twice; names must be unique",
            });
        }
        match array {
            NpzArray::Tensor(tensor) => {
                element_kind(name, tensor.kind())?;
            }
            NpzArray::Strings(strings) if strings.iter().any(|s| s.contains('\0')) => {
                return Err(Error::InvalidKey {
                    name: name.to_owned(),
                    reason: "one of its strings holds a NUL character, which numpy would drop",
                });
            }
            NpzArray::Strings(_) => {}
        }
    }
    let path = through_symlink(&with_npz_extension(path))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|source| io_error("cannot create folder", &dir, source))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = new_file_builder()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|source| io_error("cannot create a temporary file in", &dir, source))?;
    keep_mode_of(&path, temp.as_file()).map_err(|source| io_error("cannot set the mode of", &path, source))?;
    // `temp` deletes itself on drop, so every early return below leaves nothing behind.
    let write_err = |source| io_error("cannot write", &path, source);
    {
        let writer = FaultyWriter {
            inner: BufWriter::with_capacity(1 << 20, temp.as_file()),
            left: fail_after,
        };
        // Not dropped on an error: the zip writer's `Drop` would try to finish the archive on a
        // failed file and print a line of its own to stderr before the real error. Its buffers
        // leak on that path, and the temporary is removed all the same.
        let mut npz = ManuallyDrop::new(NpzWriter::new_with_options(
            writer,
            SimpleFileOptions::default()
                .compression_method(CompressionMethod::Stored)
                .large_file(true),
        ));
        for (name, array) in &arrays {
            match array {
                NpzArray::Tensor(tensor) => add_array(&mut npz, name.as_ref(), tensor),
                NpzArray::Strings(strings) => add_strings(&mut npz, name.as_ref(), strings),
            }
            .map_err(write_err)?;
        }
        // `finish` writes the zip directory; dropping the writer instead would swallow its errors.
        let FaultyWriter { inner, .. } = ManuallyDrop::into_inner(npz)
            .finish()
            .map_err(|e| write_err(with_causes(&e)))?;
        inner
            .into_inner()
            .map_err(|e| write_err(e.into_error()))?
            .sync_all()
            .map_err(write_err)?;
    }
    pause_point("npz-rename");
    if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
        // `temp` removes itself; the file at `path`, if any, is untouched.
        return Err(Error::Interrupted);
    }
    temp.persist(&path).map_err(|e| write_err(e.error))?;
    Ok(path)
}

/// A place where a test holds the process for two seconds (`HOOKS_PAUSE_AT=npz-rename`: the
/// `.npz` written and synced to its temporary, not yet renamed), to send it a signal there.
/// Unset, it does nothing. A testing aid, as the dataset folder's crash points are.
fn pause_point(point: &str) {
    if std::env::var("HOOKS_PAUSE_AT").is_ok_and(|at| at == point) {
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// A temporary-file builder whose file gets the mode any new file gets here: `0o666` less the
/// umask (a temporary file is otherwise private, `0o600`, and a rename keeps that mode, so a
/// collaborator could not read the result).
pub(crate) fn new_file_builder() -> tempfile::Builder<'static, 'static> {
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // Created with this mode, so the kernel applies the umask as for any new file.
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    builder
}

/// When `path` already exists, gives `file` its exact mode, so that overwriting a file keeps
/// who may read it.
fn keep_mode_of(path: &Path, file: &File) -> io::Result<()> {
    match fs::metadata(path) {
        Ok(existing) => file.set_permissions(existing.permissions()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads every array of an `.npz` file (ours, or numpy's `savez`) into CPU tensors, in file order.
///
/// # Errors
///
/// [`Error::Io`] when the file cannot be opened, [`Error::BadFile`] when it is not an `.npz`
/// or holds a dtype tch has no kind for.
pub fn load_activations(path: impl AsRef<Path>) -> Result<Activations> {
    let path = path.as_ref();
    let mut out = Activations::new();
    for (name, value) in load_npz(path)? {
        match value {
            NpzValue::Tensor(tensor) => out.insert(name, tensor),
            NpzValue::Strings { .. } => {
                return Err(Error::BadFile {
                    path: path.to_owned(),
                    reason: format!(
                        "array `{name}` holds strings (numpy unicode), not numbers; read the file with `load_npz`"
                    ),
                })
            }
        }
    }
    Ok(out)
}

/// Reads the numeric arrays of an `.npz` file into CPU tensors, in file order, leaving out its
/// string arrays (the `meta.KEY` labels `hooks extract --keep-keys` writes): for readers that
/// want the layers and may meet labels beside them.
///
/// # Errors
///
/// As [`load_activations`].
pub fn load_numeric(path: impl AsRef<Path>) -> Result<Activations> {
    let mut out = Activations::new();
    for (name, value) in load_npz(path)? {
        if let NpzValue::Tensor(tensor) = value {
            out.insert(name, tensor);
        }
    }
    Ok(out)
}

/// Reads one `.npy` file (numbers as a CPU tensor, numpy unicode as strings), as [`load_npz`]
/// reads each array of an `.npz`: label files, vectors.
///
/// # Errors
///
/// [`Error::Io`] when the file cannot be opened, [`Error::BadFile`] when it is not an `.npy` or
/// holds a dtype tch has no kind for.
pub fn load_npy(path: impl AsRef<Path>) -> Result<NpzValue> {
    let path = path.as_ref();
    check_npy_size(path)?;
    let open = || {
        File::open(path)
            .map(BufReader::new)
            .map_err(|source| io_error("cannot open", path, source))
    };
    let bad = |reason: String| Error::BadFile {
        path: path.to_owned(),
        reason,
    };
    macro_rules! try_as {
        ($($ty:ty),*) => {$(
            match ArrayD::<$ty>::read_npy(open()?) {
                Ok(array) => return Ok(NpzValue::Tensor(to_tensor(array))),
                Err(ReadNpyError::WrongDescriptor(_)) => {}
                Err(e) => return Err(bad(format!("not a readable .npy file ({e})"))),
            }
        )*};
    }
    try_as!(f32, f64, i64, i32, i16, i8, u8, bool);
    match ArrayD::<F16>::read_npy(open()?) {
        Ok(array) => return Ok(NpzValue::Tensor(to_tensor(array.mapv(|F16(x)| x)))),
        Err(ReadNpyError::WrongDescriptor(_)) => {}
        Err(e) => return Err(bad(format!("not a readable .npy file ({e})"))),
    }
    match ArrayD::<NumpyString>::read_npy(open()?) {
        Ok(array) => Ok(NpzValue::Strings {
            shape: array.shape().to_vec(),
            width: array.iter().next().map_or(0, |s| s.width),
            strings: array.into_iter().map(|s| s.text).collect(),
        }),
        Err(e) => Err(bad(format!(
            "unsupported dtype ({e}); supported: f32, f64, f16, i64, i32, i16, i8, u8, bool, and unicode strings"
        ))),
    }
}

/// The bytes of one element of numpy dtype `descr` (`<f4`: 4, `<U12`: 48); `None` for a
/// descriptor without a size, or one past `u64`.
pub(crate) fn item_size(descr: &str) -> Option<u64> {
    let digits: String = descr.chars().skip_while(|c| !c.is_ascii_digit()).collect();
    let width: u64 = digits.parse().ok()?;
    if descr.contains('U') {
        width.checked_mul(4)
    } else {
        Some(width)
    }
}

/// From the start of an `.npy` (its magic, version, header length and header), the bytes of the
/// header and of the data its `descr` and `shape` describe; `Err` with the reason for a header
/// that cannot be read, or a size past `u64`. Checked before any array is allocated, so that a
/// header that lies (a shape of 10⁹ rows in a small file, a cut-short file) is an error, never
/// an allocation that aborts or a read of memory past the data.
fn npy_sizes(head: &[u8]) -> std::result::Result<(u64, u64), String> {
    let bad = |why: &str| Err(format!("its `.npy` header {why}"));
    if head.len() < 10 || &head[..6] != b"\x93NUMPY" {
        return bad("is missing (no numpy magic)");
    }
    let (len_bytes, start) = if head[6] == 1 { (2, 8) } else { (4, 8) };
    let Some(raw) = head.get(start..start + len_bytes) else {
        return bad("is cut short");
    };
    let header_len = raw.iter().rev().fold(0u64, |n, &b| (n << 8) | u64::from(b));
    let end = (start + len_bytes) as u64 + header_len;
    let Some(text) = head.get(start + len_bytes..usize::try_from(end).unwrap_or(usize::MAX)) else {
        return bad("is cut short");
    };
    let text = std::str::from_utf8(text).map_err(|_| "its `.npy` header is not text".to_owned())?;
    let dict: PyValue = text
        .trim()
        .parse()
        .map_err(|_| "its `.npy` header is not a Python literal".to_owned())?;
    let PyValue::Dict(entries) = dict else {
        return bad("is not a dict");
    };
    let get = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| matches!(k, PyValue::String(s) if s == key))
            .map(|(_, v)| v)
    };
    let Some(PyValue::String(descr)) = get("descr") else {
        return bad("has no `descr` string");
    };
    let Some(PyValue::Tuple(dims)) = get("shape") else {
        return bad("has no `shape` tuple");
    };
    let mut bytes = item_size(descr).ok_or_else(|| format!("its dtype `{descr}` has no item size"))?;
    for dim in dims {
        let n = match dim {
            PyValue::Integer(n) => u64::try_from(n.clone()).map_err(|_| format!("its shape holds {n}"))?,
            other => return Err(format!("its shape holds {other:?}")),
        };
        bytes = bytes
            .checked_mul(n)
            .ok_or_else(|| "its shape describes more bytes than any file holds".to_owned())?;
    }
    Ok((end, bytes))
}

/// A lone `.npy` must hold the bytes its header describes.
fn check_npy_size(path: &Path) -> Result<()> {
    let bad = |reason: String| Error::BadFile {
        path: path.to_owned(),
        reason,
    };
    let mut file = File::open(path).map_err(|source| io_error("cannot open", path, source))?;
    let len = file
        .metadata()
        .map_err(|source| io_error("cannot read", path, source))?
        .len();
    let mut head = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(&mut file, 1 << 20), &mut head)
        .map_err(|source| io_error("cannot read", path, source))?;
    let (header, data) = npy_sizes(&head).map_err(bad)?;
    if header.saturating_add(data) != len {
        return Err(bad(format!(
            "its header describes {} bytes of data, but the file holds {} after its header (cut short, or not written by numpy)",
            data,
            len.saturating_sub(header)
        )));
    }
    Ok(())
}

/// Each array of an `.npz` must hold the bytes its header describes (checked from the zip's
/// own sizes before any array is read).
fn check_npz_sizes(path: &Path) -> Result<()> {
    let bad = |reason: String| Error::BadFile {
        path: path.to_owned(),
        reason,
    };
    let file = File::open(path).map_err(|source| io_error("cannot open", path, source))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| bad(format!("not an .npz file ({e})")))?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| bad(format!("not an .npz file ({e})")))?;
        let (name, size) = (entry.name().to_owned(), entry.size());
        let mut head = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(&mut entry, 1 << 20), &mut head)
            .map_err(|e| bad(format!("array `{name}`: {e}")))?;
        let (header, data) = npy_sizes(&head).map_err(|e| bad(format!("array `{name}`: {e}")))?;
        if header.saturating_add(data) != size {
            return Err(bad(format!(
                "array `{name}`: its header describes {data} bytes of data, but the archive holds {} (cut short, or not written by numpy)",
                size.saturating_sub(header)
            )));
        }
    }
    Ok(())
}

/// One array read by [`load_npz`].
#[derive(Debug)]
pub enum NpzValue {
    /// Numbers, as [`load_activations`] reads them.
    Tensor(Tensor),
    /// numpy's fixed-width unicode (`<U{width}`).
    Strings {
        /// The array's shape (`[n]` for a list of names).
        shape: Vec<usize>,
        /// The `n` of `<U{n}`: characters per element, padding included.
        width: usize,
        /// Each element without its padding, in C order.
        strings: Vec<String>,
    },
}

/// Reads every array of an `.npz` file, numbers as CPU tensors and numpy unicode arrays as
/// strings, in file order: what [`save_npz`] writes, or numpy's `savez`.
///
/// # Errors
///
/// As [`load_activations`].
pub fn load_npz(path: impl AsRef<Path>) -> Result<Vec<(String, NpzValue)>> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| io_error("cannot open", path, source))?;
    let bad = |reason: String| Error::BadFile {
        path: path.to_owned(),
        reason,
    };
    check_npz_sizes(path)?;
    let mut npz = NpzReader::new(BufReader::new(file)).map_err(|e| bad(format!("not an .npz file ({e})")))?;
    let names = npz.names().map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::with_capacity(names.len());
    for (index, name) in names.into_iter().enumerate() {
        let value = read_array(&mut npz, index).map_err(|e| bad(format!("array `{name}`: {e}")))?;
        out.push((name, value));
    }
    Ok(out)
}

/// The file a write to `path` should replace: the target of a symbolic link (followed to the end
/// of a chain), so that the rename that makes the write atomic replaces the file the link points
/// to, not the link.
fn through_symlink(path: &Path) -> Result<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&path).map_err(|source| io_error("cannot read the link", &path, source))?;
                path = match path.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(path),
        }
    }
    Err(io_error(
        "cannot follow the links at",
        &path,
        io::Error::other("too many levels of symbolic links"),
    ))
}

/// `path`, with `.npz` added unless it ends in it (in any case: `x.NPZ` stays `x.NPZ`).
fn with_npz_extension(path: &Path) -> PathBuf {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz")) {
        path.to_path_buf()
    } else {
        let mut s = path.as_os_str().to_owned();
        s.push(".npz");
        PathBuf::from(s)
    }
}

fn check_key(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty; give every array a name"
    } else if name.contains('/') || name.contains('\\') {
        "numpy cannot load a key containing `/` or `\\`; use `.` to separate path segments"
    } else if name.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(Error::InvalidKey {
        name: name.to_owned(),
        reason,
    })
}

/// An I/O error whose message carries the whole chain of causes (zip's own message stops at
/// "i/o error", hiding "No space left on device").
fn with_causes(error: &dyn std::error::Error) -> io::Error {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    io::Error::other(message)
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// How a tch kind is stored.
#[derive(Clone, Copy)]
enum Element {
    F32,
    F64,
    F16,
    /// bf16, widened to f32.
    Bf16AsF32,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

fn element_kind(name: &str, kind: Kind) -> Result<Element> {
    Ok(match kind {
        Kind::Float => Element::F32,
        Kind::Double => Element::F64,
        Kind::Half => Element::F16,
        Kind::BFloat16 => Element::Bf16AsF32,
        Kind::Int64 => Element::I64,
        Kind::Int => Element::I32,
        Kind::Int16 => Element::I16,
        Kind::Int8 => Element::I8,
        Kind::Uint8 => Element::U8,
        Kind::Bool => Element::Bool,
        other => {
            return Err(Error::UnsupportedDtype {
                layer: name.to_owned(),
                kind: other,
            })
        }
    })
}

fn add_array<W: Write + Seek>(npz: &mut NpzWriter<W>, name: &str, tensor: &Tensor) -> io::Result<()> {
    let element = element_kind(name, tensor.kind()).map_err(io::Error::other)?;
    // Only a CPU, contiguous tensor of the stored kind can be viewed in place.
    let stored_kind = match element {
        Element::Bf16AsF32 => Kind::Float,
        _ => tensor.kind(),
    };
    let owned;
    let cpu: &Tensor = if tensor.device() == Device::Cpu && tensor.is_contiguous() && tensor.kind() == stored_kind {
        tensor
    } else {
        let _no_grad = tch::no_grad_guard();
        owned = tensor
            .f_to_device(Device::Cpu)
            .and_then(|t| t.f_to_kind(stored_kind))
            .and_then(|t| t.f_contiguous())
            .map_err(io::Error::other)?;
        &owned
    };
    let add = |npz: &mut NpzWriter<W>| -> std::result::Result<(), ndarray_npy::WriteNpzError> {
        // SAFETY: `cpu` is a contiguous CPU tensor of the kind matching each type below, alive
        // for this whole call, and not written to while the view exists.
        unsafe {
            match element {
                Element::F32 | Element::Bf16AsF32 => npz.add_array(name, &view::<f32>(cpu)),
                Element::F64 => npz.add_array(name, &view::<f64>(cpu)),
                Element::F16 => npz.add_array(name, &view::<F16>(cpu)),
                Element::I64 => npz.add_array(name, &view::<i64>(cpu)),
                Element::I32 => npz.add_array(name, &view::<i32>(cpu)),
                Element::I16 => npz.add_array(name, &view::<i16>(cpu)),
                Element::I8 => npz.add_array(name, &view::<i8>(cpu)),
                Element::U8 => npz.add_array(name, &view::<u8>(cpu)),
                Element::Bool => npz.add_array(name, &view::<Bool8>(cpu)),
            }
        }
    };
    add(npz).map_err(|e| with_causes(&e))
}

fn add_strings<W: Write + Seek>(npz: &mut NpzWriter<W>, name: &str, strings: &[String]) -> io::Result<()> {
    // numpy's `<U0` is not a dtype it writes; an array of empty strings is `<U1`.
    let width = strings.iter().map(|s| s.chars().count()).max().unwrap_or(0).max(1);
    let array = ndarray::Array1::from_iter(strings.iter().map(|s| NumpyStr(s.as_str())));
    UNICODE_WIDTH.with(|w| w.set(width));
    let result = npz.add_array(name, &array).map_err(|e| with_causes(&e));
    UNICODE_WIDTH.with(|w| w.set(1));
    result
}

thread_local! {
    /// The width `n` of the `<U{n}` array being written: one per array, but ndarray-npy asks the
    /// element type for its descriptor, so [`add_strings`] sets it for the one call that writes
    /// the array (on this thread, start to end).
    static UNICODE_WIDTH: std::cell::Cell<usize> = const { std::cell::Cell::new(1) };
}

/// One element of numpy's fixed-width unicode: the string's characters as UTF-32LE, padded with
/// NULs to [`UNICODE_WIDTH`].
#[derive(Clone, Copy, Debug)]
struct NumpyStr<'a>(&'a str);

impl WritableElement for NumpyStr<'_> {
    fn type_descriptor() -> PyValue {
        PyValue::String(format!("<U{}", UNICODE_WIDTH.with(std::cell::Cell::get)))
    }

    fn write<W: Write>(&self, mut writer: W) -> std::result::Result<(), ndarray_npy::WriteDataError> {
        let width = UNICODE_WIDTH.with(std::cell::Cell::get);
        let mut bytes = Vec::with_capacity(4 * width);
        for c in self.0.chars() {
            bytes.extend_from_slice(&u32::from(c).to_le_bytes());
        }
        bytes.resize(4 * width, 0);
        writer.write_all(&bytes)?;
        Ok(())
    }

    fn write_slice<W: Write>(slice: &[Self], mut writer: W) -> std::result::Result<(), ndarray_npy::WriteDataError> {
        for s in slice {
            s.write(&mut writer)?;
        }
        Ok(())
    }
}

/// A view of a tensor's data without copying it.
///
/// # Safety
///
/// `t` must be a contiguous CPU tensor whose elements have `T`'s size and representation, and it
/// must outlive the view and not be written to while the view exists.
unsafe fn view<T>(t: &Tensor) -> ArrayViewD<'_, T> {
    let shape: Vec<usize> = t.size().iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
    let numel: usize = shape.iter().product();
    let ptr = if numel == 0 {
        NonNull::<T>::dangling().as_ptr()
    } else {
        t.data_ptr().cast::<T>()
    };
    // SAFETY: forwarded to the caller; for an empty tensor the dangling pointer is never read.
    unsafe { ArrayViewD::from_shape_ptr(IxDyn(&shape), ptr.cast_const()) }
}

fn read_array(npz: &mut NpzReader<BufReader<File>>, index: usize) -> std::result::Result<NpzValue, String> {
    // ndarray-npy reads into a concrete element type and rejects the wrong one by its header
    // before reading data, so trying each type in turn costs a header parse per miss.
    macro_rules! try_as {
        ($($ty:ty),*) => {$(
            match npz.by_index::<ndarray::OwnedRepr<$ty>, IxDyn>(index) {
                Ok(array) => return Ok(NpzValue::Tensor(to_tensor(array))),
                Err(ReadNpzError::Npy(ndarray_npy::ReadNpyError::WrongDescriptor(_))) => {}
                Err(e) => return Err(e.to_string()),
            }
        )*};
    }
    try_as!(f32, f64, i64, i32, i16, i8, u8, bool);
    match npz.by_index::<ndarray::OwnedRepr<F16>, IxDyn>(index) {
        Ok(array) => return Ok(NpzValue::Tensor(to_tensor(array.mapv(|F16(x)| x)))),
        Err(ReadNpzError::Npy(ndarray_npy::ReadNpyError::WrongDescriptor(_))) => {}
        Err(e) => return Err(e.to_string()),
    }
    match npz.by_index::<ndarray::OwnedRepr<NumpyString>, IxDyn>(index) {
        Ok(array) => Ok(NpzValue::Strings {
            shape: array.shape().to_vec(),
            width: array.iter().next().map_or(0, |s| s.width),
            strings: array.into_iter().map(|s| s.text).collect(),
        }),
        Err(e) => Err(format!(
            "unsupported dtype ({e}); supported: f32, f64, f16, i64, i32, i16, i8, u8, bool, and unicode strings"
        )),
    }
}

/// An element of numpy's fixed-width unicode (`<U{n}`), read: its UTF-32LE characters up to the
/// first NUL, and the array's `n`.
#[derive(Clone, Debug, Default, PartialEq)]
struct NumpyString {
    text: String,
    width: usize,
}

impl ReadableElement for NumpyString {
    fn read_to_end_exact_vec<R: io::Read>(
        mut reader: R,
        type_desc: &PyValue,
        len: usize,
    ) -> std::result::Result<Vec<Self>, ReadDataError> {
        let width = match type_desc {
            PyValue::String(desc) => desc
                .strip_prefix("<U")
                .or_else(|| desc.strip_prefix("|U"))
                .and_then(|n| n.parse::<usize>().ok()),
            _ => None,
        }
        .ok_or_else(|| ReadDataError::WrongDescriptor(type_desc.clone()))?;
        if width == 0 {
            return Ok(vec![NumpyString::default(); len]);
        }
        let mut bytes = vec![
            0u8;
            width
                .checked_mul(4)
                .and_then(|w| w.checked_mul(len))
                .ok_or(ReadDataError::MissingData)?
        ];
        reader.read_exact(&mut bytes).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => ReadDataError::MissingData,
            _ => ReadDataError::Io(e),
        })?;
        let mut extra = Vec::new();
        let left = reader.read_to_end(&mut extra).map_err(ReadDataError::Io)?;
        if left > 0 {
            return Err(ReadDataError::ExtraBytes(left));
        }
        bytes
            .chunks_exact(4 * width)
            .take(len)
            .map(|element| {
                element
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .take_while(|&c| c != 0)
                    .map(|c| {
                        char::from_u32(c)
                            .ok_or_else(|| ReadDataError::ParseData(format!("{c:#x} is not a character").into()))
                    })
                    .collect::<std::result::Result<String, _>>()
                    .map(|text| NumpyString { text, width })
            })
            .collect()
    }
}

fn to_tensor<T: tch::kind::Element + Clone>(array: ArrayD<T>) -> Tensor {
    let shape: Vec<i64> = array
        .shape()
        .iter()
        .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
        .collect();
    let data = array.as_standard_layout();
    let slice = data.as_slice().unwrap_or(&[]);
    Tensor::from_slice(slice).reshape(shape)
}

/// IEEE half precision, stored as numpy's `<f2` (ndarray-npy has no f16).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(transparent)]
struct F16(half::f16);

impl WritableElement for F16 {
    fn type_descriptor() -> PyValue {
        PyValue::String("<f2".into())
    }

    fn write<W: Write>(&self, mut writer: W) -> std::result::Result<(), ndarray_npy::WriteDataError> {
        writer.write_all(&self.0.to_le_bytes())?;
        Ok(())
    }

    fn write_slice<W: Write>(slice: &[Self], mut writer: W) -> std::result::Result<(), ndarray_npy::WriteDataError> {
        if cfg!(target_endian = "little") {
            // SAFETY: `F16` is `repr(transparent)` over `half::f16`, two bytes with no padding.
            let bytes =
                unsafe { std::slice::from_raw_parts(slice.as_ptr().cast::<u8>(), std::mem::size_of_val(slice)) };
            writer.write_all(bytes)?;
        } else {
            for x in slice {
                x.write(&mut writer)?;
            }
        }
        Ok(())
    }
}

/// numpy's `bool` (`|b1`), viewed as the byte it is stored in.
///
/// A tensor of `Kind::Bool` can hold bytes other than 0 and 1 (one reinterpreted from `Uint8`,
/// say), and a Rust `bool` holding such a byte is undefined behaviour, so the writer never views
/// the data as `bool`. It writes every nonzero byte as 1, the only true value numpy produces.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(transparent)]
struct Bool8(u8);

impl WritableElement for Bool8 {
    fn type_descriptor() -> PyValue {
        PyValue::String("|b1".into())
    }

    fn write<W: Write>(&self, mut writer: W) -> std::result::Result<(), ndarray_npy::WriteDataError> {
        writer.write_all(&[u8::from(self.0 != 0)])?;
        Ok(())
    }

    fn write_slice<W: Write>(slice: &[Self], mut writer: W) -> std::result::Result<(), ndarray_npy::WriteDataError> {
        // SAFETY: `Bool8` is `repr(transparent)` over `u8`: one byte, any value valid.
        let bytes = unsafe { std::slice::from_raw_parts(slice.as_ptr().cast::<u8>(), slice.len()) };
        if bytes.iter().all(|&b| b <= 1) {
            writer.write_all(bytes)?;
        } else {
            let normalised: Vec<u8> = bytes.iter().map(|&b| u8::from(b != 0)).collect();
            writer.write_all(&normalised)?;
        }
        Ok(())
    }
}

impl ReadableElement for F16 {
    fn read_to_end_exact_vec<R: io::Read>(
        mut reader: R,
        type_desc: &PyValue,
        len: usize,
    ) -> std::result::Result<Vec<Self>, ReadDataError> {
        let from_bytes: fn([u8; 2]) -> half::f16 = match type_desc {
            PyValue::String(s) if s == "<f2" || (cfg!(target_endian = "little") && s == "=f2") => {
                half::f16::from_le_bytes
            }
            PyValue::String(s) if s == ">f2" => half::f16::from_be_bytes,
            other => return Err(ReadDataError::WrongDescriptor(other.clone())),
        };
        let mut bytes = vec![0u8; len * 2];
        reader.read_exact(&mut bytes).map_err(|_| ReadDataError::MissingData)?;
        let mut extra = [0u8; 1];
        if reader.read(&mut extra)? != 0 {
            return Err(ReadDataError::ExtraBytes(1));
        }
        Ok(bytes.chunks_exact(2).map(|b| F16(from_bytes([b[0], b[1]]))).collect())
    }
}

/// Passes writes through until `left` bytes are used up, then fails: fault injection for tests.
struct FaultyWriter<W> {
    inner: W,
    left: Option<u64>,
}

impl<W: Write> Write for FaultyWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(left) = &mut self.left {
            if *left == 0 {
                return Err(io::Error::other("injected write failure"));
            }
            let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
            let written = self.inner.write(&buf[..n])?;
            *left -= written as u64;
            return Ok(written);
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Seek> Seek for FaultyWriter<W> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tensor {
        Tensor::arange(1 << 16, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acts.npz");
        fs::write(&path, b"previous contents").unwrap();
        let t = sample();
        for fail_after in [0, 10, 1000, 200_000] {
            let err = save_with_fault(
                [("a", NpzArray::Tensor(&t)), ("b", NpzArray::Tensor(&t))],
                &path,
                Some(fail_after),
                None,
            )
            .unwrap_err();
            assert!(err.to_string().contains("injected write failure"), "{err}");
            assert_eq!(fs::read(&path).unwrap(), b"previous contents");
            let names: Vec<_> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["acts.npz"], "a temporary file was left behind");
        }
        // And without a fault the same call replaces the file.
        save_with_fault([("a", NpzArray::Tensor(&t))], &path, None, None).unwrap();
        assert!(load_activations(&path).unwrap().get("a").unwrap().equal(&t));
    }

    /// A raised cancel flag (Ctrl-C during the write) leaves the previous file untouched and no
    /// temporary; `x.NPZ` is an `.npz` path already, in any case.
    #[test]
    fn a_cancelled_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acts.NPZ");
        fs::write(&path, b"previous contents").unwrap();
        let t = sample();
        let cancel = AtomicBool::new(true);
        let err = save_npz_unless([("a", NpzArray::Tensor(&t))], &path, &cancel).unwrap_err();
        assert!(matches!(err, Error::Interrupted), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"previous contents");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["acts.NPZ"], "a temporary file was left behind");
        cancel.store(false, Ordering::SeqCst);
        let written = save_npz_unless([("a", NpzArray::Tensor(&t))], &path, &cancel).unwrap();
        assert_eq!(written, path, "`.NPZ` is not suffixed again");
        assert!(load_activations(&path).unwrap().get("a").unwrap().equal(&t));
    }

    /// The umask of this process, from `/proc/self/status` (reading it with `umask(2)` would
    /// change it for every thread while the tests run).
    #[cfg(target_os = "linux")]
    fn umask() -> u32 {
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).unwrap()
    }

    /// A new file gets `0o666` less the umask, as `touch` would give it; an overwritten file
    /// keeps its own mode.
    #[cfg(target_os = "linux")]
    #[test]
    fn files_get_the_umask_mode_and_overwrites_keep_theirs() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let t = sample();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;

        let new = save_activations([("a", &t)], dir.path().join("new")).unwrap();
        assert_eq!(mode(&new), 0o666 & !umask(), "a new file");

        let shared = dir.path().join("shared.npz");
        fs::write(&shared, b"old").unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o640)).unwrap();
        save_activations([("a", &t)], &shared).unwrap();
        assert_eq!(mode(&shared), 0o640, "an overwritten file");
        assert!(load_activations(&shared).unwrap().get("a").unwrap().equal(&t));
    }

    /// Writing through a symbolic link replaces the file it points to and keeps the link.
    #[cfg(unix)]
    #[test]
    fn a_symlink_is_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.npz");
        fs::write(&target, b"old").unwrap();
        let link = dir.path().join("link.npz");
        std::os::unix::fs::symlink("real.npz", &link).unwrap();
        let t = sample();
        save_activations([("a", &t)], &link).unwrap();
        assert!(
            fs::symlink_metadata(&link).unwrap().file_type().is_symlink(),
            "the link stays"
        );
        assert!(load_activations(&target).unwrap().get("a").unwrap().equal(&t));
    }

    /// A bool tensor reinterpreted from bytes holds values other than 0 and 1; each is written as
    /// numpy's `True` (and ndarray-npy's reader, which rejects any other byte, accepts the file).
    #[test]
    fn bool_bytes_other_than_0_and_1_are_written_as_true() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = Tensor::from_slice(&[0u8, 1, 2, 255, 0, 128]);
        let flags = bytes.view_dtype(Kind::Bool);
        let path = save_activations([("flags", &flags)], dir.path().join("flags")).unwrap();
        let read = load_activations(&path).unwrap();
        let read = read.get("flags").unwrap();
        assert_eq!(read.kind(), Kind::Bool);
        let values = Vec::<u8>::try_from(read.to_kind(Kind::Uint8)).unwrap();
        assert_eq!(values, [0, 1, 1, 1, 0, 1]);
    }

    #[test]
    fn extension_is_appended_only_when_missing() {
        assert_eq!(with_npz_extension(Path::new("out/acts")), Path::new("out/acts.npz"));
        assert_eq!(with_npz_extension(Path::new("acts.npz")), Path::new("acts.npz"));
        assert_eq!(with_npz_extension(Path::new("acts.v2")), Path::new("acts.v2.npz"));
    }
}
