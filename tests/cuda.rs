//! Captures from CUDA: asynchronous copies into pinned memory must give exactly what a blocking
//! copy gives, with several in flight at once. Skipped (with a note) on machines without CUDA,
//! unless `HOOKS_REQUIRE_CUDA=1` (the GPU check sets it), which turns a missing GPU into a failure.
#![allow(clippy::unwrap_used)] // a failing test should fail loudly

use hooks::{ActivationStore, CaptureMode, HookPoint, Hookable, RowBuffer};
use tch::{Device, Kind, Tensor};

fn cuda() -> Option<Device> {
    if tch::Cuda::is_available() {
        return Some(Device::Cuda(0));
    }
    assert!(
        std::env::var_os("HOOKS_REQUIRE_CUDA").is_none(),
        "HOOKS_REQUIRE_CUDA is set but tch reports no CUDA device (is libtorch_cuda.so loaded?)"
    );
    eprintln!("note: no CUDA device; skipping");
    None
}

#[derive(Hookable)]
struct Points {
    a: HookPoint,
    b: HookPoint,
    c: HookPoint,
}

fn points() -> Points {
    Points {
        a: HookPoint::new(),
        b: HookPoint::new(),
        c: HookPoint::new(),
    }
}

/// Large enough (64 MiB in f32) that a copy is still in flight when the next one is queued.
fn big(device: Device) -> Tensor {
    Tensor::randn([64, 1024, 256], (Kind::Float, device))
}

#[test]
fn replace_mode_captures_equal_blocking_copies() {
    let Some(device) = cuda() else { return };
    let model = points();
    let store = ActivationStore::new(&model, ["a", "b", "c"]).unwrap();
    store.enable();
    for _ in 0..3 {
        let (x, y, z) = (big(device), big(device), big(device) * 3.0);
        // Three copies queued back to back, each followed by more work on the same tensors.
        let x = model.a.apply(x);
        let y = model.b.apply(y + &x);
        let z = model.c.apply(z.transpose(0, 2));
        let want = [
            x.to_device(Device::Cpu),
            y.to_device(Device::Cpu),
            z.to_device(Device::Cpu),
        ];
        for (name, want) in ["a", "b", "c"].iter().zip(&want) {
            let got = store.get(name).unwrap();
            assert_eq!(got.device(), Device::Cpu);
            assert!(got.is_contiguous(), "{name}");
            assert!(got.equal(want), "{name} differs from a blocking copy");
        }
    }
}

#[test]
fn accumulated_captures_equal_blocking_copies() {
    let Some(device) = cuda() else { return };
    let model = points();
    let store = ActivationStore::with_mode(&model, ["a"], CaptureMode::Accumulate { max_rows: Some(40) }).unwrap();
    store.enable();
    let mut want = Vec::new();
    for i in 0..12 {
        let x = Tensor::randn([4, 512, 384], (Kind::Float, device)) + f64::from(i);
        want.push(model.a.apply(x).to_device(Device::Cpu));
    }
    let want = Tensor::cat(&want, 0).narrow(0, 0, 40);
    assert!(store.get("a").unwrap().equal(&want));
}

#[test]
fn a_row_buffer_flushes_staged_parts_in_order() {
    let Some(device) = cuda() else { return };
    let mut rows = RowBuffer::new(None);
    let mut want = Vec::new();
    // 300 MiB in all: past the staging limit, so some parts are moved in early, others at the end.
    for i in 0..10 {
        let part = Tensor::randn([30, 1024, 256], (Kind::Float, device)) * f64::from(i + 1);
        rows.push(&part, "x").unwrap();
        want.push(part.to_device(Device::Cpu));
    }
    assert!(rows.tensor().unwrap().unwrap().equal(&Tensor::cat(&want, 0)));
}

#[test]
fn half_precision_captures_keep_their_dtype() {
    let Some(device) = cuda() else { return };
    let model = points();
    let store = ActivationStore::new(&model, ["a", "b"]).unwrap();
    store.enable();
    let h = model.a.apply(Tensor::randn([8, 16], (Kind::Half, device)));
    let b = model.b.apply(Tensor::randn([8, 16], (Kind::BFloat16, device)));
    assert_eq!(store.get("a").unwrap().kind(), Kind::Half);
    assert!(store.get("a").unwrap().equal(&h.to_device(Device::Cpu)));
    assert!(store.get("b").unwrap().equal(&b.to_device(Device::Cpu)));
}
