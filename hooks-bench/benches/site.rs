//! What one capture site costs in each state, per call (criterion).
//!
//! `make bench` runs this before `report`, which reads criterion's estimates into BENCHMARKS.md.
//! Under `cargo test` criterion runs each function once instead.

use std::hint::black_box;

use criterion::{criterion_main, Criterion};
use hooks::{switch, ActivationStore, HookPoint, Hookable};
use tch::{Device, Kind, Tensor};

/// Two capture sites: one a store selects, one it does not.
#[derive(Hookable)]
struct Sites {
    selected: HookPoint,
    unselected: HookPoint,
}

fn sites(c: &mut Criterion) {
    let sites = Sites {
        selected: HookPoint::new(),
        unselected: HookPoint::new(),
    };
    // A block output at 1×16 tokens, as MiniLM's: what a selected site copies.
    let x = Tensor::randn([1, 16, 384], (Kind::Float, Device::Cpu));
    let mut group = c.benchmark_group("site");

    // No store enabled: `switch::active()` is false, the site returns after one load.
    assert!(!switch::active());
    group.bench_function("disabled", |b| {
        b.iter(|| sites.unselected.site().capture(black_box(&x)))
    });

    let store = ActivationStore::new(&sites, ["selected"]).expect("`selected` is a layer");
    store.enable();
    // A store is enabled but has not selected this site: the switch is active, so the site takes
    // its out-of-line path and finds no subscriber.
    group.bench_function("enabled_unselected", |b| {
        b.iter(|| sites.unselected.site().capture(black_box(&x)));
    });
    // The same store, switch turned off: back to one load, even for a selected site.
    {
        let _off = switch::scoped(false);
        group.bench_function("switched_off", |b| {
            b.iter(|| sites.selected.site().capture(black_box(&x)));
        });
    }
    // Selected: a detached CPU copy of the tensor into the store (replacing the previous one).
    group.bench_function("selected_1x16x384", |b| {
        b.iter(|| sites.selected.site().capture(black_box(&x)));
    });
    assert!(store.get("selected").is_some_and(|t| t.equal(&x)));
    group.finish();
}

fn config() -> Criterion {
    // Enough samples for a stable median of a nanosecond-scale loop, in about 3 s per function.
    Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(50)
}

#[allow(missing_docs, reason = "`criterion_group!` generates an undocumented `pub fn`")]
mod group {
    criterion::criterion_group! {
        name = benches;
        config = super::config();
        targets = super::sites
    }
}
criterion_main!(group::benches);
