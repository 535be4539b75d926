#!/usr/bin/env python3
"""tools/check-source.py: source checks that the compiler does not make.

1. Banned functions: a call to any of BANNED in a C file of the tree fails the check.
   Each has a bounded or checked replacement (snprintf, memcpy with a known length,
   strtol/strtoul with an end pointer and errno, strtok_r or a hand parser, fgets).
   Comments and string literals are ignored, so a comment may name them.
2. Formatting: every C file must be as clang-format (the root .clang-format) leaves it.

Usage: tools/check-source.py [ROOT]   (default: the repository holding this script)
Prints one line per finding ("path:line: ...") and exits 1 if there is any.
"""
import os
import re
import shutil
import subprocess
import sys

BANNED = ("sprintf", "vsprintf", "strcpy", "strcat", "strncpy", "strncat", "atoi", "atol",
          "atoll", "strtok", "gets")
CALL = re.compile(r"(?<![\w.>])(" + "|".join(BANNED) + r")\s*\(")
DIRS = ("common", "proto", "server", "agent", "tests", "tools")


def strip_comments_and_strings(text):
    """Blank out comments and string/char literals, keeping newlines (line numbers hold)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(c + re.sub(r"[^\n]", " ", text[i + 1:j - 1]) + c)
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def c_files(root):
    listed = subprocess.run(["git", "-C", root, "ls-files", "--cached", "--others",
                             "--exclude-standard", "--", *DIRS],
                            capture_output=True, text=True)
    if listed.returncode == 0:
        names = listed.stdout.split()
    else:  # not a git checkout: walk the folders
        names = [os.path.relpath(os.path.join(d, f), root)
                 for top in DIRS for d, _, fs in os.walk(os.path.join(root, top)) for f in fs]
    return sorted(n for n in names
                  if n.endswith((".c", ".h")) and os.path.isfile(os.path.join(root, n)))


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))
    files = c_files(root)
    problems = 0
    for name in files:
        with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
            code = strip_comments_and_strings(f.read())
        for lineno, line in enumerate(code.split("\n"), 1):
            for m in CALL.finditer(line):
                print(f"{name}:{lineno}: banned function {m.group(1)}()")
                problems += 1
    fmt = shutil.which("clang-format")
    if fmt is None:
        print("clang-format not found: cannot check formatting")
        problems += 1
    else:
        for name in files:
            r = subprocess.run([fmt, "--dry-run", "--Werror", name], cwd=root,
                               capture_output=True, text=True)
            if r.returncode != 0:
                first = next((l for l in r.stderr.splitlines() if "warning" in l or "error" in l),
                             r.stderr.strip()[:200])
                print(f"{name}: not formatted by .clang-format (run clang-format -i {name}): "
                      f"{first}")
                problems += 1
    print(f"check-source: {len(files)} files, {problems} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
