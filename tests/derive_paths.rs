//! Layer paths of derived types: per instance (`layer_names`), statically (`SCHEMA.templates()`),
//! checked at compile time (`layer!`), typed (`paths()`), and in the registry.
//!
//! Every expected list is written out by hand from the PyTorch naming rule (dotted field names,
//! list indices, nothing for `None`), not computed by the code under test.

use hooks::{Hook, HookPoint, Hookable, LayerPath, LayerTree};
use tch::{nn, Device};

fn linear(path: nn::Path<'_>) -> Hook<nn::Linear> {
    Hook::new(nn::linear(path, 4, 4, nn::LinearConfig::default()))
}

fn layer_norm(path: nn::Path<'_>) -> Hook<nn::LayerNorm> {
    Hook::new(nn::layer_norm(path, vec![4], nn::LayerNormConfig::default()))
}

fn embedding(path: nn::Path<'_>) -> Hook<nn::Embedding> {
    Hook::new(nn::embedding(path, 10, 4, nn::EmbeddingConfig::default()))
}

/// A small BERT, named the way transformers names its modules.
mod bert {
    use super::{embedding, layer_norm, linear};
    use hooks::{Hook, HookPoint, Hookable};
    use tch::nn;

    #[derive(Hookable)]
    pub struct Embeddings {
        pub word_embeddings: Hook<nn::Embedding>,
        pub position_embeddings: Hook<nn::Embedding>,
        #[hook(rename = "LayerNorm")]
        pub layer_norm: Hook<nn::LayerNorm>,
        pub dropout: f64,
    }

    #[derive(Hookable)]
    pub struct SelfAttention {
        pub query: Hook<nn::Linear>,
        pub key: Hook<nn::Linear>,
        pub value: Hook<nn::Linear>,
        pub probs: HookPoint,
        pub heads: i64,
    }

    #[derive(Hookable)]
    pub struct Attention {
        #[hook(rename = "self")]
        pub self_attention: Hook<SelfAttention>,
        pub output: Hook<nn::Linear>,
    }

    #[derive(Hookable)]
    pub struct Layer {
        pub attention: Hook<Attention>,
        pub intermediate: Hook<nn::Linear>,
        pub output: Hook<nn::Linear>,
    }

    #[derive(Hookable)]
    pub struct Encoder {
        pub layer: Vec<Hook<Layer>>,
    }

    #[derive(Hookable)]
    pub struct Bert {
        pub embeddings: Embeddings,
        pub encoder: Encoder,
        pub pooler: Option<Hook<nn::Linear>>,
        #[hook(skip)]
        pub debug: HookPoint,
        pub hidden_size: i64,
    }

    pub fn new(vs: &nn::Path<'_>, layers: usize, pooler: bool) -> Bert {
        let layer = |i: usize| {
            let p = vs / "encoder" / "layer" / i;
            let attention = &p / "attention";
            Hook::new(Layer {
                attention: Hook::new(Attention {
                    self_attention: Hook::new(SelfAttention {
                        query: linear(&attention / "self" / "query"),
                        key: linear(&attention / "self" / "key"),
                        value: linear(&attention / "self" / "value"),
                        probs: HookPoint::new(),
                        heads: 2,
                    }),
                    output: linear(&attention / "output"),
                }),
                intermediate: linear(&p / "intermediate"),
                output: linear(&p / "output"),
            })
        };
        Bert {
            embeddings: Embeddings {
                word_embeddings: embedding(vs / "embeddings" / "word_embeddings"),
                position_embeddings: embedding(vs / "embeddings" / "position_embeddings"),
                layer_norm: layer_norm(vs / "embeddings" / "LayerNorm"),
                dropout: 0.1,
            },
            encoder: Encoder {
                layer: (0..layers).map(layer).collect(),
            },
            pooler: pooler.then(|| linear(vs / "pooler")),
            debug: HookPoint::new(),
            hidden_size: 4,
        }
    }
}

use bert::Bert;

/// One encoder layer's capturable paths below `encoder.layer.{i}`, in field order.
fn bert_layer(i: &str) -> Vec<String> {
    [
        "",
        ".attention",
        ".attention.self",
        ".attention.self.query",
        ".attention.self.key",
        ".attention.self.value",
        ".attention.self.probs",
        ".attention.output",
        ".intermediate",
        ".output",
    ]
    .iter()
    .map(|rest| format!("encoder.layer.{i}{rest}"))
    .collect()
}

const EMBEDDINGS: [&str; 3] = [
    "embeddings.word_embeddings",
    "embeddings.position_embeddings",
    "embeddings.LayerNorm",
];

#[test]
fn nested_vec_and_some_give_pytorch_names_in_field_order() {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = bert::new(&vs.root(), 2, true);
    let mut expected: Vec<String> = EMBEDDINGS.map(String::from).to_vec();
    expected.extend(bert_layer("0"));
    expected.extend(bert_layer("1"));
    expected.push("pooler".to_owned());
    assert_eq!(model.layer_names(), expected);
    // The skipped `debug` point is an ordinary field that the tree leaves out.
    let _skipped: &HookPoint = &model.debug;
}

#[test]
fn none_contributes_nothing_and_vec_length_is_the_instance_one() {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = bert::new(&vs.root(), 1, false);
    let mut expected: Vec<String> = EMBEDDINGS.map(String::from).to_vec();
    expected.extend(bert_layer("0"));
    assert_eq!(model.layer_names(), expected);
}

#[test]
fn templates_have_a_star_for_each_index_and_keep_optional_layers() {
    let mut expected: Vec<String> = EMBEDDINGS.map(String::from).to_vec();
    expected.extend(bert_layer("*"));
    expected.push("pooler".to_owned());
    assert_eq!(Bert::SCHEMA.templates(), expected);
}

/// Arrays, `Box`, a raw field name and a `Vec` behind an `Option`.
#[derive(Hookable)]
struct Heads {
    heads: [HookPoint; 3],
    boxed: Box<Hook<nn::Linear>>,
    r#type: HookPoint,
    extra: Option<Vec<HookPoint>>,
}

fn heads(vs: &nn::Path<'_>, extra: Option<usize>) -> Heads {
    Heads {
        heads: [HookPoint::new(), HookPoint::new(), HookPoint::new()],
        boxed: Box::new(linear(vs / "boxed")),
        r#type: HookPoint::new(),
        extra: extra.map(|n| (0..n).map(|_| HookPoint::new()).collect()),
    }
}

#[test]
fn arrays_boxes_and_raw_names() {
    let vs = nn::VarStore::new(Device::Cpu);
    assert_eq!(
        heads(&vs.root(), None).layer_names(),
        ["heads.0", "heads.1", "heads.2", "boxed", "type"]
    );
    assert_eq!(
        heads(&vs.root(), Some(2)).layer_names(),
        ["heads.0", "heads.1", "heads.2", "boxed", "type", "extra.0", "extra.1"]
    );
    assert_eq!(Heads::SCHEMA.templates(), ["heads.*", "boxed", "type", "extra.*"]);
}

/// A generic block: its tree depends on what it is instantiated with.
#[derive(Hookable)]
struct Block<A, M> {
    ln_1: Hook<nn::LayerNorm>,
    attn: A,
    mlp: M,
    #[hook(skip)]
    spare: Option<A>,
    n_head: i64,
}

#[test]
fn generic_structs_take_their_parameters_trees() {
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let block = Block {
        ln_1: layer_norm(&root / "ln_1"),
        attn: linear(&root / "attn"),
        mlp: Hook::new(heads(&(&root / "mlp"), None)),
        spare: None,
        n_head: 2,
    };
    assert!(block.spare.is_none() && block.n_head == 2);
    assert_eq!(
        block.layer_names(),
        [
            "ln_1",
            "attn",
            "mlp",
            "mlp.heads.0",
            "mlp.heads.1",
            "mlp.heads.2",
            "mlp.boxed",
            "mlp.type"
        ]
    );
    assert_eq!(
        <Block<Hook<nn::Linear>, Hook<Heads>>>::SCHEMA.templates(),
        [
            "ln_1",
            "attn",
            "mlp",
            "mlp.heads.*",
            "mlp.boxed",
            "mlp.type",
            "mlp.extra.*"
        ]
    );
    // A plain point as `A`, and a struct without a site of its own as `M`.
    assert_eq!(
        <Block<HookPoint, Heads>>::SCHEMA.templates(),
        ["ln_1", "attn", "mlp.heads.*", "mlp.boxed", "mlp.type", "mlp.extra.*"]
    );
    assert_eq!(
        Block::<HookPoint, Heads>::paths().mlp().boxed().path().as_str(),
        "mlp.boxed"
    );
}

#[test]
fn layer_macro_gives_the_path_it_checked() {
    let cases: [(LayerPath, &str); 7] = [
        (hooks::layer!(Bert, "embeddings.LayerNorm"), "embeddings.LayerNorm"),
        (hooks::layer!(Bert, "encoder.layer.11"), "encoder.layer.11"),
        (
            hooks::layer!(Bert, "encoder.layer.3.attention.self.query"),
            "encoder.layer.3.attention.self.query",
        ),
        // Through an `Option`.
        (hooks::layer!(Bert, "pooler"), "pooler"),
        // Through a fixed-size array, and a `Box`.
        (hooks::layer!(Heads, "heads.2"), "heads.2"),
        (hooks::layer!(Heads, "boxed"), "boxed"),
        // Through an `Option<Vec<_>>`.
        (hooks::layer!(Heads, "extra.5"), "extra.5"),
    ];
    for (path, expected) in cases {
        assert_eq!(path.as_str(), expected);
    }
}

#[test]
fn typed_builder_gives_the_same_strings() {
    let query = Bert::paths()
        .encoder()
        .layer(3)
        .attention()
        .self_attention()
        .query()
        .path();
    assert_eq!(query.as_str(), "encoder.layer.3.attention.self.query");
    assert_eq!(query, hooks::layer!(Bert, "encoder.layer.3.attention.self.query"));

    // `Hook<M>`'s paths are a capture site themselves and lead inside `M`.
    assert_eq!(Bert::paths().encoder().layer(0).path().as_str(), "encoder.layer.0");
    assert_eq!(
        Bert::paths().encoder().layer(0).attention().path().as_str(),
        "encoder.layer.0.attention"
    );
    assert_eq!(
        Bert::paths().embeddings().layer_norm().path().as_str(),
        "embeddings.LayerNorm"
    );
    assert_eq!(Bert::paths().pooler().path().as_str(), "pooler");

    assert_eq!(Heads::paths().heads(2).as_str(), "heads.2");
    assert_eq!(Heads::paths().boxed().path().as_str(), "boxed");
    assert_eq!(Heads::paths().r#type().as_str(), "type");
    assert_eq!(Heads::paths().extra().at(5).as_str(), "extra.5");

    // Every template's concrete path is reachable through the builder; spot-check the deepest.
    let vs = nn::VarStore::new(Device::Cpu);
    let names = bert::new(&vs.root(), 4, true).layer_names();
    assert!(names.iter().any(|name| name == query.as_str()));
}

#[test]
fn builder_paths_start_from_any_prefix() {
    let prefix = hooks::Prefix::root().child("model").child(2);
    let paths = <Heads as Hookable>::paths_at(prefix);
    assert_eq!(paths.heads(1).as_str(), "model.2.heads.1");
    assert_eq!(format!("{paths:?}"), "HeadsPaths(\"model.2\")");
}

#[test]
fn registry_lists_derived_types_with_their_templates() {
    // These types are defined in this test binary, so their inventory submissions are linked in
    // (inventory drops the submissions of a library crate that nothing references).
    let registry = hooks::registry();
    let bert = registry
        .iter()
        .find(|registration| registration.type_path() == "derive_paths::bert::Bert")
        .expect("`Bert` is registered");
    assert_eq!(bert.name, "Bert");
    let mut expected: Vec<String> = EMBEDDINGS.map(String::from).to_vec();
    expected.extend(bert_layer("*"));
    expected.push("pooler".to_owned());
    assert_eq!(bert.schema.templates(), expected);

    let heads = registry
        .iter()
        .find(|registration| registration.type_path() == "derive_paths::Heads")
        .expect("`Heads` is registered");
    assert_eq!(heads.schema.templates(), ["heads.*", "boxed", "type", "extra.*"]);

    // A generic type has no single tree, so it is not listed.
    assert!(registry.iter().all(|registration| registration.name != "Block"));
    // Each type once, sorted by type path.
    let paths: Vec<String> = registry.iter().map(|registration| registration.type_path()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(paths, sorted);
}

/// Generated code must not depend on the names in scope where the derive is used.
mod shadowed {
    #![allow(dead_code, non_camel_case_types)]

    pub struct Vec;
    pub struct Option;
    pub struct Box;
    pub struct String;
    pub struct PhantomData;
    pub struct Sized;
    pub struct usize;
    pub type Result = ();
    pub trait Clone {}
    pub trait Debug {}
    mod core {}
    mod std {}
    mod hooks {}

    #[derive(::hooks::Hookable)]
    pub struct Shadowed<A> {
        pub layers: ::std::vec::Vec<::hooks::HookPoint>,
        pub maybe: ::core::option::Option<::hooks::Hook<::tch::nn::Linear>>,
        pub boxed: ::std::boxed::Box<::hooks::HookPoint>,
        pub generic: A,
        pub plain: Vec,
    }

    #[derive(::hooks::Hookable)]
    pub struct Plain {
        pub point: ::hooks::HookPoint,
    }
}

#[test]
fn derive_is_hygienic() {
    let model = shadowed::Shadowed {
        layers: vec![HookPoint::new(), HookPoint::new()],
        maybe: None,
        boxed: Box::new(HookPoint::new()),
        generic: shadowed::Plain {
            point: HookPoint::new(),
        },
        plain: shadowed::Vec,
    };
    assert_eq!(model.layer_names(), ["layers.0", "layers.1", "boxed", "generic.point"]);
    assert_eq!(
        shadowed::Shadowed::<shadowed::Plain>::paths().layers(1).as_str(),
        "layers.1"
    );
    assert_eq!(
        shadowed::Shadowed::<shadowed::Plain>::paths()
            .generic()
            .point()
            .as_str(),
        "generic.point"
    );
}
