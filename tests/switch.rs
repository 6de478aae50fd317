//! The process-wide capture switch, its relation to interventions, and panic safety. In a test binary of its own, with one test,
//! because the switch is global to the process and other tests capture concurrently.
#![allow(clippy::unwrap_used)] // a failing test should fail loudly

use std::panic::{catch_unwind, AssertUnwindSafe};

use hooks::{switch, ActivationStore, HookPoint, Hookable, Intervention, Interventions};
use tch::{Device, Kind, Tensor};

#[derive(Hookable)]
struct Model {
    a: HookPoint,
    b: HookPoint,
}

fn t(v: f32) -> Tensor {
    Tensor::from_slice(&[v]).to_kind(Kind::Float).to_device(Device::Cpu)
}

#[test]
fn the_switch_gates_every_store_and_survives_panics() {
    let model = Model {
        a: HookPoint::new(),
        b: HookPoint::new(),
    };
    assert!(switch::is_on(), "the switch starts on");
    assert!(!switch::active(), "no store is enabled yet");

    let store = ActivationStore::new(&model, ["a", "b"]).unwrap();
    store.enable();
    assert!(switch::active());

    // Off: nothing is captured, though the store stays enabled.
    let previous = switch::set(false);
    assert!(previous);
    assert!(!switch::active());
    let _ = model.a.apply(t(1.0));
    assert!(store.get("a").is_none());
    assert!(store.is_enabled());
    switch::set(true);
    let _ = model.a.apply(t(2.0));
    assert!(store.get("a").unwrap().equal(&t(2.0)));

    // The guard restores the previous setting, nested and on panic.
    {
        let _off = switch::scoped(false);
        {
            let _on = switch::scoped(true);
            assert!(switch::is_on());
        }
        assert!(!switch::is_on());
        let _ = model.a.apply(t(3.0));
    }
    assert!(switch::is_on());
    assert!(
        store.get("a").unwrap().equal(&t(2.0)),
        "captured while the guard had it off"
    );

    let result = catch_unwind(AssertUnwindSafe(|| {
        let _off = switch::scoped(false);
        panic!("a forward failed");
    }));
    assert!(result.is_err());
    assert!(switch::is_on(), "the guard restored the switch while unwinding");

    // A forward that panics between two capture sites: the first capture is kept, the store and
    // the switch stay usable.
    let result = catch_unwind(AssertUnwindSafe(|| {
        let x = model.a.apply(t(4.0));
        if x.double_value(&[0]) > 0.0 {
            panic!("mid-forward");
        }
        model.b.apply(x)
    }));
    assert!(result.is_err());
    assert!(store.get("a").unwrap().equal(&t(4.0)));
    assert!(store.get("b").is_none());
    let _ = model.b.apply(t(5.0));
    assert!(store.get("b").unwrap().equal(&t(5.0)));

    // A store that unwinds away (dropped while enabled) no longer counts as enabled.
    let result = catch_unwind(AssertUnwindSafe(|| {
        let second = ActivationStore::new(&model, ["b"]).unwrap();
        second.enable();
        panic!("while a second store is enabled");
    }));
    assert!(result.is_err());
    store.disable();
    assert!(!switch::active(), "a dropped store left the switch counting it");
    store.enable();

    // Interventions answer to their own enable, not to the switch: with capture off they still
    // change what flows on, and capture stays off.
    let edits = Interventions::new(&model, [("b", Intervention::scale(10.0))]).unwrap();
    {
        let _off = switch::scoped(false);
        assert!(!switch::active(), "an intervention does not turn capture on");
        assert!(model.b.apply(t(6.0)).equal(&t(60.0)));
        assert!(
            store.get("b").unwrap().equal(&t(5.0)),
            "captured while the switch was off"
        );
    }
    assert!(model.b.apply(t(7.0)).equal(&t(70.0)));
    assert!(
        store.get("b").unwrap().equal(&t(70.0)),
        "the capture sees the changed tensor"
    );
    edits.disable();
    assert!(model.b.apply(t(8.0)).equal(&t(8.0)));
    // One that unwinds away no longer counts either: with no store, sites are idle again.
    let result = catch_unwind(AssertUnwindSafe(|| {
        let _second = Interventions::new(&model, [("a", Intervention::zero())]).unwrap();
        panic!("while an intervention is enabled");
    }));
    assert!(result.is_err());
    assert!(model.a.apply(t(9.0)).equal(&t(9.0)));
    drop(edits);

    drop(store);
    assert!(!switch::active());
}
