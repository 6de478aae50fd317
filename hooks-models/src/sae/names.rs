//! Where an SAE's config says it reads, as the layer `hooks` names: TransformerLens' hook names
//! (`blocks.12.hook_resid_post`) and transformers' module paths (`model.layers.12.output`,
//! Gemma Scope 2's `hf_hook_point_in`), for the architectures `hooks` loads.

/// The layer (output, or `PATH:input`) of a `model_type` model that TransformerLens' `hook`, or
/// transformers' module path with `.output` / `.input`, names; `None` for a name it cannot map.
///
/// | TransformerLens | Llama-likes (pre-norm) | Gemma 2/3 (sandwich), OLMo 2 (post-norm) | GPT-2 |
/// |---|---|---|---|
/// | `blocks.L.hook_resid_pre` | `model.layers.L:input` | same | `transformer.h.L:input` |
/// | `blocks.L.hook_resid_post` | `model.layers.L` | same | `transformer.h.L` |
/// | `blocks.L.hook_attn_out` | `model.layers.L.self_attn` | `model.layers.L.post_attention_layernorm` | `transformer.h.L.attn` |
/// | `blocks.L.hook_mlp_out` | `model.layers.L.mlp` | `model.layers.L.post_feedforward_layernorm` | `transformer.h.L.mlp` |
/// | `blocks.L.attn.hook_z` | `model.layers.L.self_attn.o_proj:input` | same | `transformer.h.L.attn.c_proj:input` |
/// | `blocks.L.hook_mlp_in` | `model.layers.L.mlp:input` | same | `transformer.h.L.mlp:input` |
///
/// (GPT-NeoX: `gpt_neox.layers.L`, `.attention`, `.mlp`, `.attention.dense:input`.)
#[must_use]
pub fn layer_for_hook(hook: &str, model_type: &str) -> Option<String> {
    if let Some(rest) = hook.strip_prefix("blocks.") {
        let (layer, point) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        return transformer_lens(layer, point, model_type);
    }
    // transformers' module paths: `X.output` is X's output, `X.input` its input; the Gemma 3
    // multimodal class nests the text model under `language_model`.
    let (module, input) = match (hook.strip_suffix(".output"), hook.strip_suffix(".input")) {
        (Some(m), _) => (m, false),
        (None, Some(m)) => (m, true),
        (None, None) => (hook, false),
    };
    let module = module.replace("model.language_model.", "model.");
    Some(if input { format!("{module}:input") } else { module })
}

fn transformer_lens(layer: usize, point: &str, model_type: &str) -> Option<String> {
    let (block, attn, mlp, o_proj) = match model_type {
        "gpt2" => (format!("transformer.h.{layer}"), "attn", "mlp", "attn.c_proj"),
        "gpt_neox" => (
            format!("gpt_neox.layers.{layer}"),
            "attention",
            "mlp",
            "attention.dense",
        ),
        "bert" => return None,
        _ => (format!("model.layers.{layer}"), "self_attn", "mlp", "self_attn.o_proj"),
    };
    let normed_out = matches!(model_type, "gemma2" | "gemma3_text" | "olmo2");
    Some(match point {
        "hook_resid_pre" => format!("{block}:input"),
        "hook_resid_post" => block,
        "hook_attn_out" if normed_out => format!("{block}.post_attention_layernorm"),
        "hook_mlp_out" if normed_out => format!("{block}.post_feedforward_layernorm"),
        "hook_attn_out" => format!("{block}.{attn}"),
        "hook_mlp_out" => format!("{block}.{mlp}"),
        "attn.hook_z" => format!("{block}.{o_proj}:input"),
        "hook_mlp_in" => format!("{block}.{mlp}:input"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::layer_for_hook;

    #[test]
    fn names_map_to_the_layers_hooks_gives() {
        let map = |h, m| layer_for_hook(h, m);
        assert_eq!(
            map("blocks.12.hook_resid_post", "gemma2").as_deref(),
            Some("model.layers.12")
        );
        assert_eq!(
            map("blocks.3.hook_mlp_out", "gemma2").as_deref(),
            Some("model.layers.3.post_feedforward_layernorm")
        );
        assert_eq!(
            map("blocks.3.hook_mlp_out", "llama").as_deref(),
            Some("model.layers.3.mlp")
        );
        assert_eq!(
            map("blocks.0.attn.hook_z", "gpt2").as_deref(),
            Some("transformer.h.0.attn.c_proj:input")
        );
        assert_eq!(
            map("blocks.5.hook_resid_pre", "qwen2").as_deref(),
            Some("model.layers.5:input")
        );
        assert_eq!(
            map("model.language_model.layers.7.output", "gemma3_text").as_deref(),
            Some("model.layers.7")
        );
        assert_eq!(
            map("model.layers.7.self_attn.o_proj.input", "gemma3_text").as_deref(),
            Some("model.layers.7.self_attn.o_proj:input")
        );
        assert_eq!(map("blocks.1.hook_something", "llama"), None);
    }
}
