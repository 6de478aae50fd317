// A small BERT for the `layer-*` and `paths-*` tests, included with `include!`.

use hooks::{Hook, HookPoint, Hookable};
use tch::nn;

#[allow(dead_code)]
#[derive(Hookable)]
struct SelfAttention {
    query: Hook<nn::Linear>,
    key: Hook<nn::Linear>,
    value: Hook<nn::Linear>,
}

#[allow(dead_code)]
#[derive(Hookable)]
struct Attention {
    #[hook(rename = "self")]
    self_attention: SelfAttention,
    output: Hook<nn::Linear>,
}

#[allow(dead_code)]
#[derive(Hookable)]
struct Layer {
    attention: Hook<Attention>,
    heads: [HookPoint; 4],
}

#[allow(dead_code)]
#[derive(Hookable)]
struct Encoder {
    layer: Vec<Hook<Layer>>,
}

#[allow(dead_code)]
#[derive(Hookable)]
struct Pooler {
    dense: Hook<nn::Linear>,
    activation: HookPoint,
}

#[allow(dead_code)]
#[derive(Hookable)]
struct Bert {
    embeddings: Hook<nn::Embedding>,
    encoder: Encoder,
    pooler: Option<Pooler>,
    hidden_size: i64,
}
