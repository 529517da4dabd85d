#!/usr/bin/env python3
"""deps.py [TREE] - the folder-level dependency picture of src/ from the
#include lines, for docs/ARCHITECTURE.md.  A public header
include/enclaveml/X.h belongs to the folder whose .c file defines the first
function it declares.  Prints each folder's dependencies in layer order,
then every edge that runs up the layers and every cycle; exit status 1 if
there is either.  TREE defaults to the checkout this script is in.

    scripts/deps.py                 # today
    git worktree add /tmp/old REV && scripts/deps.py /tmp/old   # then
"""
import os, re, sys

ORDER = ["core", "kernels", "formats", "crypto", "dp", "nn", "outsource", "decentral", "boundary",
         "enclave", "sim", "host"]

def files(root, sub, exts):
    for d, _, fs in os.walk(os.path.join(root, sub)):
        for f in sorted(fs):
            if f.endswith(exts):
                yield os.path.join(d, f)

def main():
    root = sys.argv[1] if len(sys.argv) > 1 else \
        os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    srcs = list(files(root, "src", (".c", ".h")))
    text = {p: open(p, encoding="utf-8", errors="replace").read() for p in srcs}
    def folder(p):
        return os.path.relpath(p, os.path.join(root, "src")).split(os.sep)[0]
    owner = {}
    for h in files(root, "include/enclaveml", (".h",)):
        body = open(h, encoding="utf-8").read()
        body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
        names = re.findall(r"\b(eml_\w+)\s*\(", body)
        for n in names:
            pat = re.compile(r"^[A-Za-z].*\b%s\(" % n, re.M)
            hits = [p for p in srcs if p.endswith(".c") and pat.search(text[p])
                    and not text[p][pat.search(text[p]).end():].lstrip().startswith(";")]
            if hits:
                owner[os.path.basename(h)] = folder(hits[0])
                break
    edges = {}
    for p in srcs:
        f = folder(p)
        for inc in re.findall(r'^#include "([^"]+)"', text[p], re.M):
            if inc.startswith("enclaveml/"):
                g = owner.get(inc.split("/", 1)[1])
            else:
                g = inc.split("/", 1)[0]
            if g and g != f:
                edges.setdefault(f, set()).add(g)
    folders = [f for f in ORDER if f in edges or any(f in v for v in edges.values())]
    folders += sorted(set(edges) - set(folders))
    bad = 0
    for f in folders:
        deps = sorted(edges.get(f, ()), key=lambda g: ORDER.index(g) if g in ORDER else 99)
        print("%-9s -> %s" % (f, ", ".join(deps) if deps else "(nothing)"))
    up = [(f, g) for f, gs in edges.items() for g in gs
          if f in ORDER and g in ORDER and ORDER.index(g) > ORDER.index(f)]
    for f, g in sorted(up):
        print("upward: %s -> %s" % (f, g)); bad = 1
    # cycles: a folder that reaches itself
    def reach(a):
        seen, todo = set(), [a]
        while todo:
            x = todo.pop()
            for y in edges.get(x, ()):
                if y not in seen:
                    seen.add(y); todo.append(y)
        return seen
    cyc = sorted(f for f in edges if f in reach(f))
    if cyc:
        print("in a cycle: " + ", ".join(cyc)); bad = 1
    if not bad:
        print("no dependency runs up the layers; no cycle")
    return bad

sys.exit(main())
