//! The static description of a type's layer tree, and the compile-time check of layer paths.
//!
//! Every [`Hookable`](crate::Hookable) type has a `const SCHEMA`. `hooks::layer!` walks it in a
//! `const` block, so a path that names no capture site fails to compile. Array lengths are known
//! here; `Vec` lengths are not, so `Vec` indices are checked when a store binds to an instance.

/// One node of a layer tree.
#[derive(Debug)]
#[non_exhaustive]
pub enum Schema {
    /// A `#[derive(Hookable)]` struct.
    Struct {
        /// The Rust type name.
        name: &'static str,
        /// Its fields in declaration order; non-hookable fields have no schema.
        fields: &'static [FieldSchema],
    },
    /// A capture site: `Hook<M>` (with `M`'s tree inside) or `HookPoint` (with nothing inside).
    Site {
        /// The wrapped module's tree, for `Hook<M>`.
        inner: Option<&'static Schema>,
    },
    /// `Vec<T>` (length known at run time) or `[T; N]`.
    Seq {
        /// The element's tree.
        elem: &'static Schema,
        /// `Some(N)` for arrays.
        len: Option<usize>,
    },
    /// `Option<T>`: transparent in paths, absent at run time when `None`.
    Optional {
        /// The tree when present.
        inner: &'static Schema,
    },
    /// A module with no capture site inside (tch's `nn` types).
    Leaf {
        /// The Rust type name.
        name: &'static str,
    },
}

/// A struct field in a [`Schema::Struct`].
#[derive(Debug)]
pub struct FieldSchema {
    /// The layer-path segment (the field name, or its `#[hook(rename)]`).
    pub name: &'static str,
    /// The field type's tree, or `None` when the type is not `Hookable`.
    pub schema: Option<&'static Schema>,
}

impl Schema {
    /// Every capturable path of this tree, with `*` for index segments, in field order.
    ///
    /// ```
    /// # use hooks_runtime::{Hook, HookPoint, Hookable};
    /// # use tch::nn;
    /// assert_eq!(<Vec<HookPoint>>::SCHEMA.templates(), ["*"]);
    /// assert_eq!(<Hook<nn::Linear>>::SCHEMA.templates(), [""]);
    /// ```
    #[must_use]
    pub fn templates(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_templates(&mut String::new(), &mut out);
        out
    }

    fn collect_templates(&self, prefix: &mut String, out: &mut Vec<String>) {
        let mut child = |prefix: &mut String, segment: &str, schema: &Schema| {
            let len = prefix.len();
            if !prefix.is_empty() {
                prefix.push('.');
            }
            prefix.push_str(segment);
            schema.collect_templates(prefix, out);
            prefix.truncate(len);
        };
        match self {
            Schema::Struct { fields, .. } => {
                for field in *fields {
                    if let Some(schema) = field.schema {
                        child(prefix, field.name, schema);
                    }
                }
            }
            Schema::Site { inner } => {
                out.push(prefix.clone());
                if let Some(inner) = inner {
                    inner.collect_templates(prefix, out);
                }
            }
            Schema::Seq { elem, .. } => child(prefix, "*", elem),
            Schema::Optional { inner } => inner.collect_templates(prefix, out),
            Schema::Leaf { .. } => {}
        }
    }

    /// Whether any capture site lies in this tree.
    #[must_use]
    pub const fn has_sites(&self) -> bool {
        match self {
            Schema::Struct { fields, .. } => {
                let mut i = 0;
                while i < fields.len() {
                    if let Some(schema) = fields[i].schema {
                        if schema.has_sites() {
                            return true;
                        }
                    }
                    i += 1;
                }
                false
            }
            Schema::Site { .. } => true,
            Schema::Seq { elem, .. } => elem.has_sites(),
            Schema::Optional { inner } => inner.has_sites(),
            Schema::Leaf { .. } => false,
        }
    }
}

/// Why a path given to `hooks::layer!` names no capture site: the text of the compile error.
#[doc(hidden)]
pub struct LayerPathError(Msg);

impl LayerPathError {
    /// The message.
    #[must_use]
    pub const fn message(&self) -> &str {
        self.0.as_str()
    }
}

/// Checks `path` against `root` at compile time; used by `hooks::layer!`.
///
/// It returns the error rather than panicking so that `layer!` panics in its own `const`: then
/// rustc reports the message at the `layer!` call, without this module's frames around it.
#[doc(hidden)]
#[must_use]
pub const fn check_layer_path(root: &'static Schema, path: &'static str) -> Option<LayerPathError> {
    match find_site(root, path) {
        Ok(()) => None,
        Err(msg) => Some(LayerPathError(msg)),
    }
}

// Only ever evaluated at compile time, so the size of the error (a fixed message buffer, as
// `const fn` cannot allocate) costs nothing at run time.
#[allow(clippy::result_large_err)]
const fn find_site(root: &'static Schema, path: &'static str) -> Result<(), Msg> {
    let bytes = path.as_bytes();
    if bytes.is_empty() {
        return Err(Msg::new().push("empty layer path; name a capture site, like `encoder.layer.0`"));
    }
    let mut node = root;
    let mut start = 0;
    while start <= bytes.len() {
        let mut end = start;
        while end < bytes.len() && bytes[end] != b'.' {
            end += 1;
        }
        let segment = Span { start, end };
        if segment.start == segment.end {
            return Err(Msg::new()
                .push("empty segment in layer path `")
                .push(path)
                .push("`; segments are separated by a single `.`"));
        }
        node = match step(node, path, segment) {
            Ok(next) => next,
            Err(msg) => return Err(msg),
        };
        start = end + 1;
    }
    // The path must end on a capture site (through any `Option`).
    let mut end_node = node;
    while let Schema::Optional { inner } = end_node {
        end_node = inner;
    }
    match end_node {
        Schema::Site { .. } => Ok(()),
        Schema::Seq { .. } => Err(Msg::new()
            .push("layer path `")
            .push(path)
            .push("` names a list; add an index, like `")
            .push(path)
            .push(".0`")),
        Schema::Struct { name, fields } => Err(Msg::new()
            .push("`")
            .push(path)
            .push("` is not a capture site; name a layer inside it (")
            .layers_of(name, fields)
            .push("), or wrap the field in `Hook<...>` to capture its output")),
        // `Optional` was unwrapped above.
        Schema::Leaf { .. } | Schema::Optional { .. } => Err(Msg::new()
            .push("`")
            .push(path)
            .push("` is a module without a capture site; wrap the field in `Hook<...>` to capture its output")),
    }
}

#[derive(Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

// See `find_site` about the error's size.
#[allow(clippy::result_large_err)]
const fn step(node: &'static Schema, path: &'static str, seg: Span) -> Result<&'static Schema, Msg> {
    let bytes = path.as_bytes();
    let before = Span {
        start: 0,
        end: seg.start.saturating_sub(1),
    };
    let rest = Span {
        start: seg.start,
        end: bytes.len(),
    };
    match node {
        Schema::Optional { inner } | Schema::Site { inner: Some(inner) } => step(inner, path, seg),
        Schema::Site { inner: None } => Err(Msg::new()
            .push("`")
            .push_bytes(bytes, before)
            .push("` is a hook point and has no sub-layers; remove `.")
            .push_bytes(bytes, rest)
            .push("`")),
        Schema::Leaf { name } => Err(Msg::new()
            .push("`")
            .push_bytes(bytes, before)
            .push("` (`")
            .push(name)
            .push("`) has no sub-layers; remove `.")
            .push_bytes(bytes, rest)
            .push("`")),
        Schema::Struct { name, fields } => {
            let mut i = 0;
            while i < fields.len() {
                if eq(fields[i].name.as_bytes(), bytes, seg) {
                    if let Some(schema) = fields[i].schema {
                        return Ok(schema);
                    }
                    return Err(Msg::new()
                        .segment_in(path, seg)
                        .push(" is a field of `")
                        .push(name)
                        .push("` but not a layer, as its type is not `Hookable`; ")
                        .layers_of(name, fields));
                }
                i += 1;
            }
            let mut msg = Msg::new().push("unknown layer ").segment_in(path, seg).push("; ");
            if let Some(close) = closest_layer(fields, bytes, seg) {
                msg = msg.push("did you mean `").push(close).push("`? ");
            }
            Err(msg.layers_of(name, fields))
        }
        Schema::Seq { elem, len } => {
            let mut index: usize = 0;
            let mut i = seg.start;
            while i < seg.end {
                let b = bytes[i];
                if !b.is_ascii_digit() || (i > seg.start && index == 0 && bytes[seg.start] == b'0') {
                    return Err(Msg::new()
                        .segment_in(path, seg)
                        .push(" must be a list index such as `0`"));
                }
                index = match index.checked_mul(10) {
                    Some(v) => v + (b - b'0') as usize,
                    None => return Err(Msg::new().push("index too large in `").push(path).push("`")),
                };
                i += 1;
            }
            if let Some(n) = len {
                if index >= *n {
                    let msg = Msg::new()
                        .push("index ")
                        .segment_in(path, seg)
                        .push(" is out of range for an array of length ")
                        .push_usize(*n);
                    return Err(if *n == 0 {
                        msg.push("; the array is empty")
                    } else {
                        msg.push("; use `0` to `").push_usize(*n - 1).push("`")
                    });
                }
            }
            Ok(elem)
        }
    }
}

const fn eq(name: &[u8], path: &[u8], seg: Span) -> bool {
    if name.len() != seg.end - seg.start {
        return false;
    }
    let mut i = 0;
    while i < name.len() {
        if name[i] != path[seg.start + i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The longest name [`edit_distance`] compares; longer ones get no suggestion.
const MAX_SUGGEST_LEN: usize = 64;

/// The layer among `fields` closest to the misspelt segment, if one is close enough: at most one
/// edit per three characters, and at least one.
const fn closest_layer(fields: &'static [FieldSchema], path: &[u8], seg: Span) -> Option<&'static str> {
    let typed_len = seg.end - seg.start;
    let limit = if typed_len / 3 > 1 { typed_len / 3 } else { 1 };
    let mut best: Option<&'static str> = None;
    let mut best_distance = limit + 1;
    let mut i = 0;
    while i < fields.len() {
        if fields[i].schema.is_some() {
            if let Some(distance) = edit_distance(fields[i].name.as_bytes(), path, seg) {
                if distance < best_distance {
                    best = Some(fields[i].name);
                    best_distance = distance;
                }
            }
        }
        i += 1;
    }
    best
}

/// The optimal-string-alignment distance between `name` and the segment `seg` of `path`: the
/// number of insertions, deletions, substitutions and swaps of neighbours that turn one into the
/// other. `None` when either is longer than [`MAX_SUGGEST_LEN`].
const fn edit_distance(name: &[u8], path: &[u8], seg: Span) -> Option<usize> {
    let (n, m) = (name.len(), seg.end - seg.start);
    if n > MAX_SUGGEST_LEN || m > MAX_SUGGEST_LEN {
        return None;
    }
    // Three rows of the dynamic-programming table: two back (for swaps), one back, current.
    let mut two_back = [0usize; MAX_SUGGEST_LEN + 1];
    let mut one_back = [0usize; MAX_SUGGEST_LEN + 1];
    let mut current = [0usize; MAX_SUGGEST_LEN + 1];
    let mut j = 0;
    while j <= m {
        one_back[j] = j;
        j += 1;
    }
    let mut i = 1;
    while i <= n {
        current[0] = i;
        let mut j = 1;
        while j <= m {
            let (a, b) = (name[i - 1], path[seg.start + j - 1]);
            let substitution = one_back[j - 1] + if a == b { 0 } else { 1 };
            let mut best = min(min(one_back[j] + 1, current[j - 1] + 1), substitution);
            if i > 1 && j > 1 && a == path[seg.start + j - 2] && name[i - 2] == b {
                best = min(best, two_back[j - 2] + 1);
            }
            current[j] = best;
            j += 1;
        }
        two_back = one_back;
        one_back = current;
        i += 1;
    }
    Some(one_back[m])
}

const fn min(a: usize, b: usize) -> usize {
    if a < b {
        a
    } else {
        b
    }
}

const MSG_CAP: usize = 1024;

/// A message built at compile time in a fixed buffer (no allocation in `const fn`).
struct Msg {
    buf: [u8; MSG_CAP],
    len: usize,
}

impl Msg {
    const fn new() -> Self {
        Msg {
            buf: [0; MSG_CAP],
            len: 0,
        }
    }

    const fn push(self, s: &str) -> Self {
        let bytes = s.as_bytes();
        self.push_bytes(
            bytes,
            Span {
                start: 0,
                end: bytes.len(),
            },
        )
    }

    /// Appends `bytes[span]`, as much of it as fits.
    const fn push_bytes(mut self, bytes: &[u8], span: Span) -> Self {
        let mut i = span.start;
        while i < span.end && self.len < MSG_CAP {
            self.buf[self.len] = bytes[i];
            self.len += 1;
            i += 1;
        }
        self
    }

    const fn push_usize(mut self, mut n: usize) -> Self {
        let mut digits = [0u8; 20];
        let mut k = 0;
        loop {
            digits[k] = b'0' + (n % 10) as u8;
            k += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        while k > 0 && self.len < MSG_CAP {
            k -= 1;
            self.buf[self.len] = digits[k];
            self.len += 1;
        }
        self
    }

    /// Appends "`seg` in `path`", or just "`path`" when the segment is the whole path.
    const fn segment_in(self, path: &str, seg: Span) -> Self {
        let msg = self.push("`").push_bytes(path.as_bytes(), seg).push("`");
        if seg.start == 0 && seg.end == path.len() {
            msg
        } else {
            msg.push(" in `").push(path).push("`")
        }
    }

    /// Appends "`Name` has layers `a`, `b` and `c`" (the hookable fields), "`Name` has one layer,
    /// `a`", or "`Name` has no layers".
    const fn layers_of(mut self, name: &str, fields: &[FieldSchema]) -> Self {
        let mut count = 0;
        let mut i = 0;
        while i < fields.len() {
            if fields[i].schema.is_some() {
                count += 1;
            }
            i += 1;
        }
        self = self.push("`").push(name).push("` has ");
        if count == 0 {
            return self.push("no layers");
        }
        self = self.push(if count == 1 { "one layer, " } else { "layers " });
        let mut seen = 0;
        i = 0;
        while i < fields.len() {
            if fields[i].schema.is_some() {
                if seen > 0 {
                    self = self.push(if seen + 1 == count { " and " } else { ", " });
                }
                self = self.push("`").push(fields[i].name).push("`");
                seen += 1;
            }
            i += 1;
        }
        self
    }

    /// The message so far; if it was cut inside a multi-byte character, up to that character.
    const fn as_str(&self) -> &str {
        let (head, _) = self.buf.split_at(self.len);
        match core::str::from_utf8(head) {
            Ok(text) => text,
            Err(error) => {
                let (valid, _) = head.split_at(error.valid_up_to());
                match core::str::from_utf8(valid) {
                    Ok(text) => text,
                    Err(_) => "invalid layer path",
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distance(a: &str, b: &str) -> Option<usize> {
        edit_distance(a.as_bytes(), b.as_bytes(), Span { start: 0, end: b.len() })
    }

    /// The compile-time distance is `strsim::osa_distance` (what the runtime suggests by), written
    /// as a `const fn` because `layer!` runs it in a `const`; this keeps the two one metric.
    #[test]
    fn edit_distance_is_strsims_osa_distance() {
        let words = [
            "",
            "a",
            "query",
            "qeury",
            "key",
            "value",
            "dense",
            "LayerNorm",
            "layernorm",
            "Layer_Norm",
            "attention",
            "attnetion",
            "intermediate",
            "output",
            "pooler",
            "ca",
            "abc",
            "kitten",
            "sitting",
        ];
        for a in words {
            for b in words {
                assert_eq!(distance(a, b), Some(strsim::osa_distance(a, b)), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn edit_distance_counts_edits_and_swaps() {
        assert_eq!(distance("query", "query"), Some(0));
        assert_eq!(distance("query", "qeury"), Some(1)); // one swap
        assert_eq!(distance("encoder", "encodr"), Some(1)); // one deletion
        assert_eq!(distance("kitten", "sitting"), Some(3)); // the textbook example
        assert_eq!(distance("", "abc"), Some(3));
        assert_eq!(distance(&"a".repeat(MAX_SUGGEST_LEN + 1), "a"), None);
    }

    const LEAF: Schema = Schema::Leaf { name: "Linear" };
    const SITE: Schema = Schema::Site { inner: Some(&LEAF) };
    const POINT: Schema = Schema::Site { inner: None };
    const HEADS: Schema = Schema::Seq {
        elem: &POINT,
        len: Some(2),
    };
    const ROOT: Schema = Schema::Struct {
        name: "Model",
        fields: &[
            FieldSchema {
                name: "dense",
                schema: Some(&SITE),
            },
            FieldSchema {
                name: "heads",
                schema: Some(&HEADS),
            },
            FieldSchema {
                name: "config",
                schema: None,
            },
        ],
    };

    fn error(path: &'static str) -> String {
        check_layer_path(&ROOT, path)
            .map(|error| error.message().to_owned())
            .unwrap_or_default()
    }

    #[test]
    fn valid_paths_pass() {
        assert!(check_layer_path(&ROOT, "dense").is_none());
        assert!(check_layer_path(&ROOT, "heads.1").is_none());
    }

    #[test]
    fn errors_name_the_segment_and_the_choices() {
        assert_eq!(
            error("dnese"),
            "unknown layer `dnese`; did you mean `dense`? `Model` has layers `dense` and `heads`"
        );
        assert_eq!(
            error("xyz"),
            "unknown layer `xyz`; `Model` has layers `dense` and `heads`"
        );
        assert_eq!(
            error("config"),
            "`config` is a field of `Model` but not a layer, as its type is not `Hookable`; \
             `Model` has layers `dense` and `heads`"
        );
        assert_eq!(
            error("heads.2"),
            "index `2` in `heads.2` is out of range for an array of length 2; use `0` to `1`"
        );
        assert_eq!(error("heads.01"), "`01` in `heads.01` must be a list index such as `0`");
        assert_eq!(
            error("dense.weight"),
            "`dense` (`Linear`) has no sub-layers; remove `.weight`"
        );
        assert_eq!(
            error("heads.0.x"),
            "`heads.0` is a hook point and has no sub-layers; remove `.x`"
        );
        assert_eq!(
            error(""),
            "empty layer path; name a capture site, like `encoder.layer.0`"
        );
    }

    #[test]
    fn a_message_cut_inside_a_character_ends_before_it() {
        let long = "é".repeat(MSG_CAP);
        let msg = Msg::new().push("x").push(&long);
        assert_eq!(msg.len, MSG_CAP);
        assert_eq!(msg.as_str().len(), MSG_CAP - 1);
        assert!(msg.as_str().ends_with('é'));
    }
}
