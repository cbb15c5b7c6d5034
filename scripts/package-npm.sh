#!/usr/bin/env bash
# Packs the npm packages of the `coditect` CLI: the main package
# @coditect-ai/coditect-core (the Node shim) and, given a binary, the
# platform package that carries it. The binary must be a distribution
# build (scripts/check-distribution-cli.sh) of the workspace version, which
# is the version of every package (npm/generate.js writes them; a stale one
# is refused here too).
# Usage: scripts/package-npm.sh --out DIR [--main] [--platform SUFFIX --binary BINARY]
#                               [--repository URL]
#   --platform  one of the platforms of npm/coditect-core/lib/platforms.js
#               (linux-x64, darwin-arm64, win32-x64, ...)
#   --repository  the source repository written into each package.json
#               (npm's provenance checks it against the repository that
#               built the package; the release workflow passes its own)
# Prints the path of each tarball written.
set -euo pipefail
cd "$(dirname "$0")/.."

out=""
main=0
platform=""
bin=""
repository=""
while [ $# -gt 0 ]; do
    case $1 in
        --out) out=$2; shift 2 ;;
        --main) main=1; shift ;;
        --platform) platform=$2; shift 2 ;;
        --binary) bin=$2; shift 2 ;;
        --repository) repository=$2; shift 2 ;;
        *) echo "usage: $0 --out DIR [--main] [--platform SUFFIX --binary BINARY] [--repository URL]" >&2; exit 2 ;;
    esac
done
if [ -z "$out" ]; then
    echo "usage: $0 --out DIR [--main] [--platform SUFFIX --binary BINARY] [--repository URL]" >&2
    exit 2
fi
if { [ -n "$platform" ] && [ -z "$bin" ]; } || { [ -z "$platform" ] && [ -n "$bin" ]; }; then
    echo "package-npm: --platform and --binary go together" >&2
    exit 2
fi

node npm/generate.js --check
version=$(node -p 'require("./npm/coditect-core/package.json").version')

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Copies package folder $1 to the stage as $2, sets the repository, packs it.
pack() {
    cp -R "$1" "$stage/$2"
    if [ -n "$repository" ]; then
        # shellcheck disable=SC2016 # JavaScript, not shell
        REPOSITORY=$repository node -e '
            const fs = require("node:fs");
            const file = process.argv[1];
            const json = JSON.parse(fs.readFileSync(file, "utf8"));
            json.repository = { type: "git", url: `git+${process.env.REPOSITORY}.git` };
            fs.writeFileSync(file, JSON.stringify(json, null, 2) + "\n");
        ' "$stage/$2/package.json"
    fi
    (cd "$stage/$2" && npm pack --silent --pack-destination "$out") | sed "s|^|$out/|"
}

if [ -n "$platform" ]; then
    # shellcheck disable=SC2016 # JavaScript, not shell
    file=$(PLATFORM=$platform node -e '
        const p = require("./npm/coditect-core/lib/platforms.js");
        const found = p.PLATFORMS.find((x) => x.suffix === process.env.PLATFORM);
        if (!found) {
            console.error(`package-npm: unknown platform ${process.env.PLATFORM}; known: ${p.PLATFORMS.map((x) => x.suffix).join(", ")}`);
            process.exit(2);
        }
        console.log(p.binaryFile(found));
    ')
    # The binary is checked where it can run: here, or (a binary built
    # for another CPU) through the emulator CODITECT_CHECK_RUNNER names,
    # e.g. "qemu-aarch64 -L /usr/aarch64-linux-gnu".
    run=$bin
    if [ -n "${CODITECT_CHECK_RUNNER:-}" ]; then
        run=$stage/run-coditect
        printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$CODITECT_CHECK_RUNNER" "$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")" > "$run"
        chmod 755 "$run"
    fi
    scripts/check-distribution-cli.sh "$run"
    built=$("$run" --version | awk '{print $2}')
    if [ "$built" != "$version" ]; then
        echo "package-npm: refused $bin: it is coditect $built, the packages are $version" >&2
        exit 1
    fi
    mkdir -p "$stage/platform-$platform"
    cp npm/platforms/"$platform"/package.json "$stage/platform-$platform/"
    mkdir -p "$stage/platform-$platform/$(dirname "$file")"
    cp "$bin" "$stage/platform-$platform/$file"
    chmod 755 "$stage/platform-$platform/$file"
    pack "$stage/platform-$platform" "$platform"
fi
if [ "$main" = 1 ]; then
    pack npm/coditect-core coditect-core
fi
