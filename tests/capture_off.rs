//! With capture off, a capture site is transparent: what flows out is exactly what the module
//! (or the caller, for `HookPoint`) produced, compared against the bare module on the same input.

use hooks::{switch, Hook, HookPoint};
use tch::nn::{self, Module, ModuleT};
use tch::{Device, Kind, Tensor};

fn input() -> Tensor {
    // Fixed, varied values (not ones or zeros, which would hide a swapped or reordered output).
    Tensor::arange(12, (Kind::Float, Device::Cpu)).reshape([3, 4]) / 7.0 - 0.5
}

/// Runs `check` with no store enabled (switch on), then with the switch turned off.
fn in_both_off_states(check: impl Fn()) {
    assert!(!switch::active(), "no store is enabled in this test binary");
    check();
    let _off = switch::scoped(false);
    assert!(!switch::active());
    check();
}

#[test]
fn hook_point_returns_its_input_itself() {
    in_both_off_states(|| {
        let x = input();
        let y = HookPoint::new().apply(x.shallow_clone());
        assert!(y.equal(&x));
        // The same tensor, not a copy: later interventions rely on that.
        assert_eq!(y.data_ptr(), x.data_ptr());
    });
}

#[test]
fn hook_forward_returns_the_module_output() {
    let vs = nn::VarStore::new(Device::Cpu);
    let bare = nn::linear(vs.root() / "dense", 4, 3, nn::LinearConfig::default());
    // The same weights, wrapped: `Linear` is not `Clone`, so share the variables.
    let hooked = Hook::new(nn::Linear {
        ws: bare.ws.shallow_clone(),
        bs: bare.bs.as_ref().map(Tensor::shallow_clone),
    });
    in_both_off_states(|| {
        let x = input();
        let expected = x.matmul(&bare.ws.tr()) + bare.bs.as_ref().expect("linear has a bias");
        let out = hooked.forward(&x);
        assert!(out.equal(&bare.forward(&x)));
        assert!(out.allclose(&expected, 1e-6, 1e-6, false));
    });
}

#[test]
fn hook_call_returns_whatever_the_closure_returns() {
    let vs = nn::VarStore::new(Device::Cpu);
    let bare = nn::layer_norm(vs.root() / "norm", vec![4], nn::LayerNormConfig::default());
    let hooked = Hook::new(nn::layer_norm(
        vs.root() / "norm_hooked",
        vec![4],
        nn::LayerNormConfig::default(),
    ));
    in_both_off_states(|| {
        let x = input();
        let (out, extra) = hooked.call(|m| (m.forward(&x), x.sum(Kind::Float)));
        assert!(out.equal(&bare.forward(&x)));
        assert!(extra.equal(&x.sum(Kind::Float)));
    });
}

#[test]
fn hook_forward_t_returns_the_module_output() {
    let vs = nn::VarStore::new(Device::Cpu);
    // Weight 1 (not tch's default random one), so the expected value below is known.
    let config = || nn::BatchNormConfig {
        ws_init: nn::Init::Const(1.0),
        ..Default::default()
    };
    let bare = nn::batch_norm1d(vs.root() / "bn", 4, config());
    let hooked = Hook::new(nn::batch_norm1d(vs.root() / "bn_hooked", 4, config()));
    in_both_off_states(|| {
        let x = input();
        let out = hooked.forward_t(&x, false);
        assert!(out.equal(&bare.forward_t(&x, false)));
        // Evaluation-mode batch norm with fresh statistics (mean 0, variance 1) is x / sqrt(1 + eps).
        assert!(out.allclose(&(&x / (1.0f64 + 1e-5).sqrt()), 1e-6, 1e-6, false));
    });
}
