'use strict';
// The shim's platform mapping (which package runs on which machine), the
// generated package.json files (no version drift), the message when the
// platform package is missing, and the release workflow's matrix: the same
// platforms as the shim knows.
// Run: node --test npm/test/

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const platforms = require('../coditect-core/lib/platforms.js');
const generate = require('../generate.js');

const root = path.join(__dirname, '..', '..');
const names = (list) => list.map((p) => p.suffix);

test('each supported machine maps to its own package first', () => {
  const cases = [
    [['darwin', 'arm64', null], ['darwin-arm64']],
    [['darwin', 'x64', null], ['darwin-x64']],
    [['linux', 'x64', 'glibc'], ['linux-x64', 'linux-x64-musl']],
    [['linux', 'x64', 'musl'], ['linux-x64-musl']],
    [['linux', 'arm64', 'glibc'], ['linux-arm64']],
    [['win32', 'x64', null], ['win32-x64']],
  ];
  for (const [[os, cpu, libc], expected] of cases) {
    assert.deepEqual(names(platforms.candidates(os, cpu, libc)), expected, `${os} ${cpu} ${libc}`);
  }
});

test('an unsupported machine maps to no package', () => {
  for (const [os, cpu, libc] of [
    ['linux', 'arm64', 'musl'],
    ['linux', 'ia32', 'glibc'],
    ['win32', 'arm64', null],
    ['win32', 'ia32', null],
    ['freebsd', 'x64', null],
    ['darwin', 'ppc64', null],
  ]) {
    assert.deepEqual(platforms.candidates(os, cpu, libc), [], `${os} ${cpu} ${libc}`);
  }
});

test("each platform package's os, cpu and libc select exactly the machines that run it first", () => {
  for (const [file, text] of generate.generated()) {
    if (!file.startsWith('platforms/')) continue;
    const json = JSON.parse(text);
    const platform = platforms.PLATFORMS.find((p) => platforms.packageName(p) === json.name);
    assert.ok(platform, json.name);
    assert.deepEqual(json.os, [platform.os]);
    assert.deepEqual(json.cpu, [platform.cpu]);
    assert.deepEqual(json.libc, platform.libc ? [platform.libc] : undefined);
    assert.deepEqual(json.files, [platforms.binaryFile(platform)]);
    assert.equal(json.bin, undefined, 'only the main package has a bin');
    const libc = platform.os === 'linux' ? platform.libc : null;
    assert.equal(platforms.candidates(platform.os, platform.cpu, libc)[0], platform);
  }
});

test('the committed package.json files are what npm/generate.js writes (no version drift)', () => {
  const cargo = fs.readFileSync(path.join(root, 'Cargo.toml'), 'utf8');
  const version = generate.workspaceVersion();
  assert.match(cargo, new RegExp(`\\[workspace\\.package\\]\\s*\\nversion = "${version.replace(/\./g, '\\.')}"`));
  for (const [file, text] of generate.generated()) {
    const committed = fs.readFileSync(path.join(root, 'npm', file), 'utf8');
    assert.equal(committed, text, `npm/${file} is stale: run \`node npm/generate.js\``);
    assert.equal(JSON.parse(committed).version, version, file);
  }
  const main = JSON.parse(fs.readFileSync(path.join(root, 'npm/coditect-core/package.json'), 'utf8'));
  assert.deepEqual(
    Object.keys(main.optionalDependencies).sort(),
    platforms.PLATFORMS.map(platforms.packageName).sort(),
  );
  for (const v of Object.values(main.optionalDependencies)) assert.equal(v, version);
  assert.equal(main.bin.coditect, 'bin/coditect.js');
  assert.equal(main.scripts, undefined, 'no install scripts: installs work with scripts disabled');
});

test('musl or glibc: ldd says which, else the runtime report', () => {
  const fakeFs = (content) => ({
    readFileSync() {
      if (content === null) throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
      return content;
    },
  });
  const report = (glibc) => ({ getReport: () => ({ header: glibc ? { glibcVersionRuntime: glibc } : {} }) });
  const detect = (content, glibc, platform = 'linux') =>
    platforms.detectLibc({ platform, fs: fakeFs(content), report: report(glibc) });
  assert.equal(detect('#!/bin/sh\nexec /lib/ld-musl-x86_64.so.1 --list "$@"\n', null), 'musl');
  assert.equal(detect('#!/bin/bash\n# This file is part of the GNU C Library.\n', null), 'glibc');
  assert.equal(detect(null, '2.36'), 'glibc');
  assert.equal(detect(null, null), 'musl');
  assert.equal(detect('something else', '2.41'), 'glibc');
  assert.equal(detect(null, null, 'darwin'), null);
  assert.equal(detect(null, null, 'win32'), null);
});

test('the missing-package message is one paragraph saying what to do', () => {
  const text = platforms.missingMessage('linux', 'x64', 'glibc');
  assert.ok(!text.includes('\n'), text);
  for (const needle of [
    '@coditect-ai/coditect-core-linux-x64',
    '--omit=optional',
    'npm install -g @coditect-ai/coditect-core',
    'CODITECT_BINARY',
  ]) {
    assert.ok(text.includes(needle), `${needle} in: ${text}`);
  }
  const unsupported = platforms.missingMessage('freebsd', 'x64', null);
  assert.ok(!unsupported.includes('\n'), unsupported);
  assert.ok(unsupported.includes('freebsd-x64'), unsupported);
  for (const p of platforms.PLATFORMS) assert.ok(unsupported.includes(p.suffix), unsupported);
  assert.ok(unsupported.includes('CODITECT_BINARY'), unsupported);
});

test('the release workflow builds each platform for its Rust target', () => {
  const workflow = fs.readFileSync(path.join(root, '.github/workflows/release.yml'), 'utf8');
  const listed = [...workflow.matchAll(/^\s*- npm: ([\w-]+)\n\s+target: ([\w-]+)$/gm)].map(
    (m) => `${m[1]} ${m[2]}`,
  );
  assert.deepEqual(
    listed.sort(),
    platforms.PLATFORMS.map((p) => `${p.suffix} ${p.target}`).sort(),
  );
});
