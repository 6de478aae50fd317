//! The derive's output is warning-free under strict user lints.
//!
//! The modules below deny every warning and clippy's pedantic group, as a user's crate might with
//! `#![deny(warnings)]` and `#![deny(clippy::pedantic)]`. `cargo clippy --workspace --all-targets
//! -- -D warnings` (part of `make test`) compiles this file, so a lint the generated code trips
//! fails the build. The test functions then check that the types really got their layer trees.

#[deny(warnings)]
#[deny(clippy::pedantic)]
mod strict {
    use hooks::{Hook, HookPoint, Hookable, LayerTree};
    use tch::nn;

    /// A plain struct: sites, a nested generic struct, a list, an optional layer, a config field,
    /// a skipped field and a renamed one.
    #[derive(Hookable)]
    pub struct Plain {
        /// A module with a capture site.
        pub dense: Hook<nn::Linear>,
        /// A generic block, nested.
        pub block: Block<'static, Hook<nn::Linear>>,
        /// A list of hook points.
        pub points: Vec<HookPoint>,
        /// A fixed-size array of norms.
        pub norms: [Hook<nn::LayerNorm>; 2],
        /// An optional layer.
        pub pooler: Option<Hook<nn::Linear>>,
        /// Not a layer.
        pub dropout: f64,
        /// Left out on purpose.
        #[hook(skip)]
        pub skipped: HookPoint,
        /// Renamed to `LayerNorm`.
        #[hook(rename = "LayerNorm")]
        pub layer_norm: Hook<nn::LayerNorm>,
    }

    /// A generic struct with a lifetime, a bounded parameter, a where-clause and a const generic.
    #[derive(Hookable)]
    pub struct Block<'a, A, const N: usize = 1>
    where
        A: Send,
    {
        /// The generic layer.
        pub attn: A,
        /// One point per head.
        pub heads: [HookPoint; N],
        /// A borrowed config, not a layer.
        pub name: &'a str,
    }

    /// A unit struct: a layer tree with no layers.
    #[derive(Hookable)]
    pub struct Empty;

    /// A private struct (the builder is `pub` inside a `const _`, which must not warn).
    #[derive(Hookable)]
    struct Private {
        point: HookPoint,
    }

    pub fn private_names() -> Vec<String> {
        Private {
            point: HookPoint::new(),
        }
        .layer_names()
    }
}

use hooks::{Hook, HookPoint, LayerTree};
use tch::{nn, Device};

#[test]
fn strict_types_have_their_trees() {
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let plain = strict::Plain {
        dense: Hook::new(nn::linear(&root / "dense", 2, 2, Default::default())),
        block: strict::Block {
            attn: Hook::new(nn::linear(&root / "attn", 2, 2, Default::default())),
            heads: [HookPoint::new()],
            name: "block",
        },
        points: vec![HookPoint::new(), HookPoint::new()],
        norms: [
            Hook::new(nn::layer_norm(&root / "n0", vec![2], Default::default())),
            Hook::new(nn::layer_norm(&root / "n1", vec![2], Default::default())),
        ],
        pooler: None,
        dropout: 0.1,
        skipped: HookPoint::new(),
        layer_norm: Hook::new(nn::layer_norm(&root / "ln", vec![2], Default::default())),
    };
    assert_eq!(
        plain.layer_names(),
        [
            "dense",
            "block.attn",
            "block.heads.0",
            "points.0",
            "points.1",
            "norms.0",
            "norms.1",
            "LayerNorm"
        ]
    );
    // A skipped field is an ordinary field (read here, as a model's forward would); only the
    // layer tree leaves it out.
    let _skipped: &HookPoint = &plain.skipped;
    assert!(strict::Empty.layer_names().is_empty());
    assert_eq!(strict::private_names(), ["point"]);
}
