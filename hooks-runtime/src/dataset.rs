//! The dataset folder: an extraction streamed to disk, one `.npy` per layer that numpy opens
//! memory-mapped, resumable after a crash, joinable from shards.
//!
//! ```text
//! DIR/
//!   manifest.json            what was asked (config), which part (shard), how far it got (done)
//!   <layer>.npy              per sample [N, ...] (pooled, or without a token axis), or per
//!                            real token [n_tokens, ...] (unpooled)
//!   <pattern>.npy            attention probabilities: per sample its [heads, T_i, T_i] block,
//!                            flattened, one after another: [Σ_i heads·T_i²] (see `Rows::Patterns`)
//!   offsets.npy              int64 [N + 1]: sample i is token rows offsets[i]:offsets[i+1]
//!   input_ids.npy            int64 [n_tokens]: the real tokens, in order
//!   sample_index.npy         int64 [N]: each sample's 0-based line in the input file, when the
//!                            writer was given it (see [`DatasetWriter::set_columns`])
//!   meta.<key>.npy           [N]: a key of the input's JSON lines (int64, float64, bool, <U{n}),
//!                            when given
//!   .lock                    while a run holds the folder: its pid
//! ```
//!
//! A run holds an exclusive lock on the folder (`flock` on `.lock`) from before it reads the
//! manifest to its end, and removes the file when it is done: a second run on the folder
//! (extract, resume, `--overwrite`, merge) is refused meanwhile, naming the holder's pid. The
//! operating system releases the lock when its process ends, however it ends, so the `.lock` a
//! killed run leaves never blocks.
//!
//! Every `.npy` starts with a 128-byte header (numpy's format 1.0), reserved so that it never
//! moves the data. A window's bytes are appended to every file, each header rewritten in place to
//! describe the rows written so far, and all of it synced before `manifest.json` (replaced
//! atomically) says they are done: at every manifest commit, numpy opens each file of a running or
//! killed folder (`mmap_mode="r"` too) with the rows the manifest counts, equal to the first rows
//! of the finished run's. After a crash, a rerun cuts each file back to what the manifest counts
//! (and its header with it) and goes on from there, and the finished folder is byte for byte the
//! one an uninterrupted run writes.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::columns::{is_sample_column, SampleColumn};
use crate::error::{Error, Result};
use crate::extract::{ActivationSink, Chunk};
use crate::npz::item_size;
use crate::pool::Pool;

/// The elements of a [`Rows::Patterns`] file of `bytes` bytes (header included).
fn pattern_elements(info: &ArrayInfo, bytes: Option<u64>) -> i64 {
    let elt = item_size(&info.descr).unwrap_or(4).max(1);
    i64::try_from(bytes.unwrap_or(HEADER).saturating_sub(HEADER) / elt).unwrap_or(i64::MAX)
}

/// The size of every `.npy` header this module writes: a multiple of 64, as numpy aligns it, and
/// of every element size, so that the data starts element-aligned.
const HEADER: u64 = 128;

/// The manifest's `format` field.
const FORMAT: &str = "hooks-dataset";

/// The lock file of a folder.
const LOCK: &str = ".lock";

/// An exclusive lock on a dataset folder, held while the value lives: `DIR/.lock`, locked with
/// `flock` and holding the holder's pid. Dropped, it removes the file (still holding the lock)
/// and releases it; the operating system releases it when the process ends however it ends, so
/// the file a killed process leaves never blocks.
#[derive(Debug)]
pub struct FolderLock {
    file: File,
    path: PathBuf,
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        // Removed before the lock is released (when `file` closes): a run that opens `.lock`
        // after this makes a new one, and the folder is this holder's no longer.
        let _ = fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

impl FolderLock {
    /// Locks the existing folder `dir`.
    ///
    /// # Errors
    ///
    /// [`Error::FolderInUse`] when another run holds it (naming its pid), [`Error::Io`] when the
    /// lock file cannot be created or locked.
    pub fn acquire(dir: &Path) -> Result<FolderLock> {
        let path = dir.join(LOCK);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("cannot create", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(Error::FolderInUse {
                    dir: dir.to_owned(),
                    pid: holder.trim().parse().ok(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io("cannot lock", &path, e)),
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(|e| io("cannot write", &path, e))?;
        Ok(FolderLock { file, path })
    }
}

/// How a layer's rows are laid out in its `.npy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rows {
    /// One row per sample: `[N, ...]`.
    Samples,
    /// One row per real token: `[n_tokens, ...]`, split by `offsets.npy`.
    Tokens,
    /// Attention probabilities, each sample's `[heads, T_i, T_i]` (real tokens only) flattened,
    /// one after another: a 1-D `[Σ_i heads·T_i²]`. With `T_i` from `offsets.npy` and `heads` the
    /// manifest's `row_shape[0]`, sample `i` starts at `heads · Σ_{j<i} T_j²`.
    Patterns,
    /// A sparse layer's row pointers, scipy's CSR `indptr`: `NAME.indptr.npy`, int64
    /// `[n_tokens + 1]` from 0, one row per real token; `row_shape` is `[width]`, the dense
    /// row's. Row `r`'s nonzeros are `indptr[r]..indptr[r + 1]` of `NAME.indices.npy` (int32
    /// columns) and `NAME.data.npy` (float32 values), both [`Rows::Nonzeros`], so that
    /// `scipy.sparse.csr_matrix((data, indices, indptr), shape=(n_tokens, width))` reads it.
    SparseTokens,
    /// As [`Rows::SparseTokens`], one row per sample (`[N + 1]`).
    SparseSamples,
    /// A sparse layer's column indices or values: 1-D `[nnz]` (see [`Rows::SparseTokens`]).
    Nonzeros,
}

impl Rows {
    /// The rows a dense reader of the layer sees: [`Rows::Tokens`] for [`Rows::SparseTokens`],
    /// [`Rows::Samples`] for [`Rows::SparseSamples`], the layout itself otherwise.
    #[must_use]
    pub fn dense(self) -> Rows {
        match self {
            Rows::SparseTokens => Rows::Tokens,
            Rows::SparseSamples => Rows::Samples,
            other => other,
        }
    }

    fn is_sparse(self) -> bool {
        matches!(self, Rows::SparseTokens | Rows::SparseSamples)
    }
}

/// The three files of a sparse layer `layer`: its row pointers, column indices, values.
fn sparse_files(layer: &str) -> [String; 3] {
    [
        format!("{layer}.indptr.npy"),
        format!("{layer}.indices.npy"),
        format!("{layer}.data.npy"),
    ]
}

/// Whether a file starts with one int64 0 before any window (`offsets.npy`, a sparse layer's
/// row pointers).
fn starts_with_zero(name: &str, info: Option<&ArrayInfo>) -> bool {
    name == "offsets.npy" || info.is_some_and(|i| i.rows.is_sparse())
}

/// One array of the folder, as the manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayInfo {
    /// numpy's dtype string (`<f4`).
    pub descr: String,
    /// Every dim but the first.
    pub row_shape: Vec<i64>,
    /// The layout of its rows.
    pub rows: Rows,
}

/// The part of the input a folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// `K` of `--shard K/N`, from 0.
    pub index: usize,
    /// `N`.
    pub count: usize,
    /// The first item of the input this shard holds.
    pub first: usize,
    /// One past its last.
    pub end: usize,
}

/// How far a folder got.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// Samples written and synced.
    pub samples: usize,
    /// Their real tokens.
    pub tokens: u64,
    /// Each file's length in bytes, header included.
    pub bytes: BTreeMap<String, u64>,
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `hooks-dataset`.
    pub format: String,
    /// The layout's version, 1.
    pub version: u32,
    /// What the run was asked to do (model, layers, pooling, input, ...): a rerun must ask the
    /// same to resume.
    pub config: serde_json::Value,
    /// The part of the input this folder holds; `None` for all of it.
    pub shard: Option<Shard>,
    /// How many samples the folder will hold when complete.
    pub samples: usize,
    /// The arrays, by file name (`encoder.layer.3.output.npy`), once the first window fixed them.
    pub arrays: BTreeMap<String, ArrayInfo>,
    /// Progress.
    pub done: Done,
    /// Whether every sample is written and the headers are final.
    pub complete: bool,
}

impl Manifest {
    /// How layer `layer`'s rows are laid out (a sparse layer's as its row pointers say), if the
    /// folder holds it.
    #[must_use]
    pub fn rows_of(&self, layer: &str) -> Option<Rows> {
        self.arrays
            .get(&format!("{layer}.npy"))
            .or_else(|| {
                self.arrays
                    .get(&format!("{layer}.indptr.npy"))
                    .filter(|i| i.rows.is_sparse())
            })
            .map(|info| info.rows)
    }

    /// The first difference between this manifest's request and `other`'s, as `(what, ours,
    /// theirs)`.
    fn differs_from(&self, other: &Manifest) -> Option<(String, String, String)> {
        if let Some(found) = first_difference("", &self.config, &other.config) {
            return Some(found);
        }
        if self.shard != other.shard {
            let shard = |s: &Option<Shard>| {
                s.map_or_else(
                    || "none".to_owned(),
                    |s| format!("{}/{}, samples {}..{}", s.index, s.count, s.first, s.end),
                )
            };
            return Some(("shard".into(), shard(&self.shard), shard(&other.shard)));
        }
        if self.samples != other.samples {
            return Some(("samples".into(), self.samples.to_string(), other.samples.to_string()));
        }
        None
    }
}

/// The first difference between two JSON values, as `(dotted path, ours, theirs)`: objects are
/// compared key by key, in key order, anything else whole.
fn first_difference(
    path: &str,
    ours: &serde_json::Value,
    theirs: &serde_json::Value,
) -> Option<(String, String, String)> {
    use serde_json::Value;
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            keys.into_iter().find_map(|key| {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => first_difference(&at, x, y),
                    (x, y) => {
                        let show = |v: Option<&Value>| v.map_or_else(|| "nothing".to_owned(), ToString::to_string);
                        Some((at, show(x), show(y)))
                    }
                }
            })
        }
        (a, b) if a == b => None,
        (a, b) => Some((path.to_owned(), a.to_string(), b.to_string())),
    }
}

/// Writes an extraction into a dataset folder, window by window: an [`ActivationSink`].
///
/// ```no_run
/// # fn main() -> hooks_runtime::Result<()> {
/// # let (model, items) = (unimplemented!() as &hooks_runtime::Unmasked<'static, tch::nn::Linear>, Vec::new());
/// use hooks_runtime::{DatasetWriter, Extractor};
///
/// let config = serde_json::json!({ "layers": ["encoder.layer.3.output"] });
/// let mut writer = DatasetWriter::create("acts".as_ref(), config, None, items.len(), false)?;
/// let skip = writer.done_samples();             // > 0 when resuming an interrupted run
/// Extractor::new().run_into(model, &["encoder.layer.3.output"], &items, skip, &mut writer)?;
/// writer.finish()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DatasetWriter {
    dir: PathBuf,
    manifest: Manifest,
    /// Windows written by this process (for the crash points of the tests).
    windows: usize,
    /// For a folder this writer started (not a resumed one): whether it also created the folder.
    fresh: Option<bool>,
    /// Per-sample columns written beside the layers, one value per sample of the folder.
    columns: Vec<(String, SampleColumn)>,
    /// The layers written sparse (CSR), once the first window fixes the layout.
    sparse: Vec<String>,
    /// The folder's exclusive lock, for the writer's life.
    _lock: FolderLock,
}

impl DatasetWriter {
    /// Opens `dir` for an extraction of `samples` samples described by `config` (any JSON the
    /// caller wants a rerun compared on: model, layers, pooling, input): a new folder, or the
    /// folder of an interrupted run of the same request, which goes on where it stopped
    /// ([`done_samples`](Self::done_samples)).
    ///
    /// # Errors
    ///
    /// [`Error::FolderInUse`] when another run holds the folder's lock (see the module docs);
    /// [`Error::DatasetMismatch`] when `dir` holds a run of another request (naming the first
    /// difference) and `overwrite` is false; [`Error::BadFile`] when `dir` is a non-empty folder
    /// without a `manifest.json`, or its manifest is unreadable; [`Error::Io`].
    pub fn create(
        dir: &Path,
        config: serde_json::Value,
        shard: Option<Shard>,
        samples: usize,
        overwrite: bool,
    ) -> Result<DatasetWriter> {
        let fresh = Manifest {
            format: FORMAT.into(),
            version: 1,
            config,
            shard,
            samples,
            arrays: BTreeMap::new(),
            done: Done::default(),
            complete: false,
        };
        if dir.is_file() {
            return Err(Error::InvalidArgument {
                name: "out",
                reason: format!(
                    "`{}` is a file, not a folder; a dataset folder needs a folder path (or end the path in .npz for one file)",
                    dir.display()
                ),
            });
        }
        // The folder exists from here, so that it can be locked before anything in it is read.
        let created = !dir.exists();
        fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        let lock = match FolderLock::acquire(dir) {
            Ok(lock) => lock,
            Err(err) => {
                if created {
                    // Only if still empty: a `.lock` there is another run's.
                    let _ = fs::remove_dir(dir);
                }
                return Err(err);
            }
        };
        let manifest_path = dir.join("manifest.json");
        if manifest_path.exists() {
            let old = read_manifest(dir)?;
            match old.differs_from(&fresh) {
                None => {
                    let writer = DatasetWriter {
                        dir: dir.to_owned(),
                        manifest: old,
                        windows: 0,
                        fresh: None,
                        columns: Vec::new(),
                        sparse: Vec::new(),
                        _lock: lock,
                    };
                    writer.cut_back()?;
                    return Ok(writer);
                }
                Some((what, there, now)) if !overwrite => {
                    return Err(Error::DatasetMismatch {
                        dir: dir.to_owned(),
                        what,
                        there,
                        now,
                    })
                }
                Some(_) => remove_dataset(dir, &old)?,
            }
        } else if !created {
            // A run killed while creating the folder may have left a manifest's temporary alone.
            remove_manifest_temporaries(dir)?;
            let mut entries = fs::read_dir(dir)
                .map_err(|e| io("cannot read", dir, e))?
                .filter(|e| e.as_ref().map_or(true, |e| e.file_name() != LOCK));
            if entries.next().is_some() {
                return Err(Error::InvalidArgument {
                    name: "out",
                    reason: format!(
                        "`{}` is not empty and holds no manifest.json: it is not a dataset folder, and nothing is written into it; choose a new or empty folder",
                        dir.display()
                    ),
                });
            }
        }
        let writer = DatasetWriter {
            dir: dir.to_owned(),
            manifest: fresh,
            windows: 0,
            fresh: Some(created),
            columns: Vec::new(),
            sparse: Vec::new(),
            _lock: lock,
        };
        writer.save_manifest()?;
        Ok(writer)
    }

    /// Undoes a folder this writer started when the run failed before its first window: its
    /// files, its manifest, and the folder itself if the writer created it. A resumed folder, or
    /// one with a window written, is kept for a rerun to go on with. Without this, a request that
    /// fails at its first window (a layer the folder cannot hold, say) would leave a manifest
    /// that makes a corrected command refuse the folder.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when a file cannot be removed.
    pub fn discard_if_empty(self) -> Result<()> {
        let Some(created) = self.fresh else {
            return Ok(());
        };
        if self.manifest.done.samples > 0 {
            return Ok(());
        }
        remove_dataset(&self.dir, &self.manifest)?;
        if created {
            // Empty now, unless something else wrote into it meanwhile: then it stays.
            let _ = fs::remove_file(self.dir.join(LOCK));
            let _ = fs::remove_dir(&self.dir);
        }
        Ok(())
    }

    /// Undoes a folder this writer started, whatever it holds: its files, its manifest, and the
    /// folder itself if the writer created it. For a writer whose folder cannot be resumed (a
    /// run that stops part-way leaves nothing then). A resumed folder is kept.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when a file cannot be removed.
    pub fn discard(self) -> Result<()> {
        let Some(created) = self.fresh else {
            return Ok(());
        };
        remove_dataset(&self.dir, &self.manifest)?;
        if created {
            let _ = fs::remove_file(self.dir.join(LOCK));
            let _ = fs::remove_dir(&self.dir);
        }
        Ok(())
    }

    /// Per-sample columns to write beside the layers, window by window as the layers' rows:
    /// `sample_index`, `meta.KEY` (see [`SampleColumn`]). Each holds one value per sample of
    /// this folder (a shard's samples only), in the order the engine receives the items. Give
    /// the same columns when resuming; record their names in the request's config, so that a
    /// rerun with others is refused.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a column of another length, a name that is not a column's
    /// (`sample_index` or `meta.*`), or columns that differ from those of the folder's first run.
    pub fn set_columns(&mut self, columns: Vec<(String, SampleColumn)>) -> Result<()> {
        let bad = |reason: String| Error::InvalidArgument {
            name: "columns",
            reason,
        };
        for (name, column) in &columns {
            if !is_sample_column(name) {
                return Err(bad(format!(
                    "`{name}` is not a per-sample column's name (`sample_index`, `meta.KEY`)"
                )));
            }
            if column.len() != self.manifest.samples {
                return Err(bad(format!(
                    "`{name}` has {} values for the folder's {} samples",
                    column.len(),
                    self.manifest.samples
                )));
            }
        }
        if !self.manifest.arrays.is_empty() {
            let planned: BTreeMap<&str, &str> = self
                .manifest
                .arrays
                .iter()
                .filter(|(file, _)| is_sample_column(file.trim_end_matches(".npy")))
                .map(|(file, info)| (file.as_str(), info.descr.as_str()))
                .collect();
            let given: Vec<(String, String)> = columns.iter().map(|(n, c)| (format!("{n}.npy"), c.descr())).collect();
            let given: BTreeMap<&str, &str> = given.iter().map(|(f, d)| (f.as_str(), d.as_str())).collect();
            if planned != given {
                return Err(bad(
                    "the folder was started with other per-sample columns than these; start it again (`--overwrite`)"
                        .into(),
                ));
            }
        }
        self.columns = columns;
        Ok(())
    }

    /// Layers to write sparse, in scipy's CSR layout (see [`Rows::SparseTokens`]) instead of a
    /// dense `.npy`: an SAE's feature activations, mostly zeros. Each must give rows of one dim
    /// (`[tokens, width]` unpooled, or `[samples, width]`). Give the same list when resuming, and
    /// record it in the request's config.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the folder was started with another list.
    pub fn set_sparse(&mut self, layers: Vec<String>) -> Result<()> {
        if !self.manifest.arrays.is_empty() {
            let planned: Vec<&str> = self
                .manifest
                .arrays
                .iter()
                .filter(|(_, info)| info.rows.is_sparse())
                .filter_map(|(file, _)| file.strip_suffix(".indptr.npy"))
                .collect();
            let mut given: Vec<&str> = layers.iter().map(String::as_str).collect();
            given.sort_unstable();
            if planned != given {
                return Err(Error::InvalidArgument {
                    name: "sparse",
                    reason:
                        "the folder was started with other sparse layers than these; start it again (`--overwrite`)"
                            .into(),
                });
            }
        }
        self.sparse = layers;
        Ok(())
    }

    /// Samples already written by an earlier run of the same request: the engine skips them.
    #[must_use]
    pub fn done_samples(&self) -> usize {
        self.manifest.done.samples
    }

    /// Whether an earlier run finished the folder.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.manifest.complete
    }

    /// The manifest as it stands.
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Cuts every file back to the bytes the manifest counts (a crash may have left a partial
    /// window behind them), and removes files it does not count yet.
    fn cut_back(&self) -> Result<()> {
        remove_manifest_temporaries(&self.dir)?;
        self.check_consistent()?;
        for name in self.file_names() {
            let path = self.dir.join(&name);
            match self.manifest.done.bytes.get(&name) {
                Some(&len) => {
                    let held = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    if held < len {
                        return Err(Error::BadFile {
                            path,
                            reason: format!(
                                "it holds {held} bytes, but the manifest counts {len}: the folder was damaged after it was written; extract it again with --overwrite"
                            ),
                        });
                    }
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| io("cannot open", &path, e))?;
                    file.set_len(len).map_err(|e| io("cannot truncate", &path, e))?;
                    file.sync_all().map_err(|e| io("cannot sync", &path, e))?;
                }
                None => {
                    if path.exists() {
                        fs::remove_file(&path).map_err(|e| io("cannot remove", &path, e))?;
                    }
                }
            }
        }
        // A crash after a window's headers but before its manifest left them counting rows that
        // are cut now.
        if !self.manifest.arrays.is_empty() {
            self.write_headers(&self.headers_now()?)?;
        }
        Ok(())
    }

    /// Each file's `.npy` header for the rows the manifest counts now (the final headers once
    /// every sample is written).
    fn headers_now(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let m = &self.manifest;
        let tokens = i64::try_from(m.done.tokens).unwrap_or(i64::MAX);
        let samples = i64::try_from(m.done.samples).unwrap_or(i64::MAX);
        let mut headers = Vec::new();
        for (name, info) in &m.arrays {
            let shape: Vec<i64> = match info.rows {
                Rows::Tokens => std::iter::once(tokens).chain(info.row_shape.iter().copied()).collect(),
                Rows::Samples => std::iter::once(samples).chain(info.row_shape.iter().copied()).collect(),
                // As many elements as the file holds (one flat block per sample, or nonzeros).
                Rows::Patterns | Rows::Nonzeros => vec![pattern_elements(info, m.done.bytes.get(name).copied())],
                Rows::SparseTokens => vec![tokens + 1],
                Rows::SparseSamples => vec![samples + 1],
            };
            headers.push((name.clone(), npy_header(&info.descr, &shape)?));
        }
        headers.push(("input_ids.npy".into(), npy_header("<i8", &[tokens])?));
        // Last: a reader that splits rows by `offsets.npy` then finds every sample it lists
        // whole in the other files.
        headers.push(("offsets.npy".into(), npy_header("<i8", &[samples + 1])?));
        Ok(headers)
    }

    /// Writes `headers` at the start of their files, each synced.
    fn write_headers(&self, headers: &[(String, Vec<u8>)]) -> Result<()> {
        for (name, header) in headers {
            let path = self.dir.join(name);
            let mut file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io("cannot open", &path, e))?;
            file.write_all(header).map_err(|e| io("cannot write", &path, e))?;
            file.sync_data().map_err(|e| io("cannot sync", &path, e))?;
        }
        Ok(())
    }

    /// The manifest's counts agree with the bytes it counts for every file (a manifest edited
    /// after the run would otherwise have its headers rewritten to rows the files lack).
    fn check_consistent(&self) -> Result<()> {
        let m = &self.manifest;
        let (samples, tokens) = (m.done.samples as u64, m.done.tokens);
        let mut expected: Vec<(String, Option<u64>)> = m
            .arrays
            .iter()
            .map(|(name, info)| {
                let row = item_size(&info.descr).and_then(|item| {
                    info.row_shape
                        .iter()
                        .try_fold(item, |n, &d| n.checked_mul(u64::try_from(d).ok()?))
                });
                let rows = match info.rows {
                    Rows::Samples => Some(samples),
                    Rows::Tokens => Some(tokens),
                    // Row pointers: one int64 per row, and the leading 0.
                    Rows::SparseTokens => return (name.clone(), (tokens + 1).checked_mul(8)),
                    Rows::SparseSamples => return (name.clone(), (samples + 1).checked_mul(8)),
                    Rows::Patterns | Rows::Nonzeros => None,
                };
                (name.clone(), rows.zip(row).and_then(|(r, b)| r.checked_mul(b)))
            })
            .filter(|(name, _)| !matches!(m.arrays[name].rows, Rows::Patterns | Rows::Nonzeros))
            .collect();
        if !m.arrays.is_empty() {
            expected.push(("offsets.npy".into(), (samples + 1).checked_mul(8)));
            expected.push(("input_ids.npy".into(), tokens.checked_mul(8)));
        }
        // A sparse layer's last row pointer is the count of values its other two files hold.
        for (name, info) in &m.arrays {
            let Some(layer) = name.strip_suffix(".indptr.npy").filter(|_| info.rows.is_sparse()) else {
                continue;
            };
            let [_, indices, data] = sparse_files(layer);
            let bytes = |n: &str| m.done.bytes.get(n).copied().unwrap_or(0).saturating_sub(HEADER);
            let values = bytes(&data) / 4;
            let mut last = [0u8; 8];
            let at = m.done.bytes.get(name).copied().unwrap_or(HEADER + 8).saturating_sub(8);
            let path = self.dir.join(name);
            let read = File::open(&path).and_then(|f| read_exact_at(&f, &mut last, at));
            if bytes(&indices) != bytes(&data)
                || read.is_err()
                || u64::try_from(i64::from_le_bytes(last)).ok() != Some(values)
            {
                return Err(Error::BadFile {
                    path: self.dir.join("manifest.json"),
                    reason: format!(
                        "it counts {values} values of `{layer}` that its row pointers or column indices do not; the folder was changed after it was written; extract again with --overwrite"
                    ),
                });
            }
        }
        for (name, data) in expected {
            let counted = m.done.bytes.get(&name).copied();
            if data.map(|d| d + HEADER) != counted {
                return Err(Error::BadFile {
                    path: self.dir.join("manifest.json"),
                    reason: format!(
                        "it counts {} samples and {} tokens, but {} bytes of `{name}`; it was changed after the run wrote it; extract again with --overwrite",
                        samples,
                        tokens,
                        counted.map_or_else(|| "no".to_owned(), |c| c.to_string())
                    ),
                });
            }
        }
        Ok(())
    }

    /// Every data file of the folder: the layers', `offsets.npy`, `input_ids.npy`.
    fn file_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.manifest.arrays.keys().cloned().collect();
        names.extend(["offsets.npy".to_owned(), "input_ids.npy".to_owned()]);
        names
    }

    fn save_manifest(&self) -> Result<()> {
        write_atomic(&self.dir.join("manifest.json"), &self.manifest_text()?)
    }

    fn manifest_text(&self) -> Result<Vec<u8>> {
        let text = serde_json::to_string_pretty(&self.manifest).map_err(|e| Error::BadFile {
            path: self.dir.join("manifest.json"),
            reason: e.to_string(),
        })?;
        Ok(format!("{text}\n").into_bytes())
    }

    /// The manifest as it stands, in a temporary beside `manifest.json`, written but not synced.
    fn manifest_temporary(&self) -> Result<tempfile::NamedTempFile> {
        let path = self.dir.join("manifest.json");
        let mut tmp = manifest_builder()
            .tempfile_in(&self.dir)
            .map_err(|e| io("cannot write", &path, e))?;
        tmp.write_all(&self.manifest_text()?)
            .map_err(|e| io("cannot write", &path, e))?;
        Ok(tmp)
    }

    /// Fixes each layer's layout and dtype from the first window.
    fn plan(&mut self, chunk: &Chunk<'_>) -> Result<()> {
        for (layer, t) in chunk.activations {
            let size = t.size();
            let width = chunk.attention_mask.size()[1];
            let rows = if Pool::has_token_axis(t, chunk.attention_mask) {
                Rows::Tokens
            } else if size.len() == 4 && size[2] == width && size[3] == width {
                Rows::Patterns
            } else {
                Rows::Samples
            };
            // Every dim but the first; a pattern's: its heads.
            let row_shape = match rows {
                Rows::Tokens => size[2..].to_vec(),
                Rows::Patterns => size[1..2].to_vec(),
                _ => size[1..].to_vec(),
            };
            let (descr, _) = npy_dtype(t.kind(), layer)?;
            if self.sparse.iter().any(|l| l == layer) {
                if rows == Rows::Patterns || row_shape.len() != 1 {
                    return Err(Error::InvalidArgument {
                        name: "sparse",
                        reason: format!(
                            "`{layer}` gives rows of shape {row_shape:?}; a sparse (CSR) layer needs rows of one dim, like an SAE's features"
                        ),
                    });
                }
                let rows = if rows == Rows::Tokens {
                    Rows::SparseTokens
                } else {
                    Rows::SparseSamples
                };
                let [indptr, indices, data] = sparse_files(layer);
                let info = |descr: &str, rows, row_shape| ArrayInfo {
                    descr: descr.into(),
                    row_shape,
                    rows,
                };
                self.manifest.arrays.insert(indptr, info("<i8", rows, row_shape));
                self.manifest
                    .arrays
                    .insert(indices, info("<i4", Rows::Nonzeros, Vec::new()));
                self.manifest
                    .arrays
                    .insert(data, info("<f4", Rows::Nonzeros, Vec::new()));
                continue;
            }
            self.manifest.arrays.insert(
                format!("{layer}.npy"),
                ArrayInfo {
                    descr: descr.into(),
                    row_shape,
                    rows,
                },
            );
        }
        for (name, column) in &self.columns {
            self.manifest.arrays.insert(
                format!("{name}.npy"),
                ArrayInfo {
                    descr: column.descr(),
                    row_shape: Vec::new(),
                    rows: Rows::Samples,
                },
            );
        }
        for name in self.file_names() {
            let path = self.dir.join(&name);
            let mut file = File::create(&path).map_err(|e| io("cannot create", &path, e))?;
            let mut start = vec![0u8; HEADER as usize];
            if starts_with_zero(&name, self.manifest.arrays.get(&name)) {
                start.extend_from_slice(&0i64.to_le_bytes());
            }
            file.write_all(&start).map_err(|e| io("cannot write", &path, e))?;
            file.sync_all().map_err(|e| io("cannot sync", &path, e))?;
            self.manifest.done.bytes.insert(name, start.len() as u64);
        }
        sync_dir(&self.dir)
    }

    /// Appends `bytes` to the file `name`, at the length the manifest counts, and syncs it.
    fn append(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let file = self.append_unsynced(name, &[bytes])?;
        let path = self.dir.join(name);
        file.sync_data().map_err(|e| io("cannot sync", &path, e))
    }

    /// Appends `parts` to the file `name`, at the length the manifest counts (which it then
    /// counts), and returns the file for the caller to sync: a window syncs every file once,
    /// after writing them all, so that the disk sees them together.
    fn append_unsynced(&mut self, name: &str, parts: &[&[u8]]) -> Result<File> {
        let path = self.dir.join(name);
        let at = self.manifest.done.bytes.get(name).copied().unwrap_or(HEADER);
        let mut file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| io("cannot open", &path, e))?;
        file.seek(SeekFrom::Start(at))
            .map_err(|e| io("cannot write", &path, e))?;
        let mut written = 0u64;
        for part in parts {
            file.write_all(part).map_err(|e| io("cannot write", &path, e))?;
            written += part.len() as u64;
        }
        self.manifest.done.bytes.insert(name.to_owned(), at + written);
        Ok(file)
    }

    /// Appends one window's rows of the sparse layer `layer` (`t`: `[n, width, d]` padded token
    /// rows, or `[n, d]` sample rows) to its three CSR files, unsynced; returns them.
    fn append_sparse(&mut self, layer: &str, t: &Tensor, lengths: &[i64], width: i64) -> Result<Vec<(String, File)>> {
        let [indptr_name, indices_name, data_name] = sparse_files(layer);
        let info = self
            .manifest
            .arrays
            .get(&indptr_name)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument {
                name: "chunk",
                reason: format!("`{layer}` was not in the first window"),
            })?;
        let t = t.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?;
        let size = t.size();
        let rows = match info.rows {
            Rows::SparseTokens if size.len() == 3 && size[1] == width => {
                // The real tokens' rows, sample after sample.
                let keep: Vec<bool> = lengths.iter().flat_map(|&n| (0..width).map(move |c| c < n)).collect();
                let keep = Tensor::from_slice(&keep);
                t.f_reshape([-1, size[2]])?.f_index(&[Some(keep)])?
            }
            Rows::SparseSamples if size.len() == 2 => t,
            _ => {
                return Err(Error::ShapeMismatch {
                    layer: layer.to_owned(),
                    expected: info.row_shape.clone(),
                    got: size.get(1..).unwrap_or(&[]).to_vec(),
                })
            }
        };
        let d = rows.size()[1];
        if info.row_shape != [d] {
            return Err(Error::ShapeMismatch {
                layer: layer.to_owned(),
                expected: info.row_shape.clone(),
                got: vec![d],
            });
        }
        let n = rows.size()[0];
        // Row-major nonzeros: sorted by row, then column, as CSR lists them.
        let at = rows.f_nonzero()?;
        let (row, column) = (at.f_select(1, 0)?, at.f_select(1, 1)?);
        let values = rows
            .f_index(&[Some(row.shallow_clone()), Some(column.shallow_clone())])?
            .f_contiguous()?;
        let indices = column.f_to_kind(Kind::Int)?.f_contiguous()?;
        let before = self
            .manifest
            .done
            .bytes
            .get(&data_name)
            .copied()
            .unwrap_or(HEADER)
            .saturating_sub(HEADER)
            / 4;
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        let counts = row.f_bincount(None::<Tensor>, n)?;
        let indptr = counts.f_cumsum(0, Kind::Int64)?.f_add_scalar(before)?.f_contiguous()?;
        Ok(vec![
            (
                indptr_name.clone(),
                self.append_unsynced(&indptr_name, &[tensor_bytes(&indptr)])?,
            ),
            (
                indices_name.clone(),
                self.append_unsynced(&indices_name, &[tensor_bytes(&indices)])?,
            ),
            (
                data_name.clone(),
                self.append_unsynced(&data_name, &[tensor_bytes(&values)])?,
            ),
        ])
    }

    /// Writes the `.npy` headers with the final shapes and marks the folder complete.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when samples are missing; [`Error::Io`].
    pub fn finish(&mut self) -> Result<()> {
        if self.manifest.complete {
            return Ok(());
        }
        let m = &self.manifest;
        if m.done.samples != m.samples {
            return Err(Error::InvalidArgument {
                name: "dataset",
                reason: format!(
                    "{} of {} samples are written; run again to finish",
                    m.done.samples, m.samples
                ),
            });
        }
        // Every window rewrote them already; written once more (the same bytes) so that a folder
        // from before headers were kept current finishes whole.
        self.write_headers(&self.headers_now()?)?;
        crash_point("finish", 0);
        self.manifest.complete = true;
        self.save_manifest()
    }
}

impl ActivationSink for DatasetWriter {
    fn write(&mut self, chunk: &Chunk<'_>) -> Result<()> {
        // The engine hands windows in order from where the folder stopped; anything else is a
        // caller's mistake that would misplace rows.
        let expected = self.manifest.done.samples;
        if chunk.first != expected {
            return Err(Error::InvalidArgument {
                name: "chunk",
                reason: format!(
                    "rows for samples from {} arrived, but the folder holds {expected}; pass `done_samples()` as `skip`",
                    chunk.first
                ),
            });
        }
        if self.manifest.arrays.is_empty() {
            self.plan(chunk)?;
        }
        let lengths = chunk.lengths()?;
        let width = chunk.attention_mask.size()[1];
        let padded = lengths.iter().any(|&n| n != width);
        let mut files = Vec::new();
        let mut names = Vec::new();
        for (layer, t) in chunk.activations {
            if self.sparse.iter().any(|l| l == layer) {
                for (name, file) in self.append_sparse(layer, t, &lengths, width)? {
                    files.push(file);
                    names.push(name);
                }
                continue;
            }
            let name = format!("{layer}.npy");
            let info = self
                .manifest
                .arrays
                .get(&name)
                .cloned()
                .ok_or_else(|| Error::InvalidArgument {
                    name: "chunk",
                    reason: format!("`{layer}` was not in the first window"),
                })?;
            let (descr, kind) = npy_dtype(t.kind(), layer)?;
            let t = t.f_to_device(Device::Cpu)?.f_to_kind(kind)?.f_contiguous()?;
            let size = t.size();
            let got = match info.rows {
                Rows::Tokens => size.get(2..).unwrap_or(&[]),
                Rows::Patterns => size.get(1..2).unwrap_or(&[]),
                // (A dense layer's file: never a sparse layout.)
                _ => size.get(1..).unwrap_or(&[]),
            };
            if got != info.row_shape.as_slice() || descr != info.descr {
                return Err(Error::ShapeMismatch {
                    layer: layer.to_owned(),
                    expected: info.row_shape.clone(),
                    got: got.to_vec(),
                });
            }
            if info.rows == Rows::Patterns {
                // Each sample's [heads, T_i, T_i] block of real queries and keys, copied out of
                // its padded [heads, W, W].
                let blocks: Vec<Tensor> = lengths
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| t.f_get(i as i64)?.f_narrow(1, 0, n)?.f_narrow(2, 0, n)?.f_contiguous())
                    .collect::<std::result::Result<_, tch::TchError>>()?;
                let parts: Vec<&[u8]> = blocks.iter().map(tensor_bytes).collect();
                files.push(self.append_unsynced(&name, &parts)?);
                names.push(name);
                continue;
            }
            let bytes = tensor_bytes(&t);
            let file = if info.rows == Rows::Tokens && padded {
                // Each sample's real rows lie together at the start of its padded block: written
                // from there, no copy.
                let row = bytes.len() / (size[0] * size[1]).max(1) as usize;
                let block = row * width as usize;
                let parts: Vec<&[u8]> = lengths
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| &bytes[i * block..i * block + n as usize * row])
                    .collect();
                self.append_unsynced(&name, &parts)?
            } else {
                self.append_unsynced(&name, &[bytes])?
            };
            files.push(file);
            names.push(name);
        }
        let ids = chunk.input_ids.f_to_kind(Kind::Int64)?.f_contiguous()?;
        let id_bytes = tensor_bytes(&ids);
        let block = 8 * width as usize;
        let parts: Vec<&[u8]> = lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| &id_bytes[i * block..i * block + 8 * n as usize])
            .collect();
        files.push(self.append_unsynced("input_ids.npy", &parts)?);
        names.push("input_ids.npy".into());
        let mut offsets = Vec::with_capacity(lengths.len() * 8);
        let mut at = i64::try_from(self.manifest.done.tokens).unwrap_or(i64::MAX);
        for len in &lengths {
            at += len;
            offsets.extend_from_slice(&at.to_le_bytes());
        }
        files.push(self.append_unsynced("offsets.npy", &[&offsets])?);
        names.push("offsets.npy".into());
        let local = chunk.first..chunk.first + chunk.len();
        let columns: Vec<(String, Vec<u8>)> = self
            .columns
            .iter()
            .map(|(name, column)| {
                if local.end > column.len() {
                    return Err(Error::InvalidArgument {
                        name: "chunk",
                        reason: format!(
                            "`{name}` has {} values but the window reaches sample {}",
                            column.len(),
                            local.end
                        ),
                    });
                }
                Ok((format!("{name}.npy"), column.bytes(local.clone())))
            })
            .collect::<Result<_>>()?;
        for (name, bytes) in &columns {
            files.push(self.append_unsynced(name, &[bytes])?);
            names.push(name.clone());
        }
        // The manifest that counts this window, written beside the old one and synced with the
        // window's files in one batch (the syncs run side by side, so the filesystem commits
        // them together); only once all are on disk does it replace the old one. The folder is
        // not synced after the rename: should the rename be lost, the old manifest counts fewer
        // windows, whose bytes are on disk, and a rerun cuts the rest back. `finish` syncs it.
        self.manifest.done.samples += chunk.len();
        self.manifest.done.tokens = u64::try_from(at).unwrap_or(0);
        let manifest = self.manifest_temporary()?;
        let mut syncs: Vec<(&File, PathBuf)> = files.iter().zip(&names).map(|(f, n)| (f, self.dir.join(n))).collect();
        syncs.push((manifest.as_file(), self.dir.join("manifest.json")));
        sync_together(&syncs)?;
        self.windows += 1;
        crash_point("data", self.windows);
        let path = self.dir.join("manifest.json");
        manifest
            .persist(&path)
            .map_err(|e| io("cannot write", &path, e.error))?;
        // Then each header, in its reserved 128 bytes, describes the rows the manifest counts:
        // never more (a reader of a running folder sees whole windows only), `offsets.npy` last.
        for (name, header) in self.headers_now()? {
            if let Some(i) = names.iter().position(|n| *n == name) {
                std::os::unix::fs::FileExt::write_all_at(&files[i], &header, 0)
                    .map_err(|e| io("cannot write", &self.dir.join(&name), e))?;
            }
        }
        crash_point("manifest", self.windows);
        Ok(())
    }
}

/// Joins shard folders, in order, into `out`: the folder the unsharded run writes, byte for byte.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for no inputs, an incomplete shard, shards of another request or
/// of another number of shards, or shards that overlap or leave gaps; [`Error::Io`].
pub fn merge_datasets(out: &Path, inputs: &[PathBuf]) -> Result<()> {
    let bad = |reason: String| Error::InvalidArgument { name: "shards", reason };
    // Each shard is read as a dataset folder first, then locked (no run may write it while it
    // is merged) and read again under the lock.
    for dir in inputs {
        let _ = read_manifest(dir)?;
    }
    // Each folder once: a shard given twice is refused below, by position.
    let mut locked: Vec<(PathBuf, FolderLock)> = Vec::new();
    for dir in inputs {
        let key = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        if !locked.iter().any(|(k, _)| *k == key) {
            locked.push((key, FolderLock::acquire(dir)?));
        }
    }
    let manifests = inputs
        .iter()
        .map(|dir| read_manifest(dir))
        .collect::<Result<Vec<_>>>()?;
    let Some(first) = manifests.first() else {
        return Err(bad("give at least one shard folder".into()));
    };
    // Every shard says how many there are: all of them must be here (order is checked below).
    if let Some(count) = manifests.iter().find_map(|m| m.shard.map(|s| s.count)) {
        if manifests.len() != count {
            return Err(bad(format!(
                "{} shard folder(s) given for a run of {count} shards; give all of them, in order",
                manifests.len()
            )));
        }
    }
    let mut expected = 0;
    for (position, (dir, m)) in inputs.iter().zip(&manifests).enumerate() {
        if !m.complete {
            return Err(bad(format!(
                "`{}` is not complete; run its shard again to finish it",
                dir.display()
            )));
        }
        let Some(shard) = m.shard else {
            return Err(bad(format!(
                "`{}` is not a shard (it holds the whole input)",
                dir.display()
            )));
        };
        if let Some((what, _, _)) = first.differs_from(&Manifest {
            shard: first.shard,
            samples: first.samples,
            ..m.clone()
        }) {
            return Err(bad(format!(
                "`{}` was extracted with another `{what}` than `{}`",
                dir.display(),
                inputs[0].display()
            )));
        }
        if m.arrays != first.arrays {
            return Err(bad(format!(
                "`{}` has other arrays than `{}`",
                dir.display(),
                inputs[0].display()
            )));
        }
        if shard.index != position {
            return Err(bad(format!(
                "`{}` is shard {}/{} but stands at position {position}; give the shards in order, 0 to {}",
                dir.display(),
                shard.index,
                shard.count,
                shard.count.saturating_sub(1)
            )));
        }
        if shard.first != expected {
            return Err(bad(format!(
                "`{}` starts at sample {} but the shards before it end at {expected}: {}; give every shard once, in order",
                dir.display(),
                shard.first,
                if shard.first > expected { "a gap" } else { "an overlap" }
            )));
        }
        expected = shard.end;
    }
    let total_samples: usize = manifests.iter().map(|m| m.samples).sum();
    let mut merged = DatasetWriter::create(out, first.config.clone(), None, total_samples, false)?;
    if merged.done_samples() != 0 || merged.manifest.complete {
        return Err(Error::InvalidArgument {
            name: "out",
            reason: format!("`{}` already holds rows; merge into a new folder", out.display()),
        });
    }
    merged.manifest.arrays = first.arrays.clone();
    let names = merged.file_names();
    for name in &names {
        let path = out.join(name);
        let mut file = File::create(&path).map_err(|e| io("cannot create", &path, e))?;
        let mut start = vec![0u8; HEADER as usize];
        if starts_with_zero(name, merged.manifest.arrays.get(name)) {
            start.extend_from_slice(&0i64.to_le_bytes());
        }
        file.write_all(&start).map_err(|e| io("cannot write", &path, e))?;
        merged.manifest.done.bytes.insert(name.clone(), start.len() as u64);
    }
    let mut tokens: i64 = 0;
    for (dir, m) in inputs.iter().zip(&manifests) {
        // Each sparse layer's values before this shard: its row pointers shift by them.
        let nonzeros_before: BTreeMap<String, i64> = merged
            .manifest
            .arrays
            .iter()
            .filter_map(|(name, info)| {
                let layer = name.strip_suffix(".indptr.npy").filter(|_| info.rows.is_sparse())?;
                let bytes = merged.manifest.done.bytes.get(&format!("{layer}.data.npy")).copied()?;
                Some((
                    name.clone(),
                    i64::try_from(bytes.saturating_sub(HEADER) / 4).unwrap_or(0),
                ))
            })
            .collect();
        for name in &names {
            let path = dir.join(name);
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| io("cannot read", &path, e))?;
            let mut data = bytes.split_off(HEADER as usize);
            let shift = if name == "offsets.npy" {
                Some(tokens)
            } else {
                nonzeros_before.get(name).copied()
            };
            if let Some(shift) = shift {
                // Drop the shard's leading 0 and shift the rest past the tokens (or values)
                // before it.
                data = data
                    .chunks_exact(8)
                    .skip(1)
                    .flat_map(|b| (i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) + shift).to_le_bytes())
                    .collect();
            }
            merged.append(name, &data)?;
        }
        tokens += i64::try_from(m.done.tokens).unwrap_or(0);
        merged.manifest.done.samples += m.samples;
    }
    merged.manifest.done.tokens = u64::try_from(tokens).unwrap_or(0);
    merged.save_manifest()?;
    merged.finish()
}

/// The manifest of the dataset folder `dir`.
///
/// # Errors
///
/// [`Error::BadFile`] when it is missing or not a hooks dataset manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    let text = fs::read_to_string(&path).map_err(|e| Error::BadFile {
        path: path.clone(),
        reason: format!("{e}; is `{}` a dataset folder written by hooks?", dir.display()),
    })?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| Error::BadFile {
        path: path.clone(),
        reason: format!("not a hooks dataset manifest ({e})"),
    })?;
    if manifest.format != FORMAT || manifest.version != 1 {
        return Err(Error::BadFile {
            path,
            reason: format!(
                "format `{}` version {}; this build reads `{FORMAT}` version 1",
                manifest.format, manifest.version
            ),
        });
    }
    Ok(manifest)
}

/// A finished dataset folder, its arrays opened memory-mapped on request.
#[derive(Debug)]
pub struct Dataset {
    dir: PathBuf,
    manifest: Manifest,
}

impl Dataset {
    /// Opens the dataset folder `dir`.
    ///
    /// # Errors
    ///
    /// [`Error::BadFile`] when it has no readable manifest or is not complete.
    pub fn open(dir: impl AsRef<Path>) -> Result<Dataset> {
        let dir = dir.as_ref().to_owned();
        let manifest = read_manifest(&dir)?;
        if !manifest.complete {
            return Err(Error::BadFile {
                path: dir,
                reason: "the extraction is not finished; run the same command again to finish it".into(),
            });
        }
        Ok(Dataset { dir, manifest })
    }

    /// The manifest.
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The layer paths, in file-name order (without the per-sample columns).
    pub fn layers(&self) -> impl Iterator<Item = &str> {
        self.manifest
            .arrays
            .iter()
            .filter_map(|(n, info)| match info.rows {
                Rows::Nonzeros => None,
                Rows::SparseTokens | Rows::SparseSamples => n.strip_suffix(".indptr.npy"),
                _ => n.strip_suffix(".npy"),
            })
            .filter(|n| !is_sample_column(n))
    }

    /// The per-sample columns the folder holds (`sample_index`, `meta.KEY`), in file-name order.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.manifest
            .arrays
            .keys()
            .filter_map(|n| n.strip_suffix(".npy"))
            .filter(|n| is_sample_column(n))
    }

    /// The per-sample column `name` (`sample_index`, `meta.label`), read whole.
    ///
    /// # Errors
    ///
    /// [`Error::BadFile`] for a name the folder lacks, or a file that is not what the manifest
    /// describes.
    pub fn column(&self, name: &str) -> Result<SampleColumn> {
        let file = format!("{name}.npy");
        let path = self.dir.join(&file);
        let info = self
            .manifest
            .arrays
            .get(&file)
            .filter(|_| is_sample_column(name))
            .ok_or_else(|| Error::BadFile {
                path: path.clone(),
                reason: format!(
                    "no column `{name}`; the folder has {}",
                    self.columns().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
                ),
            })?;
        let samples = i64::try_from(self.manifest.samples).unwrap_or(i64::MAX);
        let bytes = fs::read(&path).map_err(|e| io("cannot read", &path, e))?;
        let header = npy_header(&info.descr, &[samples])?;
        let bad = |reason: String| Error::BadFile {
            path: path.clone(),
            reason,
        };
        let data = bytes
            .strip_prefix(header.as_slice())
            .ok_or_else(|| bad("its header is not the one the manifest describes".into()))?;
        SampleColumn::from_bytes(&info.descr, data, self.manifest.samples).map_err(|e| bad(e.to_string()))
    }

    /// `name` (a layer path, `offsets` or `input_ids`) as a CPU tensor backed by the file,
    /// memory-mapped (copy-on-write: writes to the tensor never reach the file).
    ///
    /// # Errors
    ///
    /// [`Error::BadFile`] for a name the folder lacks or a header it did not write.
    ///
    /// A sparse layer (see [`Rows::SparseTokens`]) is read whole into a dense tensor instead;
    /// its own files are arrays too (`NAME.indptr`, `NAME.indices`, `NAME.data`).
    pub fn array(&self, name: &str) -> Result<Tensor> {
        let reader = self.reader(name)?;
        if reader.csr.is_some() {
            return reader.read_rows(0, reader.shape[0]);
        }
        let ArrayReader { path, kind, shape, .. } = reader;
        let elt = kind.elt_size_in_bytes() as i64;
        let bad = |reason: String| Error::BadFile {
            path: path.clone(),
            reason,
        };
        let count = shape
            .iter()
            .try_fold(1i64, |n, &d| n.checked_mul(d))
            .filter(|n| *n >= 0)
            .ok_or_else(|| bad(format!("the manifest describes an impossible shape {shape:?}")))?;
        let needed = count
            .checked_mul(elt)
            .and_then(|n| n.checked_add(HEADER as i64))
            .ok_or_else(|| bad(format!("the manifest describes an impossible shape {shape:?}")))?;
        let len = fs::metadata(&path).map_err(|e| io("cannot read", &path, e))?.len();
        if u64::try_from(needed).map_or(true, |needed| len < needed) {
            return Err(bad(format!(
                "it holds {len} bytes, but the manifest describes {needed}; the folder was cut short or changed after it was written (extract it again)"
            )));
        }
        let header_elts = HEADER as i64 / elt;
        let name = path.to_str().ok_or_else(|| Error::BadFile {
            path: path.clone(),
            reason: "the path is not UTF-8".into(),
        })?;
        let mapped = Tensor::f_from_file(name, false, Some(header_elts + count), (kind, Device::Cpu))?;
        Ok(mapped.f_narrow(0, header_elts, count)?.f_view(shape.as_slice())?)
    }

    /// `name` (as for [`Dataset::array`]) opened for reading a range of rows at a time with
    /// [`ArrayReader::read_rows`]: plain reads, so that a pass over an array larger than memory
    /// holds one range at a time (a memory map keeps every page it touched resident).
    ///
    /// # Errors
    ///
    /// [`Error::BadFile`] for a name the folder lacks or a header it did not write.
    pub fn reader(&self, name: &str) -> Result<ArrayReader> {
        let file = format!("{name}.npy");
        let sparse = self.manifest.rows_of(name).filter(|r| r.is_sparse());
        if let (None, Some(rows)) = (self.manifest.arrays.get(&file), sparse) {
            return self.sparse_reader(name, rows);
        }
        let path = self.dir.join(&file);
        let (descr, shape) = match (name, self.manifest.arrays.get(&file)) {
            (_, Some(info)) => {
                let shape: Vec<i64> = match info.rows {
                    Rows::Tokens => std::iter::once(self.manifest.done.tokens as i64)
                        .chain(info.row_shape.iter().copied())
                        .collect(),
                    Rows::Samples => std::iter::once(self.manifest.samples as i64)
                        .chain(info.row_shape.iter().copied())
                        .collect(),
                    Rows::Patterns | Rows::Nonzeros => {
                        vec![pattern_elements(info, self.manifest.done.bytes.get(&file).copied())]
                    }
                    Rows::SparseTokens => vec![self.manifest.done.tokens as i64 + 1],
                    Rows::SparseSamples => vec![self.manifest.samples as i64 + 1],
                };
                (info.descr.clone(), shape)
            }
            ("offsets", None) => ("<i8".to_owned(), vec![self.manifest.samples as i64 + 1]),
            ("input_ids", None) => ("<i8".to_owned(), vec![self.manifest.done.tokens as i64]),
            _ => {
                return Err(Error::BadFile {
                    path,
                    reason: format!(
                        "no array `{name}`; the folder has {}",
                        self.layers().collect::<Vec<_>>().join(", ")
                    ),
                })
            }
        };
        let mut header = vec![0u8; HEADER as usize];
        let mut file = File::open(&path).map_err(|e| io("cannot read", &path, e))?;
        file.read_exact(&mut header).map_err(|e| io("cannot read", &path, e))?;
        if header != npy_header(&descr, &shape)? {
            return Err(Error::BadFile {
                path,
                reason: "its header is not the one the manifest describes".into(),
            });
        }
        let kind = kind_of(&descr).ok_or_else(|| Error::BadFile {
            path: path.clone(),
            reason: format!("dtype `{descr}`"),
        })?;
        Ok(ArrayReader {
            file,
            path,
            kind,
            shape,
            csr: None,
        })
    }
}

impl Dataset {
    /// A reader of the sparse layer `layer`'s dense rows, `[rows, width]` float32.
    fn sparse_reader(&self, layer: &str, rows: Rows) -> Result<ArrayReader> {
        let [indptr, indices, data] = sparse_files(layer).map(|f| f.trim_end_matches(".npy").to_owned());
        let open = |name: &str| self.reader(name);
        let (indptr, indices, data) = (open(&indptr)?, open(&indices)?, open(&data)?);
        let width = self
            .manifest
            .arrays
            .get(&format!("{layer}.indptr.npy"))
            .and_then(|info| info.row_shape.first().copied())
            .unwrap_or(0);
        let count = match rows {
            Rows::SparseTokens => self.manifest.done.tokens as i64,
            _ => self.manifest.samples as i64,
        };
        if indices.shape != data.shape {
            return Err(Error::BadFile {
                path: data.path,
                reason: format!(
                    "it holds {:?} values and `{}` {:?} column indices; the folder was changed after it was written (extract it again)",
                    data.shape,
                    indices.path.display(),
                    indices.shape
                ),
            });
        }
        Ok(ArrayReader {
            path: indptr.path.clone(),
            file: indptr
                .file
                .try_clone()
                .map_err(|e| io("cannot read", &indptr.path, e))?,
            kind: Kind::Float,
            shape: vec![count, width],
            csr: Some(Box::new(Csr { indptr, indices, data })),
        })
    }
}

/// A sparse layer's three files, open.
#[derive(Debug)]
struct Csr {
    indptr: ArrayReader,
    indices: ArrayReader,
    data: ArrayReader,
}

/// One array of a dataset folder, open for reading rows: see [`Dataset::reader`].
#[derive(Debug)]
pub struct ArrayReader {
    file: File,
    path: PathBuf,
    kind: Kind,
    shape: Vec<i64>,
    /// A sparse layer's files: rows are made dense as they are read.
    csr: Option<Box<Csr>>,
}

impl ArrayReader {
    /// The array's shape: rows (samples or tokens, see [`Rows`]), then the row shape.
    #[must_use]
    pub fn shape(&self) -> &[i64] {
        &self.shape
    }

    /// Its dtype.
    #[must_use]
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Rows `start..start + len` as a CPU tensor `[len, ...]` of the array's dtype, read from the
    /// file (not mapped).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a range past the end, [`Error::Io`] when reading fails.
    pub fn read_rows(&self, start: i64, len: i64) -> Result<Tensor> {
        let rows = self.shape.first().copied().unwrap_or(0);
        if start < 0 || len < 0 || start + len > rows {
            return Err(Error::InvalidArgument {
                name: "rows",
                reason: format!(
                    "{start}..{} is past the {rows} rows of `{}`",
                    start + len,
                    self.path.display()
                ),
            });
        }
        if let Some(csr) = &self.csr {
            return csr.dense_rows(start, len, self.shape[1]);
        }
        let row_bytes = self.shape[1..].iter().product::<i64>() as u64 * self.kind.elt_size_in_bytes() as u64;
        let mut bytes = vec![0u8; (row_bytes * len as u64) as usize];
        read_exact_at(&self.file, &mut bytes, HEADER + row_bytes * start as u64)
            .map_err(|e| io("cannot read", &self.path, e))?;
        let shape: Vec<i64> = std::iter::once(len).chain(self.shape[1..].iter().copied()).collect();
        Ok(Tensor::f_from_data_size(&bytes, &shape, self.kind)?)
    }
}

impl Csr {
    /// Rows `start..start + len` made dense, `[len, width]` float32.
    fn dense_rows(&self, start: i64, len: i64, width: i64) -> Result<Tensor> {
        let pointers = Vec::<i64>::try_from(self.indptr.read_rows(start, len + 1)?).map_err(Error::Torch)?;
        let (first, last) = (pointers[0], pointers[pointers.len() - 1]);
        let nnz = self.data.shape[0];
        if first < 0 || last < first || last > nnz || pointers.windows(2).any(|w| w[1] < w[0]) {
            return Err(Error::BadFile {
                path: self.indptr.path.clone(),
                reason: format!(
                    "its row pointers {first}..{last} do not fit the {nnz} values; the folder was changed after it was written (extract it again)"
                ),
            });
        }
        let columns = self.indices.read_rows(first, last - first)?.f_to_kind(Kind::Int64)?;
        if columns.numel() > 0 {
            let (lo, hi) = (columns.f_min()?.int64_value(&[]), columns.f_max()?.int64_value(&[]));
            if lo < 0 || hi >= width {
                return Err(Error::BadFile {
                    path: self.indices.path.clone(),
                    reason: format!("it holds column {} outside the width {width}; the folder was changed after it was written (extract it again)", if lo < 0 { lo } else { hi }),
                });
            }
        }
        let values = self.data.read_rows(first, last - first)?;
        let counts = Tensor::from_slice(&pointers).f_diff(1, 0, None::<Tensor>, None::<Tensor>)?;
        let rows =
            Tensor::f_arange(len, (Kind::Int64, Device::Cpu))?.f_repeat_interleave_self_tensor(&counts, 0, None)?;
        let mut dense = Tensor::f_zeros([len, width], (Kind::Float, Device::Cpu))?;
        let _ = dense.f_index_put_(&[Some(rows), Some(columns)], &values, false)?;
        Ok(dense)
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(mut file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

/// numpy's dtype string for `kind`, and the kind the bytes are written in (bf16 as f32).
fn npy_dtype(kind: Kind, layer: &str) -> Result<(&'static str, Kind)> {
    Ok(match kind {
        Kind::Float | Kind::BFloat16 => ("<f4", Kind::Float),
        Kind::Double => ("<f8", kind),
        Kind::Half => ("<f2", kind),
        Kind::Int64 => ("<i8", kind),
        Kind::Int => ("<i4", kind),
        Kind::Int16 => ("<i2", kind),
        Kind::Int8 => ("|i1", kind),
        Kind::Uint8 => ("|u1", kind),
        Kind::Bool => ("|b1", kind),
        kind => {
            return Err(Error::UnsupportedDtype {
                layer: layer.to_owned(),
                kind,
            })
        }
    })
}

fn kind_of(descr: &str) -> Option<Kind> {
    Some(match descr {
        "<f4" => Kind::Float,
        "<f8" => Kind::Double,
        "<f2" => Kind::Half,
        "<i8" => Kind::Int64,
        "<i4" => Kind::Int,
        "<i2" => Kind::Int16,
        "|i1" => Kind::Int8,
        "|u1" => Kind::Uint8,
        "|b1" => Kind::Bool,
        _ => return None,
    })
}

/// numpy's format 1.0 header for `descr` and `shape`, padded to [`HEADER`] bytes.
fn npy_header(descr: &str, shape: &[i64]) -> Result<Vec<u8>> {
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    let shape = match dims.as_slice() {
        [one] => format!("({one},)"),
        dims => format!("({})", dims.join(", ")),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let room = HEADER as usize - 10;
    if dict.len() + 1 > room {
        return Err(Error::InvalidArgument {
            name: "shape",
            reason: format!("{shape} does not fit a {HEADER}-byte .npy header"),
        });
    }
    let mut header = b"\x93NUMPY\x01\x00".to_vec();
    header.extend_from_slice(&u16::try_from(room).unwrap_or(0).to_le_bytes());
    header.extend_from_slice(dict.as_bytes());
    header.resize(HEADER as usize - 1, b' ');
    header.push(b'\n');
    Ok(header)
}

/// The bytes of `t`, a contiguous CPU tensor, as they lie in memory (little-endian on the
/// machines libtorch runs on): what the `.npy` holds.
fn tensor_bytes(t: &Tensor) -> &[u8] {
    let len = t.numel() * t.kind().elt_size_in_bytes();
    if len == 0 {
        return &[];
    }
    // SAFETY: `t` is a contiguous CPU tensor (the callers make it so) of `numel` elements of
    // `elt_size` bytes starting at `data_ptr`; the slice borrows `t`, which keeps the storage
    // alive and unchanged (nothing writes to it while the window is written).
    unsafe { std::slice::from_raw_parts(t.data_ptr().cast::<u8>(), len) }
}

/// Syncs each file's data, all at once, one thread each: the filesystem commits concurrent
/// syncs together, where one after another would each wait for a commit of its own.
fn sync_together(files: &[(&File, PathBuf)]) -> Result<()> {
    std::thread::scope(|scope| {
        let running: Vec<_> = files
            .iter()
            .map(|(file, path)| scope.spawn(move || file.sync_data().map_err(|e| io("cannot sync", path, e))))
            .collect();
        // Every sync is waited for before the first error is returned.
        let results: Vec<Result<()>> = running
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect();
        results.into_iter().collect()
    })
}

/// Temporaries of `manifest.json`: `.manifest*.tmp`, removed when a writer opens the folder.
fn manifest_builder() -> tempfile::Builder<'static, 'static> {
    let mut builder = crate::npz::new_file_builder();
    builder.prefix(".manifest").suffix(".tmp");
    builder
}

/// Removes the `.manifest*.tmp` files a killed run may have left in `dir`.
fn remove_manifest_temporaries(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| io("cannot read", dir, e))?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".manifest") && name.ends_with(".tmp") {
            fs::remove_file(entry.path()).map_err(|e| io("cannot remove", &entry.path(), e))?;
        }
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically: a synced temporary in the same folder, renamed over
/// it, the folder synced.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = manifest_builder()
        .tempfile_in(dir)
        .map_err(|e| io("cannot write", path, e))?;
    tmp.write_all(bytes).map_err(|e| io("cannot write", path, e))?;
    tmp.as_file().sync_all().map_err(|e| io("cannot sync", path, e))?;
    tmp.persist(path).map_err(|e| io("cannot write", path, e.error))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync", dir, e))
}

/// Removes a dataset's own files (its manifest and arrays), for `--overwrite`.
fn remove_dataset(dir: &Path, manifest: &Manifest) -> Result<()> {
    let names = manifest
        .arrays
        .keys()
        .cloned()
        .chain(["offsets.npy", "input_ids.npy", "manifest.json"].map(String::from));
    for name in names {
        let path = dir.join(name);
        if path.exists() {
            fs::remove_file(&path).map_err(|e| io("cannot remove", &path, e))?;
        }
    }
    Ok(())
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// A place where the crash tests kill the process: `HOOKS_CRASH_AT=data:2` dies by SIGKILL right
/// after the second window's data is synced and before the manifest counts it; `manifest:N`
/// right after the manifest counts window N; `finish:0` after the final headers, before the
/// manifest says complete. Unset, it does nothing. A testing aid: it is how the tests reach the
/// moments a real `kill -9` could land in.
fn crash_point(point: &str, window: usize) {
    let Ok(at) = std::env::var("HOOKS_CRASH_AT") else {
        return;
    };
    if at == format!("{point}:{window}") {
        // SIGKILL, as `kill -9` would: no destructor, no flush.
        // SAFETY: `kill` on this process's own id with a valid signal number has no memory
        // effects in this process; it does not return.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Activations;

    /// A folder in use is refused to a second writer (naming the holder's pid) until the first
    /// is dropped; a `.lock` file no process holds (a killed run's) never blocks; a finished
    /// folder keeps no `.lock`.
    #[test]
    fn a_folder_in_use_is_refused_and_a_dead_lock_never_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("acts");
        let config = serde_json::json!({"test": 1});
        let first = DatasetWriter::create(&dir, config.clone(), None, 4, false).unwrap();
        for overwrite in [false, true] {
            let err = DatasetWriter::create(&dir, config.clone(), None, 4, overwrite).unwrap_err();
            let pid = std::process::id();
            assert!(
                matches!(&err, Error::FolderInUse { pid: Some(p), .. } if *p == pid),
                "{err}"
            );
            assert!(
                err.to_string().contains(&format!("in use by another run (pid {pid})")),
                "{err}"
            );
        }
        drop(first);
        assert!(!dir.join(LOCK).exists(), "the lock file goes with its holder");
        // A killed run's lock file, held by no process.
        fs::write(dir.join(LOCK), "999999999\n").unwrap();
        let mut writer = write(&dir, 4, Vec::new()).unwrap();
        writer.finish().unwrap();
        drop(writer);
        assert!(!dir.join(LOCK).exists());
        assert!(read_manifest(&dir).unwrap().complete);
    }

    /// A run that fails before its first window leaves no folder it created, and an empty
    /// folder it was given empty (its lock file gone with it).
    #[test]
    fn a_run_failing_before_its_first_window_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let new = tmp.path().join("new");
        let writer = DatasetWriter::create(&new, serde_json::json!({"test": 1}), None, 4, false).unwrap();
        writer.discard_if_empty().unwrap();
        assert!(!new.exists());
        let given = tmp.path().join("given");
        fs::create_dir(&given).unwrap();
        let writer = DatasetWriter::create(&given, serde_json::json!({"test": 1}), None, 4, false).unwrap();
        writer.discard_if_empty().unwrap();
        assert!(given.is_dir());
        assert_eq!(fs::read_dir(&given).unwrap().count(), 0);
    }

    /// Writes `samples` one-token samples in windows of 2, with `columns`.
    fn write(dir: &Path, samples: usize, columns: Vec<(String, SampleColumn)>) -> Result<DatasetWriter> {
        let mut writer = DatasetWriter::create(dir, serde_json::json!({"test": 1}), None, samples, false)?;
        writer.set_columns(columns)?;
        let mut first = writer.done_samples();
        while first < samples {
            let n = 2.min(samples - first) as i64;
            let mut acts = Activations::new();
            acts.insert("h", Tensor::arange(n * 3, (Kind::Float, Device::Cpu)).view([n, 3]));
            let ids = Tensor::ones([n, 1], (Kind::Int64, Device::Cpu));
            writer.write(&Chunk {
                first,
                activations: &acts,
                input_ids: &ids,
                attention_mask: &ids,
            })?;
            first += n as usize;
        }
        writer.finish()?;
        Ok(writer)
    }

    /// Columns are written window by window beside the layers, read back whole, and never
    /// listed as layers.
    #[test]
    fn columns_travel_beside_the_layers() {
        let dir = tempfile::tempdir().unwrap();
        let labels = SampleColumn::strings(vec!["a".into(), "bb".into(), "é".into()]).unwrap();
        let columns = vec![
            ("sample_index".to_owned(), SampleColumn::Int64(vec![0, 2, 3])),
            ("meta.label".to_owned(), labels.clone()),
        ];
        write(dir.path(), 3, columns).unwrap();
        let dataset = Dataset::open(dir.path()).unwrap();
        assert_eq!(dataset.layers().collect::<Vec<_>>(), ["h"]);
        assert_eq!(dataset.columns().collect::<Vec<_>>(), ["meta.label", "sample_index"]);
        assert_eq!(
            dataset.column("sample_index").unwrap(),
            SampleColumn::Int64(vec![0, 2, 3])
        );
        assert_eq!(dataset.column("meta.label").unwrap(), labels);
        let err = dataset.column("h").unwrap_err().to_string();
        assert!(err.contains("no column `h`"), "{err}");
    }

    #[test]
    fn columns_of_another_length_or_name_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let short = vec![("sample_index".to_owned(), SampleColumn::Int64(vec![0, 1]))];
        let err = write(&dir.path().join("a"), 3, short).unwrap_err().to_string();
        assert!(err.contains("has 2 values for the folder's 3 samples"), "{err}");
        let layer = vec![("h".to_owned(), SampleColumn::Int64(vec![0, 1, 2]))];
        let err = write(&dir.path().join("b"), 3, layer).unwrap_err().to_string();
        assert!(err.contains("not a per-sample column's name"), "{err}");
    }
}
