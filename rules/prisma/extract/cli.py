"""Extract the Prisma CLI's command paths and flag names from prisma/prisma at its release tags.

    python rules/prisma/extract/cli.py /path/to/prisma.git > /tmp/out   (then merged by hand into
    rules/prisma/cli-commands.yaml and rules/prisma/cli-flags.yaml)

Commands: the nested `X: Y.new({...})` map passed to `CLI.new(...)` in packages/cli/src/bin.ts.
Also (merged by hand the same way): packages/cli/src/platform/<namespace>/<command>.ts file names
(5.7.0+, `index` excluded) and the `name: new SubCommand(...)` entries of bin.ts.
Flags: every `'--flag': Type` / `'-f': '--flag'` key of an `arg(...)` spec in packages/cli/src and
packages/migrate/src (tests excluded). One tag per minor release, 2.0.0 .. 7.9.0 (final releases).
"""
import re
import subprocess
import sys
from collections import defaultdict

git = sys.argv[1]


def run(*a):
    return subprocess.run(["git", "--git-dir", git, *a], capture_output=True, text=True).stdout


def vkey(t):
    return tuple(int(x) for x in t.split("."))


tags = [t for t in run("tag").split() if re.fullmatch(r"\d+\.\d+\.\d+", t)]
tags = [t for t in tags if (2, 0, 0) <= vkey(t) <= (7, 9, 0)]
last_of_minor = {}
for t in sorted(tags, key=vkey):
    last_of_minor[vkey(t)[:2]] = t
first_of_minor = {}
for t in sorted(tags, key=vkey, reverse=True):
    first_of_minor[vkey(t)[:2]] = t
picked = sorted(set(last_of_minor.values()) | set(first_of_minor.values()), key=vkey)


def commands(tag):
    src = run("show", f"{tag}:packages/cli/src/bin.ts")
    i = src.find("CLI.new(")
    if i < 0:
        return set()
    out, stack, depth = set(), [], 0
    pending = None
    for m in re.finditer(r"(['\"]?[a-z][a-z-]*['\"]?)\s*:\s*\w+\.new\(\s*(\{)?|\{|\}", src[i + 8:]):
        tok = m.group(0)
        if m.group(1):
            name = m.group(1).strip("'\"")
            out.add(" ".join(x for x in [*stack, name] if x))
            if m.group(2):
                stack.append(name)
                depth += 1
                continue
        elif tok == "{":
            depth += 1
            stack.append(None)
        elif tok == "}":
            if depth == 0:
                break
            depth -= 1
            stack.pop()
    return out


flags_since, cmds_since = {}, {}
flags_until, cmds_until = {}, {}
for tag in picked:
    fl = set(re.findall(r"'(--?[a-zA-Z][a-zA-Z0-9-]*)'\s*:", run(
        "grep", "-hoE", r"'--?[a-zA-Z][a-zA-Z0-9-]*'\s*:", tag, "--", "packages/cli/src", "packages/migrate/src",
        ":!*__tests__*", ":!*.test.ts")))
    for f in fl:
        flags_since.setdefault(f, tag)
        flags_until[f] = tag
    for c in commands(tag):
        cmds_since.setdefault(c, tag)
        cmds_until[c] = tag
print("# commands")
for c in sorted(cmds_since):
    print(c, cmds_since[c], cmds_until[c], sep="\t")
print("# flags")
for f in sorted(flags_since):
    print(f, flags_since[f], flags_until[f], sep="\t")
print("# tags", " ".join(picked))
