//! `--pool`: reduce `[batch, tokens, ...]` outputs over the token axis, respecting the mask.

use std::path::Path;

use tch::{Kind, Tensor};

use crate::error::CliError;

/// How to reduce the token axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pool {
    /// Keep every token: `[samples, tokens, ...]`.
    None,
    /// Mean over the non-padding tokens (sentence-transformers' mean pooling).
    Mean,
    /// The first token (BERT's `[CLS]`).
    First,
    /// The last non-padding token (GPT-2's summary position).
    Last,
    /// The largest value of each feature over the non-padding tokens (sentence-transformers' max
    /// pooling).
    Max,
    /// What the model folder's sentence-transformers pipeline does after the transformer: the
    /// pooling its `1_Pooling/config.json` names, then L2 normalisation when `modules.json` lists
    /// a `Normalize` module. It reproduces the model's sentence embeddings.
    Model,
}

/// A pooling and whether its result is L2-normalised afterwards (sentence-transformers'
/// `Normalize`, `x / max(‖x‖, 1e-12)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pooling {
    /// The reduction of the token axis.
    pub pool: Pool,
    /// Whether pooled rows are scaled to unit length.
    pub normalize: bool,
}

impl Pooling {
    /// `--pool` as given; `Pool::Model` is resolved from `dir` (see [`from_model_folder`]).
    pub fn resolve(pool: Pool, dir: &Path) -> Result<Pooling, CliError> {
        match pool {
            Pool::Model => from_model_folder(dir),
            pool => Ok(Pooling { pool, normalize: false }),
        }
    }

    /// [`Pool::apply`], then the normalisation, on outputs that were pooled.
    pub fn apply(self, output: &Tensor, mask: &Tensor) -> Tensor {
        let pooled = self.pool.apply(output, mask);
        if !self.normalize || !self.pool.reduces(output, mask) {
            return pooled;
        }
        let wide = pooled.to_kind(Kind::Float);
        let norm = wide.norm_scalaropt_dim(2, [-1i64].as_slice(), true).clamp_min(1e-12);
        (wide / norm).to_kind(pooled.kind())
    }
}

/// What a sentence-transformers folder does after its transformer: the pooling that its
/// `modules.json` (or, without one, `1_Pooling/`) config names, and whether a `Normalize` module
/// follows.
///
/// # Errors
///
/// [`CliError::Usage`] when the folder has no pooling config, it names several poolings or one
/// this command does not compute (`mean_sqrt_len`, `weightedmean`), or the pipeline has a
/// module this command does not run (a `Dense` projection, say).
pub fn from_model_folder(dir: &Path) -> Result<Pooling, CliError> {
    let (pooling_dir, normalize) = pipeline(dir)?;
    let pool = pooling_of(&dir.join(pooling_dir))?;
    Ok(Pooling { pool, normalize })
}

/// The pooling module's folder and whether a `Normalize` follows, from `modules.json`; without
/// one, `1_Pooling` and no normalisation.
fn pipeline(dir: &Path) -> Result<(String, bool), CliError> {
    let path = dir.join("modules.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(("1_Pooling".into(), false));
    };
    let bad = |why: String| CliError::Usage(format!("`{}`: {why}", path.display()));
    let modules: Vec<serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| bad(format!("not a JSON list of modules ({e})")))?;
    let mut pooling = None;
    let mut normalize = false;
    for module in &modules {
        let kind = module.get("type").and_then(serde_json::Value::as_str).unwrap_or("");
        let folder = module.get("path").and_then(serde_json::Value::as_str).unwrap_or("");
        match kind.rsplit('.').next().unwrap_or("") {
            "Transformer" => {}
            "Pooling" => pooling = Some(folder.to_owned()),
            "Normalize" => normalize = true,
            other => {
                return Err(bad(format!(
                    "`--pool model` cannot reproduce this pipeline: it has a `{other}` module, which `hooks extract` does not run; pass --pool mean, first, last or max"
                )))
            }
        }
    }
    let pooling = pooling.ok_or_else(|| bad("no `Pooling` module; pass --pool mean, first, last or max".into()))?;
    Ok((pooling, normalize))
}

/// The pooling a sentence-transformers `Pooling` folder's `config.json` names.
fn pooling_of(folder: &Path) -> Result<Pool, CliError> {
    let path = folder.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|_| {
        CliError::Usage(format!(
            "`--pool model` needs the sentence-transformers pooling config `{}`, which is missing; pass --pool mean, first, last or max",
            path.display()
        ))
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| CliError::Usage(format!("`{}` is not JSON ({e})", path.display())))?;
    let on = |key: &str| json.get(key).and_then(serde_json::Value::as_bool) == Some(true);
    let modes = [
        ("pooling_mode_mean_tokens", Some(Pool::Mean)),
        ("pooling_mode_cls_token", Some(Pool::First)),
        ("pooling_mode_max_tokens", Some(Pool::Max)),
        ("pooling_mode_lasttoken", Some(Pool::Last)),
        ("pooling_mode_mean_sqrt_len_tokens", None),
        ("pooling_mode_weightedmean_tokens", None),
    ];
    let chosen: Vec<&(&str, Option<Pool>)> = modes.iter().filter(|(key, _)| on(key)).collect();
    match chosen.as_slice() {
        [(_, Some(pool))] => Ok(*pool),
        [(key, None)] => Err(CliError::Usage(format!(
            "`{}` asks for `{key}`, which `hooks extract` does not compute; pass --pool mean, first, last or max",
            path.display()
        ))),
        [] => Err(CliError::Usage(format!(
            "`{}` turns on no pooling mode",
            path.display()
        ))),
        _ => Err(CliError::Usage(format!(
            "`{}` turns on several pooling modes (concatenated); pass one with --pool mean, first, last or max",
            path.display()
        ))),
    }
}

impl Pool {
    /// Whether [`apply`](Self::apply) reduces `output`'s token axis (it has one matching `mask`,
    /// and this is a pooling).
    pub fn reduces(self, output: &Tensor, mask: &Tensor) -> bool {
        let size = output.size();
        !matches!(self, Pool::None | Pool::Model) && size.len() >= 3 && size[..2] == mask.size()[..]
    }

    /// Pools `output` (`[batch, tokens, ...]`) with `mask` (`[batch, tokens]`, 1 = real token).
    /// Outputs without a token axis matching the mask (e.g. BERT's pooler) pass through. Mean and
    /// max are computed in f32 when the output is f16 or bf16, then given the output's dtype.
    ///
    /// `Pool::Model` must have been resolved with [`from_model_folder`] first; here it passes
    /// the output through like `Pool::None`.
    pub fn apply(self, output: &Tensor, mask: &Tensor) -> Tensor {
        if !self.reduces(output, mask) {
            return output.shallow_clone();
        }
        let (batch, tokens) = (mask.size()[0], mask.size()[1]);
        let size = output.size();
        let kind = output.kind();
        let wide = if matches!(kind, Kind::Half | Kind::BFloat16) {
            Kind::Float
        } else {
            kind
        };
        let mut weight_shape = vec![batch, tokens];
        weight_shape.extend(std::iter::repeat_n(1, size.len() - 2));
        let weights = || {
            mask.to_kind(wide)
                .to_device(output.device())
                .view(weight_shape.as_slice())
        };
        match self {
            Pool::None | Pool::Model => output.shallow_clone(),
            Pool::First => output.select(1, 0),
            Pool::Last => {
                let last = (mask.sum_dim_intlist(1, false, Kind::Int64) - 1).clamp_min(0);
                let mut index_shape = vec![batch, 1];
                index_shape.extend(std::iter::repeat_n(1, size.len() - 2));
                let mut expand = size.clone();
                expand[1] = 1;
                let index = last
                    .view(index_shape.as_slice())
                    .expand(expand.as_slice(), false)
                    .to_device(output.device());
                output.gather(1, &index, false).squeeze_dim(1)
            }
            Pool::Mean => {
                let weights = weights();
                let summed = (output.to_kind(wide) * &weights).sum_dim_intlist(1, false, wide);
                // sentence-transformers clamps the count at 1e-9 so an all-padding row gives 0.
                let count = weights.sum_dim_intlist(1, false, wide).clamp_min(1e-9);
                (summed / count).to_kind(kind)
            }
            Pool::Max => {
                // sentence-transformers sets padding to -1e9 before the max, so an all-padding
                // row gives -1e9 there too.
                let padding = weights().eq(0.0);
                let filled = output.to_kind(wide).masked_fill(&padding, -1e9);
                filled.amax(1, false).to_kind(kind)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn data() -> (Tensor, Tensor) {
        // Two samples, three tokens, two features; the second sample has one padding token.
        let x = Tensor::from_slice(&[1.0f32, 2., 3., 4., 5., 6., 10., 20., 30., 40., 99., 99.]).view([2, 3, 2]);
        let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 0]).view([2, 3]);
        (x, mask)
    }

    #[test]
    fn pooling_respects_the_mask() {
        let (x, mask) = data();
        let f = |v: &[f32]| Tensor::from_slice(v).view([2, 2]);
        assert_eq!(Pool::Mean.apply(&x, &mask), f(&[3., 4., 20., 30.]));
        assert_eq!(Pool::First.apply(&x, &mask), f(&[1., 2., 10., 20.]));
        assert_eq!(Pool::Last.apply(&x, &mask), f(&[5., 6., 30., 40.]));
        // The padding token's 99 is not a maximum.
        assert_eq!(Pool::Max.apply(&x, &mask), f(&[5., 6., 30., 40.]));
        assert_eq!(Pool::None.apply(&x, &mask), x);
        let pooled = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        assert_eq!(
            Pool::Mean.apply(&pooled, &mask),
            pooled,
            "outputs without a token axis pass through"
        );
    }

    /// f16 sums of many values lose digits; the mean is taken in f32 and rounded once.
    #[test]
    fn half_precision_means_are_accumulated_in_f32() {
        // 4096 tokens of 1.0 and one of 2048: the exact mean is 4096 * 1 + 2048 over 4097.
        let mut values = vec![1.0f32; 4096];
        values.push(2048.0);
        let x = Tensor::from_slice(&values).view([1, 4097, 1]).to_kind(Kind::Half);
        let mask = Tensor::ones([1, 4097], (Kind::Int64, Device::Cpu));
        let mean = Pool::Mean.apply(&x, &mask);
        assert_eq!(mean.kind(), Kind::Half);
        let exact = 6144.0 / 4097.0;
        let got = mean.to_kind(Kind::Double).double_value(&[0, 0]);
        // One f16 rounding of the exact mean (f16 has 10 fraction bits: 2^-10 relative).
        assert!((got - exact).abs() <= exact * 2f64.powi(-10), "{got} vs {exact}");
    }

    #[test]
    fn the_model_folder_names_its_pooling() {
        let dir = tempfile::tempdir().unwrap();
        let err = from_model_folder(dir.path()).unwrap_err().to_string();
        assert!(err.contains("1_Pooling/config.json"), "{err}");
        std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
        let write = |json: &str| std::fs::write(dir.path().join("1_Pooling/config.json"), json).unwrap();
        for (key, pool) in [
            ("pooling_mode_mean_tokens", Pool::Mean),
            ("pooling_mode_cls_token", Pool::First),
            ("pooling_mode_max_tokens", Pool::Max),
            ("pooling_mode_lasttoken", Pool::Last),
        ] {
            write(&format!(
                r#"{{"word_embedding_dimension": 384, "{key}": true, "pooling_mode_max_tokens_x": false}}"#
            ));
            assert_eq!(
                from_model_folder(dir.path()).unwrap(),
                Pooling { pool, normalize: false },
                "{key}"
            );
        }
        write(r#"{"pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": true}"#);
        assert!(from_model_folder(dir.path())
            .unwrap_err()
            .to_string()
            .contains("several"));
        write(r#"{"pooling_mode_weightedmean_tokens": true}"#);
        assert!(from_model_folder(dir.path())
            .unwrap_err()
            .to_string()
            .contains("weightedmean"));

        // `modules.json` says where the pooling is and whether a `Normalize` follows.
        write(r#"{"pooling_mode_cls_token": true}"#);
        let modules = |json: &str| std::fs::write(dir.path().join("modules.json"), json).unwrap();
        modules(
            r#"[{"path": "", "type": "sentence_transformers.models.Transformer"},
                {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#,
        );
        let pooling = from_model_folder(dir.path()).unwrap();
        assert_eq!(
            pooling,
            Pooling {
                pool: Pool::First,
                normalize: true
            }
        );
        modules(
            r#"[{"path": "", "type": "sentence_transformers.models.Transformer"},
                {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]"#,
        );
        assert!(from_model_folder(dir.path())
            .unwrap_err()
            .to_string()
            .contains("`Dense` module"));
    }

    #[test]
    fn normalised_pooling_gives_unit_rows() {
        let (x, mask) = data();
        let pooling = Pooling {
            pool: Pool::Mean,
            normalize: true,
        };
        // The means are [3, 4] (length 5) and [20, 30].
        let got = pooling.apply(&x, &mask);
        let want = Tensor::from_slice(&[0.6f32, 0.8, 20.0 / 1300f32.sqrt(), 30.0 / 1300f32.sqrt()]).view([2, 2]);
        assert!(got.allclose(&want, 1e-6, 1e-7, false), "{got}");
        // Outputs without a token axis are not pooled, and so not normalised.
        let pooled = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
        assert_eq!(pooling.apply(&pooled, &mask), pooled);
    }
}
