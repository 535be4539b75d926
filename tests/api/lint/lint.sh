#!/usr/bin/env bash
# tests/api/lint/lint.sh SPEC: lint SPEC (proto/openapi.yaml) with the @redocly/cli of
# package-lock.json and redocly.yaml beside this script. Exits non-zero on any error;
# warnings are printed only. The meson test openapi-lint runs it; tools/test.sh installs
# the linter (npm ci) into node_modules here first.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
spec=${1:?usage: lint.sh SPEC}
fix="run tools/test.sh (it installs nodejs and npm, then the linter with npm ci in $here)"

command -v node >/dev/null || { echo "openapi-lint: node is not installed: $fix" >&2; exit 1; }
cli=$here/node_modules/@redocly/cli
[ -f "$cli/package.json" ] || { echo "openapi-lint: the linter is not installed: $fix" >&2; exit 1; }
# A lock file changed since the install (a version bump merged) leaves an old linter here.
want=$(node -p 'require(process.argv[1]).devDependencies["@redocly/cli"]' "$here/package.json")
have=$(node -p 'require(process.argv[1]).version' "$cli/package.json")
[ "$want" = "$have" ] ||
    { echo "openapi-lint: @redocly/cli $have installed, package.json pins $want: $fix" >&2; exit 1; }

echo "openapi-lint: @redocly/cli $have, node $(node --version)"
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_COLOR=1
exec node "$cli/bin/cli.js" lint --config "$here/redocly.yaml" --format=stylish "$spec"
