#!/usr/bin/env python3
"""Fails when a crate's files import each other in a circle.

Each .rs file under a crate's src/ is a module (foo.rs and foo/mod.rs are
`foo`). An edge a -> b is a `use crate::b...` or `crate::b::` path in a, or
`super::` resolved against a's parent. Child modules reaching their own
parent (tests, submodules using `super::*`) are not edges, since a parent
declaring its children is not an import. Any cycle among the rest fails,
printed as a chain of files.
"""
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[2]
crates = [p.parent.parent for p in root.glob("*/src") if (p / "lib.rs").exists() or (p / "main.rs").exists()]
crates = [c.parent if c.name == "src" else c for c in crates]


def module_of(src: Path, f: Path) -> tuple:
    parts = list(f.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


use_re = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
failed = False
for crate in sorted(set(p.parent for p in root.glob("*/src"))):
    src = crate / "src"
    files = {module_of(src, f): f for f in src.rglob("*.rs")}
    edges = {m: set() for m in files}
    for m, f in files.items():
        text = re.sub(r"//.*", "", f.read_text())
        for kind, path in use_re.findall(text):
            segs = [s for s in path.split("::") if s]
            if kind == "crate":
                base = []
            else:
                # super:: from foo/bar.rs (module foo::bar) is foo.
                base = list(m[:-1])
                while segs and segs[0] == "super":
                    segs.pop(0)
                    base = base[:-1]
            target = tuple(base)
            best = target if target in files else None
            for s in segs:
                target = target + (s,)
                if target in files:
                    best = target
            if best is None or best == m:
                continue
            # A child using its parent's (or an ancestor's) items is not a circle.
            if m[: len(best)] == best:
                continue
            edges[m].add(best)
    state = {}

    def visit(m, stack):
        global failed
        state[m] = 1
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                print(f"import circle in {crate.name}: " + " -> ".join(str(files[c].relative_to(root)) for c in cycle))
                failed = True
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
if failed:
    sys.exit(1)
print("import-cycles: no crate's files import each other in a circle")
