'use strict';
// The platforms the `coditect` CLI ships for on npm: one package each,
// installed as an optional dependency of @coditect-ai/coditect-core. npm
// installs only the package whose `os`, `cpu` (and on Linux `libc`) match
// the machine. This list is the one place platforms are named: the package
// generator (npm/generate.js), the shim (bin/coditect.js), the release
// workflow's matrix (checked by npm/test/platforms.test.js) and the tests
// read it.

const MAIN = '@coditect-ai/coditect-core';

const PLATFORMS = [
  { suffix: 'darwin-arm64', os: 'darwin', cpu: 'arm64', libc: null, target: 'aarch64-apple-darwin' },
  { suffix: 'darwin-x64', os: 'darwin', cpu: 'x64', libc: null, target: 'x86_64-apple-darwin' },
  { suffix: 'linux-x64', os: 'linux', cpu: 'x64', libc: 'glibc', target: 'x86_64-unknown-linux-gnu' },
  { suffix: 'linux-arm64', os: 'linux', cpu: 'arm64', libc: 'glibc', target: 'aarch64-unknown-linux-gnu' },
  { suffix: 'linux-x64-musl', os: 'linux', cpu: 'x64', libc: 'musl', target: 'x86_64-unknown-linux-musl' },
  { suffix: 'win32-x64', os: 'win32', cpu: 'x64', libc: null, target: 'x86_64-pc-windows-msvc' },
];

function packageName(platform) {
  return `${MAIN}-${platform.suffix}`;
}

/// The binary's path inside its platform package.
function binaryFile(platform) {
  return platform.os === 'win32' ? 'bin/coditect.exe' : 'bin/coditect';
}

/// The platform packages that can run on this machine, best first: the one
/// npm should have installed, then any other that also runs here (the
/// statically linked musl build runs on glibc Linux too, so it stands in
/// when an older npm, which ignores `libc`, picked it, or a lockfile made
/// elsewhere did).
function candidates(os, cpu, libc) {
  const exact = PLATFORMS.filter(
    (p) => p.os === os && p.cpu === cpu && (p.libc === null || p.libc === libc),
  );
  if (os === 'linux' && libc === 'glibc') {
    const musl = PLATFORMS.find((p) => p.os === os && p.cpu === cpu && p.libc === 'musl');
    if (musl) exact.push(musl);
  }
  return exact;
}

/// The C library of this Linux machine: 'musl' or 'glibc'; null elsewhere.
/// `ldd` names its C library (the fast way, as in the `detect-libc`
/// package); else Node's own report says which glibc it runs on, if any.
function detectLibc({ platform = process.platform, fs = require('node:fs'), report = process.report } = {}) {
  if (platform !== 'linux') return null;
  try {
    const ldd = fs.readFileSync('/usr/bin/ldd', 'latin1');
    if (ldd.includes('musl')) return 'musl';
    if (ldd.includes('GNU C Library') || ldd.includes('GLIBC')) return 'glibc';
  } catch {
    // No ldd (a minimal container): ask the runtime.
  }
  try {
    const header = report.getReport().header;
    return header.glibcVersionRuntime ? 'glibc' : 'musl';
  } catch {
    return 'glibc';
  }
}

function describe(os, cpu, libc) {
  return `${os}-${cpu}${libc === 'musl' ? ' (musl)' : ''}`;
}

/// What to do when no platform package is installed: one paragraph.
function missingMessage(os, cpu, libc) {
  const wanted = candidates(os, cpu, libc);
  const here = describe(os, cpu, libc);
  if (wanted.length === 0) {
    return (
      `coditect: there is no coditect build for this platform (${here}) on npm; ` +
      `the supported platforms are ${PLATFORMS.map((p) => p.suffix).join(', ')}. ` +
      'Run coditect on one of those, or point CODITECT_BINARY at a coditect binary you built ' +
      'for this machine (`cargo build --release -p coditect-cli`).'
    );
  }
  return (
    `coditect: the coditect binary for this platform (${here}) is not installed: ` +
    `npm should have installed the package ${packageName(wanted[0])} alongside ${MAIN}, ` +
    'but it was left out (an install with --omit=optional or --no-optional, or a lockfile made on ' +
    `another platform). Reinstall with optional dependencies: \`npm install -g ${MAIN}\` ` +
    `(in a project, delete package-lock.json and node_modules and run \`npm install\`), or install ` +
    `it directly with \`npm install -g ${packageName(wanted[0])}\`. ` +
    'CODITECT_BINARY may also point at a coditect binary to run instead.'
  );
}

module.exports = {
  MAIN,
  PLATFORMS,
  packageName,
  binaryFile,
  candidates,
  detectLibc,
  missingMessage,
};
