//! Turning the layers a user asked for (paths and globs) into layer paths of a model.

use crate::error::{Error, Result};
use crate::path::INPUT_SUFFIX;

/// The resolved selection, without duplicates.
pub(crate) struct Selection {
    pub(crate) names: Vec<String>,
}

/// Resolves `requested` against `available` (a model's own point names, in model order) and
/// `aliases` (their other names, [`crate::LayerTree::alias_names`]). A name is taken as given,
/// from either list; a glob matches own names, or aliases when it matches no own name (so
/// `h.*.mlp` reaches aliases, and `*` does not list a point twice).
pub(crate) fn resolve<L: AsRef<str>>(
    available: &[String],
    aliases: &[String],
    requested: impl IntoIterator<Item = L>,
) -> Result<Selection> {
    let mut names: Vec<String> = Vec::new();
    let mut push = |name: &str| {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    };
    let mut any = false;
    for request in requested {
        any = true;
        let request = request.as_ref().trim();
        if request.contains('*') {
            let matching = |names: &[String]| -> Vec<String> {
                names.iter().filter(|n| glob_match(request, n)).cloned().collect()
            };
            let mut matched = matching(available);
            if matched.is_empty() {
                matched = matching(aliases);
            }
            if matched.is_empty() {
                return Err(Error::NoMatch {
                    pattern: request.to_owned(),
                });
            }
            matched.iter().for_each(|name| push(name));
        } else if available.iter().chain(aliases).any(|n| n == request) {
            push(request);
        } else {
            let every: Vec<String> = available.iter().chain(aliases).cloned().collect();
            return Err(unknown(request, &every));
        }
    }
    if !any {
        return Err(Error::NoLayers);
    }
    Ok(Selection { names })
}

/// [`Error::UnknownLayer`] for `path`, suggesting up to three close names from `available`.
///
/// Closeness is the optimal-string-alignment distance (insertions, deletions, substitutions and
/// swaps of neighbours), the metric `hooks::layer!` suggests by at compile time.
pub(crate) fn unknown(path: &str, available: &[String]) -> Error {
    let limit = (path.len() / 3).max(2);
    let mut close: Vec<(usize, &String)> = available
        .iter()
        .map(|n| (strsim::osa_distance(path, n), n))
        .filter(|&(d, _)| d <= limit)
        .collect();
    // A path that stops short of a capture site (`encoder.layer.0`) has its sites as suggestions.
    if close.is_empty() {
        let prefix = format!("{path}.");
        close = available
            .iter()
            .filter(|n| n.starts_with(&prefix))
            .map(|n| (n.len(), n))
            .collect();
    }
    // Another class's spelling of the same layer: with a prefix this model lacks
    // (`transformer.h.0` for `h.0`), or without one it has (`layers.0` for `model.layers.0`).
    if close.is_empty() {
        let (longer, shorter) = (format!(".{path}"), |n: &str| path.ends_with(&format!(".{n}")));
        close = available
            .iter()
            .filter(|n| n.ends_with(&longer) || shorter(n))
            .map(|n| (n.len().abs_diff(path.len()), n))
            .collect();
    }
    close.sort();
    // Only the best matches: `fc3` suggests `fc1` and `fc2`, not also `act`.
    if let Some(&(best, _)) = close.first() {
        close.retain(|&(d, _)| d == best);
    }
    Error::UnknownLayer {
        path: path.to_owned(),
        suggestions: close.iter().take(3).map(|&(_, n)| n.clone()).collect(),
    }
}

/// Whether `name` matches `pattern` segment by segment; `*` matches any run of characters within
/// one segment (so `encoder.layer.*.output` does not match `encoder.layer.0.attention.output`).
/// Input points match only patterns that end in `:input`, and those match only input points.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    if pattern.ends_with(INPUT_SUFFIX) != name.ends_with(INPUT_SUFFIX) {
        return false;
    }
    let pattern: Vec<&str> = pattern.split('.').collect();
    let name: Vec<&str> = name.split('.').collect();
    pattern.len() == name.len()
        && pattern
            .iter()
            .zip(&name)
            .all(|(p, n)| segment_match(p.as_bytes(), n.as_bytes()))
}

fn segment_match(p: &[u8], n: &[u8]) -> bool {
    match p.split_first() {
        None => n.is_empty(),
        Some((b'*', rest)) => (0..=n.len()).any(|k| segment_match(rest, &n[k..])),
        Some((c, rest)) => n.first() == Some(c) && segment_match(rest, &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_stay_within_a_segment() {
        assert!(glob_match("encoder.layer.*.output", "encoder.layer.11.output"));
        assert!(!glob_match(
            "encoder.layer.*.output",
            "encoder.layer.0.attention.output"
        ));
        assert!(glob_match("h.*.mlp.c_*", "h.3.mlp.c_fc"));
        assert!(!glob_match("h.*", "h.3.mlp"));
        // `*` does not reach across `:input`.
        assert!(!glob_match("h.3.mlp.*", "h.3.mlp.c_fc:input"));
        assert!(glob_match("h.*.mlp.c_fc:input", "h.3.mlp.c_fc:input"));
        assert!(glob_match("h.3.mlp.*:input", "h.3.mlp.c_fc:input"));
        assert!(!glob_match("h.3.mlp.*:input", "h.3.mlp.c_fc"));
    }

    #[test]
    fn aliases_answer_to_names_and_to_globs_that_match_no_own_name() {
        let own: Vec<String> = ["transformer", "transformer.h.0.mlp", "transformer.h.1.mlp", "lm_head"]
            .map(String::from)
            .to_vec();
        let aliases: Vec<String> = ["h.0.mlp", "h.1.mlp"].map(String::from).to_vec();
        let names = |requested: &[&str]| resolve(&own, &aliases, requested.iter()).map(|s| s.names);
        assert_eq!(names(&["h.1.mlp", "lm_head"]).unwrap(), ["h.1.mlp", "lm_head"]);
        assert_eq!(names(&["h.*.mlp"]).unwrap(), ["h.0.mlp", "h.1.mlp"]);
        assert_eq!(
            names(&["transformer.h.*.mlp"]).unwrap(),
            ["transformer.h.0.mlp", "transformer.h.1.mlp"]
        );
        // A glob that matches an own name does not also list its aliases.
        assert_eq!(names(&["*"]).unwrap(), ["transformer", "lm_head"]);
        // Both spellings of one point are two selections, as asked.
        assert_eq!(
            names(&["h.0.mlp", "transformer.h.0.mlp"]).unwrap(),
            ["h.0.mlp", "transformer.h.0.mlp"]
        );
        let err = names(&["h.0.mpl"]).err().unwrap().to_string();
        assert!(err.contains("did you mean `h.0.mlp`?"), "{err}");
        assert!(matches!(names(&["h.*.attn"]), Err(Error::NoMatch { .. })));
    }

    #[test]
    fn unknown_layer_suggests_the_closest_names() {
        let available: Vec<String> = ["encoder.layer.0.output", "encoder.layer.1.output", "pooler"]
            .map(String::from)
            .to_vec();
        let err = unknown("encoder.layr.0.output", &available);
        assert!(
            matches!(&err, Error::UnknownLayer { suggestions, .. } if suggestions == &["encoder.layer.0.output"]),
            "{err:?}"
        );
        let msg = err.to_string();
        assert_eq!(
            msg,
            "unknown layer `encoder.layr.0.output` (did you mean `encoder.layer.0.output`?); \
             list every layer with `layer_names()` on the model or `hooks layers`"
        );
        // Ties are all offered.
        let msg = unknown("encoder.layer.9.output", &available).to_string();
        assert!(
            msg.contains("(did you mean `encoder.layer.0.output` or `encoder.layer.1.output`?)"),
            "{msg}"
        );
        let msg = unknown("encoder.layer.0", &available).to_string();
        assert!(msg.contains("did you mean `encoder.layer.0.output`?"), "{msg}");
        // Another class's prefix, added or left out.
        let msg = unknown("bert.pooler", &available).to_string();
        assert!(msg.contains("did you mean `pooler`?"), "{msg}");
        let msg = unknown("layer.1.output", &available).to_string();
        assert!(msg.contains("did you mean `encoder.layer.1.output`?"), "{msg}");
    }
}
