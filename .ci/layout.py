#!/usr/bin/env python3
"""Checks the shape of the source tree, so a newcomer can trust the folder map:
- no circle of `use` between the files of a crate (a uses b, b uses a, directly or through
  others): arrows point down;
- no source file over MAX_LINES lines outside its test code.
Test modules (files declared under #[cfg(test)], and the #[cfg(test)] items of a file) do not
count. Prints what is wrong and exits 1; exits 0 when the tree is in shape.

Usage: python3 .ci/layout.py [REPO_ROOT]
"""
import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
MAX_LINES = 800


def module_files(src):
    """Maps module path tuples to files, starting from lib.rs (or main.rs)."""
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, src)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel in (["lib"], ["main"]):
                rel = []
            if rel and rel[0] == "bin":
                continue
            mods.setdefault(tuple(rel), full)
    return mods


def strip_tests(text, keep_comments=False):
    """Drops the #[cfg(test)] tail of a file and its test-only child declarations."""
    lines = text.split("\n")
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == "#[cfg(test)]":
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if re.match(r"(pub(\([^)]*\))? )?mod \w+ *\{", nxt):
                # An inline test module: skip to its closing brace at column 0.
                depth = 0
                j = i + 1
                while j < len(lines):
                    depth += lines[j].count("{") - lines[j].count("}")
                    if depth <= 0 and "}" in lines[j]:
                        break
                    j += 1
                i = j + 1
                continue
            # A test-only item (mod x; use ...; fn ...): skip the next line.
            i += 2
            continue
        out.append(line)
        i += 1
    text = "\n".join(out)
    if keep_comments:
        return text
    # Comments and strings would give false paths.
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text


def test_children(text):
    """Child modules declared under #[cfg(test)]."""
    return set(re.findall(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))? )?mod (\w+);", text))


def expand_braces(path):
    """crate::{a, b::{c, d}} -> [crate::a, crate::b::c, crate::b::d]."""
    m = re.match(r"^(.*?)\{(.*)\}$", path, re.S)
    if not m:
        return [path]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        p = p.strip()
        if p:
            out.extend(expand_braces(prefix + p))
    return out


def references(text, here, mods, children):
    """Module paths this file refers to."""
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        for p in expand_braces(re.sub(r"\s+", "", m.group(1))):
            paths.append(p)
    for m in re.finditer(r"\b((?:crate|super|self)(?:::(?:super|" + IDENT + "))+)", text):
        paths.append(m.group(1))
    for child in children:
        for m in re.finditer(r"(?<![:\w])" + child + r"((?:::" + IDENT + ")+)", text):
            paths.append("self::" + child + m.group(1))
    out = set()
    for p in paths:
        p = re.sub(r"\s+as\s+\w+$", "", p)
        segs = [s for s in p.split("::") if s]
        if not segs:
            continue
        if segs[0] == "crate":
            base, rest = [], segs[1:]
        elif segs[0] in ("super", "self"):
            base = list(here)
            rest = segs
            while rest and rest[0] in ("super", "self"):
                if rest[0] == "super":
                    base = base[:-1]
                rest = rest[1:]
        elif segs[0] in children:
            base, rest = list(here), segs
        else:
            continue
        # Longest prefix that is a module file.
        target = None
        for n in range(len(rest), -1, -1):
            cand = tuple(base + rest[:n])
            if cand in mods:
                target = cand
                break
        if target is not None and target != tuple(here):
            out.add(target)
    return out


def sccs(graph):
    index, low, stack, on, res = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            res.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return res


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    found = 0
    for crate in sorted(os.listdir(os.path.join(root, "crates"))):
        src = os.path.join(root, "crates", crate, "src")
        if not os.path.isdir(src):
            continue
        mods = module_files(src)
        raw = {m: open(f, encoding="utf-8").read() for m, f in mods.items()}
        tests = set()
        for m, text in raw.items():
            for c in test_children(text):
                tests.add(m + (c,))
        # Everything under a test-only module is test code too.
        live = {m for m in mods if not any(m[: len(t)] == t for t in tests)}
        graph = {}
        for m in live:
            text = strip_tests(raw[m])
            children = {k[-1] for k in mods if len(k) == len(m) + 1 and k[: len(m)] == m}
            graph[m] = {t for t in references(text, m, mods, children) if t in live}
        for m in sorted(live):
            n = len(strip_tests(raw[m], keep_comments=True).rstrip("\n").split("\n"))
            if n > MAX_LINES:
                found += 1
                print(f"{os.path.relpath(mods[m], root)}: {n} lines outside tests (at most {MAX_LINES})")
        for comp in sccs(graph):
            if len(comp) > 1:
                found += 1
                names = sorted(os.path.relpath(mods[m], root) for m in comp)
                print(f"circle of {len(names)} files in {crate}:")
                for n in names:
                    uses = sorted(os.path.relpath(mods[t], root) for t in graph[mods_key(mods, n, root)] if t in comp)
                    print(f"  {n} -> {', '.join(uses)}")
    return 1 if found else 0


def mods_key(mods, name, root):
    for m, f in mods.items():
        if os.path.relpath(f, root) == name:
            return m
    raise KeyError(name)


if __name__ == "__main__":
    sys.exit(main())
