#!/usr/bin/env python3
"""Lists module dependency cycles inside each crate of the workspace (usage: module-cycles.py CRATE_DIR...).

A module is a file (or a dir's mod.rs); its edges are the `crate::a::b` paths it names
(in `use` items and inline paths). Edges are taken at every level: a::b -> a::c
and, collapsed to siblings, a -> c when a::x names c::y. Cycles among siblings are reported.
"""
import os, re, sys, collections

def modules(src):
    mods = {}
    for dp, dn, fn in os.walk(src):
        for f in fn:
            if not f.endswith('.rs'):
                continue
            p = os.path.join(dp, f)
            rel = os.path.relpath(p, src)[:-3].split(os.sep)
            if rel[-1] in ('mod', 'lib', 'main'):
                rel = rel[:-1]
            if rel and rel[0] == 'bin':
                continue
            mods[tuple(rel)] = p
    return mods

def strip_tests(text):
    # drop #[cfg(test)] mod ... { } blocks crudely: from '#[cfg(test)]' followed by 'mod' to end of file
    m = re.search(r'#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod\s+\w+\s*\{', text)
    if m:
        text = text[:m.start()]
    return text

def edges(mods):
    e = collections.defaultdict(set)
    known = set(mods)
    for m, p in mods.items():
        if m and m[-1] in ('tests', 'test') or 'tests' in m:
            continue
        t = strip_tests(open(p).read())
        t = re.sub(r'//.*', '', t)
        for use in re.finditer(r'\buse\s+crate::\{([^;]*)\};', t, re.S):
            for part in re.split(r',', use.group(1)):
                name = part.strip().split('::')[0].strip('{ }')
                if name:
                    tgt = resolve(('crate', name) + tuple(part.strip().split('::')[1:]), known)
                    if tgt is not None: e[m].add(tgt)
        for path in re.finditer(r'\bcrate((?:::\w+)+)', t):
            segs = path.group(1).split('::')[1:]
            tgt = resolve(('crate',) + tuple(segs), known)
            if tgt is not None:
                e[m].add(tgt)
        for path in re.finditer(r'\bsuper((?:::\w+)+)', t):
            segs = path.group(1).split('::')[1:]
            base = m[:-1] if not p.endswith('mod.rs') else m[:-1]
            tgt = resolve(('crate',) + base + tuple(s for s in segs if s != 'super'), known)
            if tgt is not None:
                e[m].add(tgt)
    return e

def resolve(path, known):
    segs = tuple(s.strip('{} ') for s in path[1:])
    best = None
    for i in range(len(segs), 0, -1):
        if segs[:i] in known:
            best = segs[:i]
            break
    return best

def sibling_graph(e):
    g = collections.defaultdict(set)
    for a, targets in e.items():
        for b in targets:
            # find common prefix; edge between children of common parent
            i = 0
            while i < len(a) and i < len(b) and a[i] == b[i]:
                i += 1
            if i < len(a) and i < len(b):
                g[a[:i+1]].add(b[:i+1])
    return g

def sccs(g):
    idx = {}; low = {}; st = []; on = set(); out = []; c = [0]
    sys.setrecursionlimit(10000)
    nodes = set(g) | {x for v in g.values() for x in v}
    def sc(v):
        idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
        for w in g.get(v, ()):
            if w not in idx:
                sc(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            comp = []
            while True:
                w = st.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(comp)
    for v in sorted(nodes):
        if v not in idx: sc(v)
    return out

bad = 0
for crate in sys.argv[1:]:
    mods = modules(os.path.join(crate, 'src'))
    g = sibling_graph(edges(mods))
    for comp in sccs(g):
        bad += 1
        print(f"{crate}: cycle: " + ", ".join(sorted('::'.join(x) for x in comp)))
sys.exit(1 if bad else 0)
