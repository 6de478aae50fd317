// Every mistake is reported in one build, and nothing else: the uses of `Model` in `main` (its
// typed builder, `layer!`, `layer_names`, as a field of another derived struct) add no errors.
use hooks::{Hook, HookPoint, Hookable, LayerTree};
use tch::nn;

#[derive(Hookable)]
#[hook(crate = "::hooks", crate = "::hooks")]
struct Model {
    #[hook(rename = "encoder.0")]
    encoder: Hook<nn::Linear>,
    #[hook(rename = "")]
    pooler: HookPoint,
    #[hook(skp)]
    head: HookPoint,
    #[hook(rename = "head")]
    classifier: HookPoint,
    #[hook(skip, rename = "spare")]
    spare: HookPoint,
}

#[derive(Hookable)]
struct Outer {
    model: Hook<Model>,
}

fn main() {
    let _ = Model::paths().encoder().path();
    let _ = Outer::paths().model().head();
    let _ = hooks::layer!(Outer, "model.head");
    let outer: Option<Outer> = None;
    let _ = outer.map(|outer| outer.layer_names());
}
