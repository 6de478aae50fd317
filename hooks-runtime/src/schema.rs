//! The static description of a type's layer tree, and the compile-time check of layer paths.
//!
//! Every [`Hookable`](crate::Hookable) type has a `const SCHEMA`. `hooks::layer!` walks it in a
//! `const` block, so a path that names no capture site fails to compile. Array lengths are known
//! here; `Vec` lengths are not, so `Vec` indices are checked when a store binds to an instance.

use crate::path::LayerPath;

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

/// Checks `path` against `root` at compile time; used by `hooks::layer!`.
///
/// # Panics
///
/// In a `const` context that is a compile error whose message names the bad segment and the
/// valid names at that level. That is the point.
#[doc(hidden)]
#[must_use]
pub const fn check_layer_path(root: &'static Schema, path: &'static str) -> LayerPath {
    let bytes = path.as_bytes();
    if bytes.is_empty() {
        fail(Msg::new().push("empty layer path; name a capture site, e.g. `encoder.layer.0`"));
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
            fail(
                Msg::new()
                    .push("empty segment in layer path `")
                    .push(path)
                    .push("`; segments are separated by a single `.`"),
            );
        }
        node = step(node, path, segment);
        start = end + 1;
    }
    // The path must end on a capture site (through any `Option`).
    let mut end_node = node;
    while let Schema::Optional { inner } = end_node {
        end_node = inner;
    }
    match end_node {
        Schema::Site { .. } => LayerPath::from_static(path),
        Schema::Seq { .. } => fail(
            Msg::new().push("layer path `").push(path).push("` names a list; add an index, e.g. `").push(path).push(".0`"),
        ),
        Schema::Struct { fields, .. } => fail(
            Msg::new()
                .push("`")
                .push(path)
                .push("` has no capture site of its own; wrap it in `Hook<...>` to capture its output, or name one inside it: ")
                .names(fields),
        ),
        // `Optional` was unwrapped above.
        Schema::Leaf { .. } | Schema::Optional { .. } => fail(
            Msg::new().push("`").push(path).push("` is a module without a capture site; wrap the field in `Hook<...>` to capture its output"),
        ),
    }
}

#[derive(Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

const fn step(node: &'static Schema, path: &'static str, seg: Span) -> &'static Schema {
    let bytes = path.as_bytes();
    match node {
        Schema::Optional { inner } => step(inner, path, seg),
        Schema::Site { inner: Some(inner) } => step(inner, path, seg),
        Schema::Site { inner: None } => fail(
            Msg::new()
                .push("`")
                .push_bytes(
                    bytes,
                    Span {
                        start: 0,
                        end: seg.start.saturating_sub(1),
                    },
                )
                .push("` is a hook point and has no sub-layers; remove `.")
                .push_bytes(
                    bytes,
                    Span {
                        start: seg.start,
                        end: bytes.len(),
                    },
                )
                .push("`"),
        ),
        Schema::Leaf { name } => fail(
            Msg::new()
                .push("`")
                .push_bytes(
                    bytes,
                    Span {
                        start: 0,
                        end: seg.start.saturating_sub(1),
                    },
                )
                .push("` (")
                .push(name)
                .push(") has no sub-layers; remove `.")
                .push_bytes(
                    bytes,
                    Span {
                        start: seg.start,
                        end: bytes.len(),
                    },
                )
                .push("`"),
        ),
        Schema::Struct { name, fields } => {
            let mut i = 0;
            while i < fields.len() {
                if let Some(schema) = fields[i].schema {
                    if eq(fields[i].name.as_bytes(), bytes, seg) {
                        return schema;
                    }
                }
                i += 1;
            }
            fail(
                Msg::new()
                    .push("unknown layer `")
                    .push_bytes(bytes, seg)
                    .push("` in `")
                    .push(path)
                    .push("`: `")
                    .push(name)
                    .push("` has ")
                    .names(fields),
            )
        }
        Schema::Seq { elem, len } => {
            let mut index: usize = 0;
            let mut i = seg.start;
            while i < seg.end {
                let b = bytes[i];
                if !b.is_ascii_digit() || (i > seg.start && index == 0 && bytes[seg.start] == b'0') {
                    fail(
                        Msg::new()
                            .push("`")
                            .push_bytes(bytes, seg)
                            .push("` in `")
                            .push(path)
                            .push("` must be a list index such as `0`"),
                    );
                }
                index = match index.checked_mul(10) {
                    Some(v) => v + (b - b'0') as usize,
                    None => fail(Msg::new().push("index too large in `").push(path).push("`")),
                };
                i += 1;
            }
            if let Some(n) = len {
                if index >= *n {
                    fail(
                        Msg::new()
                            .push("index `")
                            .push_bytes(bytes, seg)
                            .push("` in `")
                            .push(path)
                            .push("` is out of range for an array of length ")
                            .push_usize(*n),
                    );
                }
            }
            elem
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

    const fn push_bytes(mut self, bytes: &[u8], span: Span) -> Self {
        let mut i = span.start;
        // Leave room for "..." so a truncated message still ends on a char boundary we control.
        while i < span.end && self.len < MSG_CAP - 3 {
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
        while k > 0 && self.len < MSG_CAP - 3 {
            k -= 1;
            self.buf[self.len] = digits[k];
            self.len += 1;
        }
        self
    }

    /// Appends "`a`, `b` and `c`" (the hookable fields), or "no layers".
    const fn names(mut self, fields: &[FieldSchema]) -> Self {
        let mut count = 0;
        let mut i = 0;
        while i < fields.len() {
            if fields[i].schema.is_some() {
                count += 1;
            }
            i += 1;
        }
        if count == 0 {
            return self.push("no layers");
        }
        self = self.push(if count == 1 { "one layer: " } else { "layers " });
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
}

const fn fail(msg: Msg) -> ! {
    let (head, _) = msg.buf.split_at(msg.len);
    match core::str::from_utf8(head) {
        Ok(text) => panic!("{}", text),
        // Only reachable if truncation split a multi-byte name; say what we can.
        Err(_) => panic!("invalid layer path (a name in it is not ASCII)"),
    }
}
