//! Section 3: `.npz` write throughput against a raw write of the same bytes and `numpy.savez`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use hooks::save_activations;
use serde_json::json;
use tch::{Device, Kind, Tensor};

use crate::python::Worker;
use crate::stats::{mean, paired_ratios, Summary};
use crate::{BenchResult, Config, Ctx, Target, LAYERS};

/// The ways of writing the same arrays, in the order of the table.
const WAYS: [&str; 4] = [
    "`save_activations` (ours)",
    "raw sequential write + fsync",
    "`numpy.savez` + fsync",
    "raw sequential write, no fsync (page cache only)",
];

pub struct Writing {
    bytes: u64,
    /// Seconds per way.
    seconds: [Summary; 4],
    /// Our throughput over raw's, and over numpy's, per round.
    vs_raw: Summary,
    vs_numpy: Summary,
}

/// Writes each tensor's bytes as they lie in memory, one `write_all` per tensor.
fn raw_write(path: &Path, tensors: &[Tensor], sync: bool) -> BenchResult<()> {
    let mut file = File::create(path)?;
    write_tensors(&mut file, tensors)?;
    if sync {
        file.sync_all()?;
    }
    Ok(())
}

/// Appends each tensor's bytes (contiguous CPU tensors) to `file` as they lie in memory.
pub fn write_tensors<'a>(file: &mut File, tensors: impl IntoIterator<Item = &'a Tensor>) -> BenchResult<()> {
    for t in tensors {
        let len = t.numel() * t.kind().elt_size_in_bytes();
        // SAFETY: `t` is a contiguous CPU tensor of `len` bytes that lives, unchanged, for the
        // whole borrow.
        let bytes = unsafe { std::slice::from_raw_parts(t.data_ptr().cast::<u8>(), len) };
        file.write_all(bytes)?;
    }
    Ok(())
}

pub fn run(ctx: &mut Ctx) -> BenchResult<Writing> {
    let rows = ctx.cfg.write_rows;
    tch::manual_seed(4);
    // Six block outputs of an extraction: [rows, 64 tokens, 384] f32 each.
    let tensors: Vec<Tensor> = LAYERS
        .iter()
        .map(|_| Tensor::randn([rows, 64, 384], (Kind::Float, Device::Cpu)))
        .collect();
    let bytes: u64 = tensors
        .iter()
        .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
        .sum();
    let arrays = || LAYERS.iter().copied().zip(&tensors);
    // numpy writes the very same arrays: it reads them from a file of ours first (untimed).
    let source = ctx.path("arrays.npz");
    save_activations(arrays(), &source)?;
    ctx.worker.call(&json!({"cmd": "load", "path": source}))?;
    std::fs::remove_file(&source)?;

    let out = ctx.path("written.npz");
    let write = |way: usize, worker: &mut Worker| -> BenchResult<f64> {
        let start = Instant::now();
        let elapsed = match way {
            0 => {
                save_activations(arrays(), &out)?;
                start.elapsed().as_secs_f64()
            }
            1 | 3 => {
                raw_write(&out, &tensors, way == 1)?;
                start.elapsed().as_secs_f64()
            }
            _ => mean(&Worker::seconds(&worker.call(&json!({"cmd": "savez", "out": out}))?)),
        };
        std::fs::remove_file(&out)?;
        Ok(elapsed)
    };
    // One untimed write of each way warms the code paths and the file system.
    for way in 0..4 {
        write(way, &mut ctx.worker)?;
    }
    let mut seconds: [Vec<f64>; 4] = Default::default();
    for round in 0..ctx.cfg.write_rounds {
        for k in 0..4 {
            let way = (round + k) % 4;
            seconds[way].push(write(way, &mut ctx.worker)?);
        }
    }
    Ok(Writing {
        bytes,
        seconds: seconds.each_ref().map(|s| Summary::of(s)),
        vs_raw: Summary::of(&paired_ratios(&seconds[1], &seconds[0])),
        vs_numpy: Summary::of(&paired_ratios(&seconds[2], &seconds[0])),
    })
}

impl Writing {
    pub fn targets(&self) -> Vec<Target> {
        vec![Target::at_least(
            "3. .npz write throughput / raw write",
            0.9,
            &self.vs_raw,
            3,
        )]
    }

    pub fn markdown(&self, cfg: &Config) -> String {
        let mut s = String::new();
        let mb = self.bytes as f64 / 1e6;
        let _ = writeln!(
            s,
            "## 3. Writing\n\n\
             `make bench` (section 3 of `cargo bench -p hooks-bench --bench report`)\n\n\
             Six f32 arrays `[{}, 64, 384]` ({mb:.0} MB), as an extraction of {} inputs produces, \
             written to the scratch folder under `target/` (the machine's disk), {} rounds, ways \
             interleaved; each file deleted after it is timed.\n",
            cfg.write_rows, cfg.write_rows, cfg.write_rounds
        );
        s.push_str("| way | seconds | MB/s |\n|---|---|---|\n");
        for (way, secs) in WAYS.iter().zip(&self.seconds) {
            let _ = writeln!(s, "| {way} | {} | {:.0} |", secs.show(3), mb / secs.median);
        }
        let _ = writeln!(
            s,
            "\n| ratio of throughputs (per round) | median (IQR) |\n|---|---|\n\
             | ours / raw write (+ fsync) | {} |\n| ours / `numpy.savez` (+ fsync) | {} |\n",
            self.vs_raw.show(3),
            self.vs_numpy.show(3)
        );
        s.push_str(
            "Ours and raw write from this process; `numpy.savez` from the Python worker, which \
             holds the same arrays. Ours is durable and atomic (temporary file, fsync, rename), so \
             the raw write and numpy's are given an fsync too; the last row shows how much of \
             each time is the disk rather than the writer.\n",
        );
        s
    }
}
