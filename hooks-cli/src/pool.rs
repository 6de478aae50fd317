//! `--pool`: which of the library's poolings to run, and `--pool model`, read from a
//! sentence-transformers folder.

use std::path::Path;

use crate::error::CliError;

/// `--pool`: how to reduce the token axis.
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
    pub pool: hooks::Pool,
    /// Whether pooled rows are scaled to unit length.
    pub normalize: bool,
}

impl Pooling {
    /// `--pool` as given; `Pool::Model` is resolved from `dir` (see [`from_model_folder`]).
    pub fn resolve(pool: Pool, dir: &Path) -> Result<Pooling, CliError> {
        let plain = |pool| Ok(Pooling { pool, normalize: false });
        match pool {
            Pool::None => plain(hooks::Pool::None),
            Pool::Mean => plain(hooks::Pool::Mean),
            Pool::First => plain(hooks::Pool::First),
            Pool::Last => plain(hooks::Pool::Last),
            Pool::Max => plain(hooks::Pool::Max),
            Pool::Model => from_model_folder(dir),
        }
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
fn pooling_of(folder: &Path) -> Result<hooks::Pool, CliError> {
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
        ("pooling_mode_mean_tokens", Some(hooks::Pool::Mean)),
        ("pooling_mode_cls_token", Some(hooks::Pool::First)),
        ("pooling_mode_max_tokens", Some(hooks::Pool::Max)),
        ("pooling_mode_lasttoken", Some(hooks::Pool::Last)),
        ("pooling_mode_mean_sqrt_len_tokens", None),
        ("pooling_mode_weightedmean_tokens", None),
    ];
    let chosen: Vec<&(&str, Option<hooks::Pool>)> = modes.iter().filter(|(key, _)| on(key)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_folder_names_its_pooling() {
        let dir = tempfile::tempdir().unwrap();
        let err = from_model_folder(dir.path()).unwrap_err().to_string();
        assert!(err.contains("1_Pooling/config.json"), "{err}");
        std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
        let write = |json: &str| std::fs::write(dir.path().join("1_Pooling/config.json"), json).unwrap();
        for (key, pool) in [
            ("pooling_mode_mean_tokens", hooks::Pool::Mean),
            ("pooling_mode_cls_token", hooks::Pool::First),
            ("pooling_mode_max_tokens", hooks::Pool::Max),
            ("pooling_mode_lasttoken", hooks::Pool::Last),
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
                pool: hooks::Pool::First,
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
}
