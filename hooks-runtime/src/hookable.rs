//! The two traits of a layer tree: [`LayerTree`], what an instance has (object-safe, so any
//! architecture fits behind `&dyn` or `Box<dyn>`), and [`Hookable`], what a type declares (its
//! static schema and typed paths). `#[derive(Hookable)]` implements both.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;

use crate::path::{Prefix, INPUT_SUFFIX};
use crate::schema::Schema;
use crate::site::Site;

/// The capture sites of one instance, at their PyTorch-style dotted paths.
///
/// This is the object-safe half of [`Hookable`]: code that handles a model of any architecture
/// holds a `&dyn LayerTree` (or a `Box<dyn ...>` of a trait built on it) and binds an
/// [`ActivationStore`](crate::ActivationStore) to it. `#[derive(Hookable)]` implements it; so do
/// [`Hook`](crate::Hook), [`HookPoint`](crate::HookPoint), `Vec`, arrays, `Option`, `Box` and
/// tch's `nn` modules (as leaves with no capture site).
///
/// ```
/// use hooks_runtime::{HookPoint, LayerTree};
///
/// let points: Vec<HookPoint> = vec![HookPoint::new(), HookPoint::new()];
/// let tree: &dyn LayerTree = &points;
/// assert_eq!(tree.layer_names(), ["0", "1"]);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no layer tree",
    label = "not `Hookable`",
    note = "add `#[derive(Hookable)]` to `{Self}` (a struct with no capture sites of its own is fine), or mark the field `#[hook(skip)]`"
)]
pub trait LayerTree {
    /// Visits every capture site of this instance with its path, in field order.
    fn walk(&self, walker: &mut Walker<'_>);

    /// Every capturable layer path of this instance, in field order, with real `Vec` lengths:
    /// the counterpart of PyTorch's `named_modules()`.
    #[must_use]
    fn layer_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.walk(&mut Walker::new(&mut |path, _| names.push(path.to_owned())));
        names
    }

    /// Every point a store can capture and an intervention can change: the
    /// [`layer_names`](Self::layer_names), each module's followed by its input point
    /// (`PATH:input`, see [`INPUT_SUFFIX`](crate::INPUT_SUFFIX)).
    #[must_use]
    fn site_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.walk(&mut Walker::with_inputs(&mut |path, _| names.push(path.to_owned())));
        names
    }

    /// The other names of [`site_names`](Self::site_names)' points, given by
    /// `#[hook(alias = "...")]` (`h.0.mlp` for `GPT2LMHeadModel`'s `transformer.h.0.mlp`), in
    /// walk order, each once. A name that is also a [`site_names`](Self::site_names) entry is
    /// left out (the point's own name wins), and so is one that two aliases give two different
    /// points (it names neither). Stores and intervention lists accept these names; listings
    /// ([`layer_names`](Self::layer_names), `hooks layers`) show the points' own.
    #[must_use]
    fn alias_names(&self) -> Vec<String> {
        let usable = usable_aliases(self);
        let mut names = Vec::new();
        self.walk(&mut Walker::aliases(&mut |path, _| {
            if usable.contains(path) && !names.iter().any(|n| n == path) {
                names.push(path.to_owned());
            }
        }));
        names
    }
}

/// The alias names that bind: not a point's own name, and given to one point only.
fn usable_aliases<M: LayerTree + ?Sized>(model: &M) -> HashSet<String> {
    let own: HashSet<String> = model.site_names().into_iter().collect();
    let mut points: HashMap<String, *const Site> = HashMap::new();
    let mut ambiguous = HashSet::new();
    model.walk(&mut Walker::aliases(&mut |path, site| {
        let point = std::ptr::from_ref(site);
        if *points.entry(path.to_owned()).or_insert(point) != point {
            ambiguous.insert(path.to_owned());
        }
    }));
    points
        .into_keys()
        .filter(|path| !own.contains(path) && !ambiguous.contains(path))
        .collect()
}

/// Visits every capture site (inputs included) under each name a store or an intervention list
/// may bind it by: its own path, then each alias [`LayerTree::alias_names`] lists.
pub(crate) fn walk_bindable<M: LayerTree + ?Sized>(model: &M, visit: &mut dyn FnMut(&str, &Site)) {
    model.walk(&mut Walker::with_inputs(visit));
    let usable = usable_aliases(model);
    model.walk(&mut Walker::aliases(&mut |path, site| {
        if usable.contains(path) {
            visit(path, site);
        }
    }));
}

/// A type whose values hold capture sites at PyTorch-style dotted paths, with its layer tree
/// known at compile time.
///
/// Derive it with `#[derive(Hookable)]`, which also implements [`LayerTree`]. The static half
/// lives here: the [`Schema`] that `hooks::layer!` checks paths against, and the typed path
/// builder. An associated const and type make this trait unusable as `dyn`; hold a
/// [`LayerTree`] for that.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no layer tree",
    label = "not `Hookable`",
    note = "add `#[derive(Hookable)]` to `{Self}` (a struct with no capture sites of its own is fine), or mark the field `#[hook(skip)]`"
)]
pub trait Hookable: LayerTree {
    /// The static layer tree of this type; `hooks::layer!` checks paths against it.
    const SCHEMA: &'static Schema;

    /// The typed path builder for this type.
    type Paths;

    /// The typed paths of a value of this type placed at `prefix`.
    fn paths_at(prefix: Prefix) -> Self::Paths;

    /// The typed path builder from the root, where a typo is a "no method" compile error:
    /// `Model::paths().encoder().layer(3).attention()`.
    #[must_use]
    fn paths() -> Self::Paths
    where
        Self: Sized,
    {
        Self::paths_at(Prefix::root())
    }
}

/// Carries the current path through [`LayerTree::walk`] and reports each capture site.
pub struct Walker<'a> {
    path: String,
    visit: &'a mut dyn FnMut(&str, &Site),
    /// Whether input sites are reported too.
    inputs: bool,
    /// Whether only the sites reached through an alias are reported (and nothing else).
    aliases: bool,
    /// How many aliases the current path went through.
    alias_depth: usize,
    /// The path lengths where an empty alias started: the aliased field's own site sits there,
    /// and has no name without its segment (as `GPT2Model` itself has none in its own
    /// `named_modules()`).
    unnamed: Vec<usize>,
}

impl fmt::Debug for Walker<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Walker")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<'a> Walker<'a> {
    /// A walker from the root that calls `visit(path, site)` for every capture site.
    pub fn new(visit: &'a mut dyn FnMut(&str, &Site)) -> Self {
        Walker {
            path: String::new(),
            visit,
            inputs: false,
            aliases: false,
            alias_depth: 0,
            unnamed: Vec::new(),
        }
    }

    /// A walker that also reports each module's input site, at `PATH:input`.
    pub fn with_inputs(visit: &'a mut dyn FnMut(&str, &Site)) -> Self {
        Walker {
            inputs: true,
            ..Walker::new(visit)
        }
    }

    /// A walker that reports only what the plain walks leave out: the sites reached through a
    /// field's alias (`#[hook(alias = "...")]`), at their alias paths, inputs included. See
    /// [`LayerTree::alias_names`].
    pub fn aliases(visit: &'a mut dyn FnMut(&str, &Site)) -> Self {
        Walker {
            inputs: true,
            aliases: true,
            ..Walker::new(visit)
        }
    }

    /// Walks `inner` again under another name for the same field, if this walker reports aliases:
    /// one segment deeper under `segment`, or at the current path for an empty `segment` (the
    /// field's layers then also answer to their names without its segment). What the derive calls
    /// for `#[hook(alias = "...")]`.
    pub fn alias(&mut self, segment: &str, inner: impl FnOnce(&mut Self)) {
        if !self.aliases {
            return;
        }
        self.alias_depth += 1;
        if segment.is_empty() {
            self.unnamed.push(self.path.len());
            inner(self);
            self.unnamed.pop();
        } else {
            self.enter(segment, inner);
        }
        self.alias_depth -= 1;
    }

    /// Walks `inner` one segment (a field name or an index) deeper.
    pub fn enter(&mut self, segment: impl fmt::Display, inner: impl FnOnce(&mut Self)) {
        use fmt::Write as _;
        let len = self.path.len();
        if len > 0 {
            self.path.push('.');
        }
        // Writing to a String cannot fail.
        let _ = write!(self.path, "{segment}");
        inner(self);
        self.path.truncate(len);
    }

    /// Reports a capture site at the current path.
    pub fn site(&mut self, site: &Site) {
        if self.reports() {
            (self.visit)(&self.path, site);
        }
    }

    /// Whether a site met at the current path is reported: an alias walker reports only what it
    /// reached through an alias, and not the own site of a field aliased by the empty alias.
    fn reports(&self) -> bool {
        !self.aliases || (self.alias_depth > 0 && !self.unnamed.contains(&self.path.len()))
    }

    /// Reports the site of the current module's input, at `PATH:input`, if this walker reports
    /// inputs.
    pub fn input_site(&mut self, site: &Site) {
        if self.inputs && self.reports() {
            let len = self.path.len();
            self.path.push_str(INPUT_SUFFIX);
            (self.visit)(&self.path, site);
            self.path.truncate(len);
        }
    }
}

/// Tells at compile time whether a field type is `Hookable`, for the derive: the inherent items
/// apply when `T: Hookable`, and the [`NotHookable`] trait's defaults otherwise (this is the
/// `impls` crate's trick; it needs concrete types, which is why the derive bounds type parameters).
#[doc(hidden)]
pub struct Probe<T: ?Sized>(PhantomData<T>);

impl<T: Hookable> Probe<T> {
    pub const SCHEMA: Option<&'static Schema> = Some(T::SCHEMA);

    #[inline]
    pub fn walk(value: &T, walker: &mut Walker<'_>) {
        value.walk(walker);
    }
}

/// The fallback of [`Probe`] for fields that are not `Hookable`: they are not part of the tree.
#[doc(hidden)]
pub trait NotHookable {
    const SCHEMA: Option<&'static Schema> = None;

    #[inline]
    fn walk<U: ?Sized>(_value: &U, _walker: &mut Walker<'_>) {}
}

impl<T: ?Sized> NotHookable for Probe<T> {}
