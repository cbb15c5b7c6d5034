#!/usr/bin/env bash
# Checks the architecture rules of docs/ARCHITECTURE.md that the compiler
# does not: which layer may import which, where SQL lives, file sizes, and
# that the documentation only points at files in this repository.
# Run by scripts/test.sh (and so by CI). Exits 1 naming each breach.
set -uo pipefail
cd "$(dirname "$0")/.."
failed=0
fail() { echo "check-layers: $*" >&2; failed=1; }

# 1. The verifier depends on no other crate of the workspace.
if grep -E '^\s*(coditect-|proto|issuer|cli)' verifier/Cargo.toml | grep -v '^\s*#' | grep -q .; then
    fail "verifier/Cargo.toml names another workspace crate"
fi
if grep -rnE 'coditect_(issuer|cli|proto)' verifier/src; then
    fail "verifier/src uses another workspace crate"
fi

# 2. Inside the issuer, each layer imports only the layers below it:
#    domain <- store <- app <- http/admin (serve.rs composes them all).
src=issuer/src
forbid() { # folder, pattern, what
    local hits
    hits=$(grep -rnE "$2" "$src/$1" --include='*.rs' || true)
    if [ -n "$hits" ]; then
        echo "$hits" >&2
        fail "$src/$1 must not import $3"
    fi
}
forbid domain 'crate::(store|app|http|admin|serve)\b' "store, app, http, admin or serve"
forbid domain 'crate::config\b' "config (rules take their settings as parameters)"
forbid store 'crate::(app|http|admin|serve)\b' "app, http, admin or serve"
forbid store 'crate::config\b' "config (the store takes what it needs as parameters)"
forbid app 'crate::(http|admin|serve)\b' "http, admin or serve"

# 3. SQL and the database driver live under store/ only.
outside=$(grep -rlE 'rusqlite|r2d2|tokio_postgres|deadpool_postgres|postgres_native_tls' "$src" \
    --include='*.rs' | grep -v "^$src/store/" || true)
if [ -n "$outside" ]; then
    echo "$outside" >&2
    fail "a database driver (rusqlite, r2d2, tokio_postgres, deadpool) used outside $src/store/"
fi

# 4. No file over 600 lines in issuer/src without a reason at its top.
while IFS= read -r f; do
    n=$(wc -l <"$f")
    if [ "$n" -gt 600 ] && ! head -n 15 "$f" | grep -q '^//! Long file:'; then
        fail "$f has $n lines and no '//! Long file:' reason at its top"
    fi
done < <(find "$src" -name '*.rs')

# 5. The CLI's license view does not import its commands.
if grep -n 'use crate::commands' cli/src/license.rs; then
    fail "cli/src/license.rs imports cli/src/commands"
fi

# 6. Every reference stays inside the repository: no pointer to the team's
#    workspace documents (../shared/, DESIGN.md, "DESIGN §").
refs=$(git grep -nE '\.\./shared/|DESIGN\.md|DESIGN §' -- ':!scripts/check-layers.sh' ':!.ci/run' || true)
if [ -n "$refs" ]; then
    echo "$refs" >&2
    fail "references to documents outside the repository (point at docs/ instead)"
fi

if [ "$failed" -ne 0 ]; then
    exit 1
fi
echo "check-layers: ok (layers, SQL under store/, file sizes, references)"
