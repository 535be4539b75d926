#!/usr/bin/env python3
"""Embed the sql/ migrations and sql/functions/ into a C file, so that orchd carries its schema.

usage: embed-sql.py OUTPUT.c MIGRATION.sql... [--functions FUNCTIONS.sql...]
Each migration must be named NNNN_name.sql with versions 1, 2, 3... without gaps. Each
functions file must be named NN_name.sql and hold only CREATE OR REPLACE FUNCTION and
CREATE OR REPLACE VIEW statements (sql/functions/README.md); `orchd migrate` applies them
in name order after the migrations, on every run.
"""
import hashlib
import os
import re
import sys

# Migrations from this version on may not define a function or view that sql/functions/
# defines: the functions folder is applied after them and would silently undo the change.
# (Older migrations are checksummed and stay as they were.)
FUNCTIONS_SINCE = 11


def c_bytes(data):
    """A brace initializer of the bytes plus a NUL: string literals over 4095 bytes are not
    ISO C, and -Wpedantic -Werror would refuse them."""
    items = [str(b) for b in data] + ['0']
    lines = []
    for i in range(0, len(items), 24):
        lines.append('    ' + ', '.join(items[i:i + 24]) + ',')
    return '{\n' + '\n'.join(lines) + '\n}'


def statements(text):
    """The top-level statements of text, with comments, quoted strings and dollar-quoted
    bodies blanked out (so that a ';' inside them does not end a statement)."""
    out, cur, i, n = [], [], 0, len(text)
    while i < n:
        if text.startswith('--', i):
            j = text.find('\n', i)
            i = n if j < 0 else j + 1
            continue
        if text.startswith('/*', i):
            j = text.find('*/', i + 2)
            i = n if j < 0 else j + 2
            continue
        c = text[i]
        if c == "'":
            j = i + 1
            while True:
                j = text.find("'", j)
                if j < 0:
                    j = n
                    break
                if text.startswith("''", j):
                    j += 2
                    continue
                break
            cur.append("''")
            i = j + 1
            continue
        m = re.match(r'\$([A-Za-z_][A-Za-z0-9_]*)?\$', text[i:])
        if m:
            j = text.find(m.group(0), i + len(m.group(0)))
            if j < 0:
                sys.exit('embed-sql: unterminated dollar quote')
            cur.append('$$')
            i = j + len(m.group(0))
            continue
        if c == ';':
            out.append(' '.join(''.join(cur).split()))
            cur = []
        else:
            cur.append(c)
        i += 1
    rest = ' '.join(''.join(cur).split())
    if rest:
        out.append(rest)
    return [s for s in out if s]


DEFINES = re.compile(r'CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|VIEW)\s+([A-Za-z_][A-Za-z0-9_]*)',
                     re.IGNORECASE)


DROPS = re.compile(r'DROP\s+(?:FUNCTION|VIEW)\s+(?:IF\s+EXISTS\s+)?([A-Za-z_][A-Za-z0-9_]*)',
                   re.IGNORECASE)


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def main():
    output, args = sys.argv[1], sys.argv[2:]
    files, funcs = args, []
    if '--functions' in args:
        k = args.index('--functions')
        files, funcs = args[:k], args[k + 1:]
    entries = []
    for path in files:
        m = re.fullmatch(r'(\d{4})_([a-z0-9_]+)\.sql', os.path.basename(path))
        if not m:
            sys.exit(f'embed-sql: {path}: name must be NNNN_name.sql')
        entries.append((int(m.group(1)), m.group(2), read(path)))
    entries.sort()
    for i, (version, _, _) in enumerate(entries, start=1):
        if version != i:
            sys.exit(f'embed-sql: migration versions must be 1..N without gaps (found {version} at {i})')

    functions, defined = [], {}
    for path in funcs:
        base = os.path.basename(path)
        m = re.fullmatch(r'(\d{2}_[a-z0-9_]+)\.sql', base)
        if not m:
            sys.exit(f'embed-sql: {path}: name must be NN_name.sql')
        text = read(path)
        for st in statements(text):
            d = re.fullmatch(r'CREATE OR REPLACE (?:FUNCTION|VIEW) ([A-Za-z_][A-Za-z0-9_]*)\b.*', st,
                             re.IGNORECASE | re.DOTALL)
            if not d:
                sys.exit(f'embed-sql: {path}: only CREATE OR REPLACE FUNCTION or VIEW belongs in '
                         f'sql/functions/ (tables, columns, indexes and grants go in a new '
                         f'numbered migration): "{st[:80]}"')
            defined[d.group(1).lower()] = base
        functions.append((m.group(1), text))
    functions.sort()
    for version, name, text in entries:
        if version < FUNCTIONS_SINCE:
            continue
        sts = statements(text)
        # A migration that drops the object (to change what CREATE OR REPLACE cannot: a
        # view's columns, a function's signature) creates and grants it again itself.
        dropped = {m.group(1).lower() for m in (DROPS.match(st) for st in sts) if m}
        for st in sts:
            d = DEFINES.match(st)
            if d and d.group(1).lower() in defined and d.group(1).lower() not in dropped:
                sys.exit(f'embed-sql: migration {version:04d}_{name}.sql defines {d.group(1)}, '
                         f'which sql/functions/{defined[d.group(1).lower()]} defines: change it '
                         f'there instead (it is re-applied after the migrations)')

    with open(output, 'w', encoding='utf-8') as out:
        out.write('/* Generated by tools/embed-sql.py from sql/ and sql/functions/: do not edit. */\n')
        out.write('#include "server/migrate.h"\n\n')
        for version, name, text in entries:
            out.write(f'static const char sql_{version}[] = {c_bytes(text.encode("utf-8"))};\n\n')
        for i, (name, text) in enumerate(functions, start=1):
            out.write(f'static const char fn_{i}[] = {c_bytes(text.encode("utf-8"))};\n\n')
        out.write('const struct migration migrate_list[] = {\n')
        for version, name, text in entries:
            digest = hashlib.sha256(text.encode('utf-8')).hexdigest()
            out.write(f'    {{{version}, "{name}", "{digest}", sql_{version}}},\n')
        out.write('};\n\n')
        out.write(f'const int migrate_count = {len(entries)};\n\n')
        out.write('const struct migration migrate_functions[] = {\n')
        for i, (name, text) in enumerate(functions, start=1):
            digest = hashlib.sha256(text.encode('utf-8')).hexdigest()
            out.write(f'    {{{i}, "{name}", "{digest}", fn_{i}}},\n')
        if not functions:
            out.write('    {0, "", "", ""},\n')
        out.write('};\n\n')
        out.write(f'const int migrate_nfunctions = {len(functions)};\n')


if __name__ == '__main__':
    main()
