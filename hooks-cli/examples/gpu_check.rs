//! The measuring half of `scripts/gpu-check.sh`, run on a CUDA machine:
//!
//! - `gpu_check compare A.npz B.npz TOL`: every float array of A equals B's within `TOL` relative
//!   (max |a - b| / max(1, max |a|)); integer arrays exactly. Exits 1 otherwise.
//! - `gpu_check gpt2 [BATCH SEQ REPS]`: a GPT-2-small-sized model with random weights (12 layers,
//!   768 hidden) on `cuda:0`; forward with capture of every block off vs on (median over
//!   interleaved repetitions), and capture throughput vs libtorch's own pinned copy of the same
//!   bytes.
#![allow(clippy::unwrap_used, clippy::cast_precision_loss)] // a check tool: fail loudly; ratios

use std::process::ExitCode;
use std::time::Instant;

use hooks::{load_activations, ActivationStore, HookPoint, Hookable};
use hooks_models::{Gpt2, Gpt2Config, TextModel};
use tch::{Device, Kind, Tensor};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("compare") if args.len() == 4 => compare(&args[1], &args[2], args[3].parse().unwrap()),
        Some("gpt2") => {
            let n = |i: usize, d: i64| args.get(i).map_or(d, |a| a.parse().unwrap());
            gpt2(n(1, 32), n(2, 512), usize::try_from(n(3, 10)).unwrap());
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: gpu_check compare A.npz B.npz TOL | gpu_check gpt2 [BATCH SEQ REPS]");
            ExitCode::FAILURE
        }
    }
}

fn compare(a: &str, b: &str, tol: f64) -> ExitCode {
    let (a, b) = (load_activations(a).unwrap(), load_activations(b).unwrap());
    let mut worst = 0.0f64;
    let mut ok = a.len() == b.len();
    for (name, x) in &a {
        let Some(y) = b.get(name) else {
            println!("{name}: missing in the second file");
            ok = false;
            continue;
        };
        if x.size() != y.size() {
            println!("{name}: shapes {:?} vs {:?}", x.size(), y.size());
            ok = false;
            continue;
        }
        if x.is_floating_point() {
            let (x, y) = (x.to_kind(Kind::Double), y.to_kind(Kind::Double));
            let scale = x.abs().max().double_value(&[]).max(1.0);
            let rel = (&x - &y).abs().max().double_value(&[]) / scale;
            worst = worst.max(rel);
            if rel > tol {
                println!("{name}: max relative difference {rel:.3e} > {tol:.0e}");
                ok = false;
            }
        } else if !x.equal(y) {
            println!("{name}: integer arrays differ");
            ok = false;
        }
    }
    println!(
        "compare: {} arrays, worst relative difference {worst:.3e} (tolerance {tol:.0e}): {}",
        a.len(),
        if ok { "ok" } else { "FAILED" }
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn spread(xs: &[f64]) -> (f64, f64) {
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(0.0, f64::max);
    (min, max)
}

fn gpt2(batch: i64, seq: i64, reps: usize) {
    // `GPU_CHECK_ALLOW_CPU=1` runs the same code on the CPU, to smoke-test this tool without a GPU.
    let device = if tch::Cuda::is_available() {
        Device::Cuda(0)
    } else {
        assert!(std::env::var_os("GPU_CHECK_ALLOW_CPU").is_some(), "no CUDA device");
        Device::Cpu
    };
    let sync = || {
        if device.is_cuda() {
            tch::Cuda::synchronize(0);
        }
    };
    // GPT-2 small's shape (the default config) with random weights, std 0.02 as GPT-2 inits.
    let model = Gpt2::new(&Gpt2Config::default(), device, Kind::Float).unwrap();
    let ids = Tensor::randint(50257, [batch, seq], (Kind::Int64, device));
    let mask = Tensor::ones([batch, seq], (Kind::Int64, device));
    let blocks: Vec<String> = (0..12).map(|i| format!("h.{i}")).collect();
    let store = ActivationStore::new(&model, &blocks).unwrap();
    let _no_grad = tch::no_grad_guard();

    // One timed forward: `on` captures every block and waits for the copies to land.
    let run = |on: bool| -> f64 {
        if on {
            store.enable();
        }
        sync();
        let start = Instant::now();
        let _ = model.forward(&ids, &mask).unwrap();
        if on {
            let _ = store.activations(); // waits for every copy
        }
        sync();
        let secs = start.elapsed().as_secs_f64();
        store.disable();
        store.clear();
        secs
    };
    for _ in 0..3 {
        run(false);
        run(true);
    }
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        off.push(run(false));
        on.push(run(true));
    }
    let (off_med, on_med) = (median(off.clone()), median(on.clone()));
    let bytes = 12.0 * (batch * seq * 768 * 4) as f64;
    println!(
        "gpt2 {batch}x{seq}: forward {:.2} ms off (min {:.2}, max {:.2}), {:.2} ms capturing 12 blocks (min {:.2}, max {:.2}); on/off {:.3} (target <= 1.05); {:.0} MB captured per forward",
        off_med * 1e3, spread(&off).0 * 1e3, spread(&off).1 * 1e3, on_med * 1e3, spread(&on).0 * 1e3, spread(&on).1 * 1e3, on_med / off_med, bytes / 1e6
    );

    // Capture throughput alone: 12 captures of one block's output, vs libtorch's pinned copy.
    #[derive(Hookable)]
    struct Point {
        p: HookPoint,
    }
    let point = Point { p: HookPoint::new() };
    let x = Tensor::randn([batch, seq, 768], (Kind::Float, device));
    let probe = ActivationStore::new(&point, ["p"]).unwrap();
    let ours = || {
        probe.enable();
        sync();
        let start = Instant::now();
        for _ in 0..12 {
            let _ = point.p.apply(x.shallow_clone());
            let _ = probe.get("p");
        }
        sync();
        probe.disable();
        start.elapsed().as_secs_f64()
    };
    let torch = || {
        sync();
        let start = Instant::now();
        for _ in 0..12 {
            let _host = x.to_device_(Device::Cpu, Kind::Float, device.is_cuda(), !device.is_cuda());
            sync();
        }
        start.elapsed().as_secs_f64()
    };
    for _ in 0..2 {
        ours();
        torch();
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        a.push(ours());
        b.push(torch());
    }
    let (ours_gbs, torch_gbs) = (bytes / median(a) / 1e9, bytes / median(b) / 1e9);
    println!(
        "capture throughput: {ours_gbs:.1} GB/s ours vs {torch_gbs:.1} GB/s libtorch pinned copy; ratio {:.2} (target >= 0.8)",
        ours_gbs / torch_gbs
    );
}
