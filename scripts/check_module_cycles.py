#!/usr/bin/env python3
"""Check that no two modules of a crate import each other, directly or through others.

Run from the repository root:  python3 scripts/check_module_cycles.py [-v] [WORKSPACE_ROOT]
Exit 0 with one summary line per crate when every module graph is acyclic; exit 1 and print each
cycle as `crate: a -> b -> a`, with the file:line of one reference per edge, when not. `-v` also
lists every edge. Python 3.10+, standard library only; it only reads the sources.

Rules:
- Crates: the root package and every `[workspace] members` entry of Cargo.toml; `src/lib.rs` and
  `src/main.rs` are separate crate graphs (a member with neither is reported as skipped).
- Nodes: the file modules reached from that root through `mod x;` (`x.rs` or `x/mod.rs`; `a/b.rs`
  is `a::b`); the root file is not a node. `.rs` files under src/ reached by no `mod` are noted.
  Inline `mod x { .. }` blocks belong to their file's module, but `super`/`self` inside them are
  relative to the inline module (so `use super::*` in `mod tests` is a self-reference).
- References: `use` trees (grouped, nested, multi-line, `self`, `as`, globs) and every
  `crate::`/`$crate::`/`super::`/`self::` path, after blanking comments (doc links included),
  string, raw-string and char literals. `super::` from `p::m` means `p::`; a `use` path that
  starts with a child module's name means that child.
- A path maps to its longest prefix that is a module. `crate::X` where X is no module is resolved
  through the root's `use`/`pub use` of X (every `#[cfg]` alternative counts, an external crate
  path counts for nothing); if unresolved it is the root itself: no edge.
- Edges to the module itself or to its own descendants (the parent declares the child) are
  ignored; child -> parent and sibling references count. Cycles: Tarjan's SCCs of size > 1, each
  shown as the shortest cycle through each of its members (duplicates dropped).
"""
import re
import sys
from collections import deque
from pathlib import Path

LITERAL = re.compile(r'//[^\n]*|/\*|(?<!\w)[bc]?r(#*)"[\s\S]*?"\1|"(?:\\[\s\S]|[^"\\])*"'
                     r"|'(?:\\.[^'\n]*|[^\\'\n])'")
USE = re.compile(r"(?<![\w$])use\s+([^;]*);")
PATH = re.compile(r"(?<![\w$])(\$?crate|super|self)((?:\s*::\s*\w+)+)")
INLINE_MOD = re.compile(r"(?<![\w#])mod\s+(\w+)\s*\{")
MOD_DECL = re.compile(r"(?<![\w#])mod\s+(\w+)\s*;")
VERBOSE = "-v" in sys.argv[1:]


def blank(s):
    return re.sub(r"[^\n]", " ", s)


def strip(src):
    """Blank out comments and literals, keeping every offset and newline in place."""
    out, pos = [], 0
    while m := LITERAL.search(src, pos):
        end = m.end()
        if m.group() == "/*":  # block comments nest in Rust
            depth = 1
            while depth and end < len(src):
                two = src[end:end + 2]
                depth += (two == "/*") - (two == "*/")
                end += 2 if two in ("/*", "*/") else 1
        out += [src[pos:m.start()], blank(src[m.start():end])]
        pos = end
    return "".join(out) + src[pos:]


def brace_end(text, i):
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return j
    return len(text)


def use_paths(body, base):
    """Flatten one `use` tree into (segments, alias, offset) triples."""
    toks = [(m.group(), base + m.start()) for m in re.finditer(r"\$?\w+|::|[{},*]", body)]
    out = []

    def tree(i, prefix):
        path, start, alias = list(prefix), toks[i][1] if i < len(toks) else base, None
        while i < len(toks) and toks[i][0] not in (",", "}"):
            t = toks[i][0]
            if t == "{":
                i += 1
                while i < len(toks) and toks[i][0] != "}":
                    i = tree(i, path)
                    i += i < len(toks) and toks[i][0] == ","
                return i + 1
            if t == "as" and i + 1 < len(toks):
                alias, i = toks[i + 1][0], i + 2
                continue
            if t != "::" and not (t == "self" and path):  # `a::{self}` is `a`
                path.append(t)
            i += 1
        if path:
            out.append((path, alias, start))
        return i

    i = 0
    while i < len(toks):
        i = tree(i, []) + 1
    return out


def resolve(segs, here, mods, rootmap, in_use):
    """The modules (tuples; the root is left out) that a path used in module `here` refers to."""
    k = 1
    if segs[0] in ("crate", "$crate"):
        base = ()
    elif segs[0] == "self":
        base = here
    elif segs[0] == "super":
        while k < len(segs) and segs[k] == "super":
            k += 1
        base = here[:max(0, len(here) - k)]
    elif in_use and here + (segs[0],) in mods:
        base, k = here, 0
    else:
        return set()  # an external crate or a local name
    full = base + tuple(s for s in segs[k:] if s not in ("*", "self"))
    prefixes = [full[:n] for n in range(len(full), 0, -1)]
    return next(({p} for p in prefixes if p in mods), None) or next(
        (rootmap[p] for p in prefixes if p in rootmap), set())


def scan(path):
    """([(segments, alias, inline-module suffix, line, in_use)], [`mod x;` names]) of a file."""
    src = path.read_text(encoding="utf-8")
    clean = strip(src)
    spans = [(m.start(), brace_end(clean, m.end() - 1), m.group(1))
             for m in INLINE_MOD.finditer(clean)]
    inner = lambda off: tuple(n for s, e, n in spans if s < off < e)
    line = lambda off: src.count("\n", 0, off) + 1
    refs = [(segs, alias, inner(off), line(off), True) for m in USE.finditer(clean)
            for segs, alias, off in use_paths(m.group(1), m.start(1))]
    for m in PATH.finditer(USE.sub(lambda m: blank(m.group()), clean)):
        segs = [m.group(1)] + re.findall(r"\w+", m.group(2))
        refs.append((segs, None, inner(m.start()), line(m.start()), False))
    return refs, [m.group(1) for m in MOD_DECL.finditer(clean) if not inner(m.start())]


def check_crate(label, root_file, repo):
    """Print the crate's summary line or its cycles; return (acyclic, files reached)."""
    mods, refs, todo = {}, {}, [((), root_file, root_file.parent)]
    while todo:
        mod, f, child_dir = todo.pop()
        mods[mod], (refs[mod], decls) = f, scan(f)
        for name in decls:
            for c in (child_dir / f"{name}.rs", child_dir / name / "mod.rs"):
                if c.is_file():
                    grandchildren = c.parent if c.name == "mod.rs" else child_dir / name
                    todo.append((mod + (name,), c, grandchildren))
                    break
    rootmap = {}
    for segs, alias, inner, _, in_use in refs[()]:
        if in_use and (alias or segs[-1]) not in ("*", "self", "_"):
            targets = resolve(segs, inner, mods, {}, True)
            rootmap.setdefault(inner + (alias or segs[-1],), set()).update(targets)
    edges = {}
    for mod in (m for m in mods if m):
        for segs, _, inner, ln, in_use in refs[mod]:
            for t in resolve(segs, mod + inner, mods, rootmap, in_use):
                if t[:len(mod)] != mod:
                    edges.setdefault((mod, t), f"{mods[mod].relative_to(repo)}:{ln}")
    graph = {m: sorted(t for (s, t) in edges if s == m) for m in mods if m}
    cycles = [c for scc in tarjan(graph) if len(scc) > 1 for c in cycles_through(graph, scc)]
    name = "::".join
    for (a, b), where in sorted(edges.items()) if VERBOSE else []:
        print(f"  {label}: {name(a)} -> {name(b)}  ({where})")
    if not cycles:
        print(f"{label}: {len(graph)} modules, {len(edges)} intra-crate edges, no cycles")
    for cyc in cycles:
        print(f"{label}: " + " -> ".join(name(m) for m in cyc + cyc[:1]))
        for a, b in zip(cyc, cyc[1:] + cyc[:1]):
            print(f"    {name(a)} -> {name(b)}: {edges[(a, b)]}")
    return not cycles, set(mods.values())


def tarjan(graph):
    index, low, stack, sccs = {}, {}, [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            cut = stack.index(v)
            sccs.append(set(stack[cut:]))
            del stack[cut:]

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sccs


def cycles_through(graph, scc):
    """The shortest cycle through each member of the SCC, without rotations of one another."""
    seen, out = set(), []
    for v in sorted(scc):
        prev, queue = {}, deque([v])
        while v not in prev:  # v is in a cycle, so the search gets back to it
            u = queue.popleft()
            for w in graph[u]:
                if w in scc and w not in prev:
                    prev[w] = u
                    queue.append(w)
        cyc = [prev[v]]
        while cyc[-1] != v:
            cyc.append(prev[cyc[-1]])
        cyc = cyc[::-1]
        if (key := frozenset(zip(cyc, cyc[1:] + cyc[:1]))) not in seen:
            seen.add(key)
            out.append(cyc)
    return out


def main():
    args = [a for a in sys.argv[1:] if a != "-v"]
    repo = Path(args[0] if args else Path(__file__).parent.parent).resolve()
    sys.setrecursionlimit(10000)
    manifest = (repo / "Cargo.toml").read_text(encoding="utf-8")
    ws = re.search(r"^\[workspace\][^\[]*?members\s*=\s*\[(.*?)\]", manifest, re.S | re.M)
    members = [repo] * ("[package]" in manifest) + [
        p for m in re.findall(r'"([^"]+)"', ws.group(1) if ws else "") for p in sorted(repo.glob(m))]
    ok = True
    for member in dict.fromkeys(p.resolve() for p in members):
        text = (member / "Cargo.toml").read_text(encoding="utf-8")
        pkg = re.search(r'^\[package\][^\[]*?^name\s*=\s*"([^"]+)"', text, re.S | re.M)
        pkg = pkg.group(1) if pkg else member.name
        roots = [r for r in (member / "src/lib.rs", member / "src/main.rs") if r.is_file()]
        if not roots:
            print(f"{pkg}: skipped (no src/lib.rs or src/main.rs)")
        reached = set()
        for root in roots:
            label = pkg if len(roots) == 1 else f"{pkg} ({'bin' if root.stem == 'main' else 'lib'})"
            acyclic, files = check_crate(label, root, repo)
            ok, reached = ok and acyclic, reached | files
        lost = sorted(str(f.relative_to(repo)) for f in {*(member / "src").rglob("*.rs")} - reached)
        if lost:
            print(f"  note: {pkg}: reached by no `mod`, not checked: {', '.join(lost)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
