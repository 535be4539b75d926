#!/usr/bin/env python3
"""Fails when test-browser holds a Criterion test that tests/browser/meson.build does not run
(each runs as its own meson test, by name), or names one that does not exist.

usage: check-listed.py TEST_BROWSER NAME..."""
import re
import subprocess
import sys

out = subprocess.run([sys.argv[1], "--list"], capture_output=True, text=True, check=True)
have = set(re.findall(r"^[├└]── (\w+)$", out.stdout + out.stderr, re.M))
listed = set(sys.argv[2:])
missing, unknown = sorted(have - listed), sorted(listed - have)
for name in missing:
    print(f"test-browser.c has Test(browser, {name}), which tests/browser/meson.build does not run")
for name in unknown:
    print(f"tests/browser/meson.build names {name}, which test-browser.c does not hold")
print(f"{len(have)} browser tests, {len(listed)} run by meson")
sys.exit(1 if missing or unknown or not have else 0)
