#!/usr/bin/env bash
# Release packaging of the `coditect` CLI: builds the distribution binary
# (release profile, no features), refuses it unless `--version` reports a
# distribution build (scripts/check-distribution-cli.sh), and writes
# dist/coditect-VERSION-TARGET.tar.gz with its SHA-256 beside it.
# Usage: scripts/package-cli.sh [--out DIR] [--binary BINARY]
#   --binary packages a binary built elsewhere (it is checked the same way).
set -euo pipefail
cd "$(dirname "$0")/.."

out=dist
bin=""
while [ $# -gt 0 ]; do
    case $1 in
        --out) out=$2; shift 2 ;;
        --binary) bin=$2; shift 2 ;;
        *) echo "usage: $0 [--out DIR] [--binary BINARY]" >&2; exit 2 ;;
    esac
done

if [ -z "$bin" ]; then
    target_dir=${CARGO_TARGET_DIR:-target}
    cargo build --release --locked -p coditect-cli --bin coditect
    bin=$target_dir/release/coditect
fi

scripts/check-distribution-cli.sh "$bin"

version=$("$bin" --version | awk '{print $2}')
triple=$(rustc -vV | sed -n 's/^host: //p')
name=coditect-$version-$triple
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name" "$out"
cp "$bin" "$stage/$name/coditect"
cp README.md "$stage/$name/README.md"
tar -C "$stage" -czf "$out/$name.tar.gz" "$name"
(cd "$out" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "packaged $out/$name.tar.gz"
cat "$out/$name.tar.gz.sha256"
