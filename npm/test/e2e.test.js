'use strict';
// End to end, offline: packs the main package and the linux-x64 package
// around a distribution build of the CLI (scripts/package-npm.sh), installs
// both globally into a temporary prefix with no registry access, and runs
// `coditect` through npm's bin: output, exit codes and signals pass through,
// CODITECT_BINARY overrides the binary, and without the platform package
// (--omit=optional) `coditect` says what to do.
//
// CODITECT_NPM_BINARY names the distribution binary (scripts/test-npm.sh
// builds it and sets it). Without it, or without npm, the test skips, and
// under CI (CI set, not 0/false) fails instead.
// Run: CODITECT_NPM_BINARY=target/debug/coditect node --test npm/test/

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');

const root = path.join(__dirname, '..', '..');
const version = JSON.parse(fs.readFileSync(path.join(root, 'npm/coditect-core/package.json'), 'utf8')).version;
const inCi = !['', '0', 'false', 'FALSE', 'False'].includes((process.env.CI || '').trim());

function missing(problem) {
  if (inCi) return problem; // fails the tests below
  process.stderr.write(`NOTICE: skipping the npm end-to-end test: ${problem}\n`);
  return null;
}

function precondition() {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    return { skip: 'only the linux-x64 package can be built and installed here' };
  }
  const binary = process.env.CODITECT_NPM_BINARY;
  if (!binary) {
    return { problem: missing('CODITECT_NPM_BINARY is not set (scripts/test-npm.sh builds the CLI and sets it)') };
  }
  if (spawnSync('npm', ['--version']).status !== 0) {
    return { problem: missing('npm is not installed (apt-get install npm)') };
  }
  return { binary: path.resolve(binary) };
}

const pre = precondition();
const options = pre.skip ? { skip: pre.skip } : pre.binary || pre.problem ? {} : { skip: true };

function run(cmd, args, opts = {}) {
  const out = spawnSync(cmd, args, { encoding: 'utf8', ...opts });
  if (out.error) throw out.error;
  return out;
}

function ok(out, what) {
  assert.equal(out.status, 0, `${what}: ${out.stdout}${out.stderr}`);
  return out;
}

let work;
let bin; // the `coditect` npm put on the PATH, with the platform package
let bare; // the same without the platform package (--omit=optional)
let installed; // the binary inside the installed platform package
let env;

test.before(() => {
  if (options.skip) return;
  assert.ok(!pre.problem, `${pre.problem} (CI is set, so this test fails instead of skipping)`);
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'coditect-npm-'));
  env = {
    ...process.env,
    CODITECT_HOME: path.join(work, 'home'),
    CODITECT_API_URL: 'http://127.0.0.1:9',
    npm_config_cache: path.join(work, 'cache'),
    npm_config_update_notifier: 'false',
    npm_config_audit: 'false',
    npm_config_fund: 'false',
  };
  delete env.CODITECT_BINARY;
  const dist = path.join(work, 'dist');
  const packed = ok(
    run('bash', [
      path.join(root, 'scripts/package-npm.sh'),
      '--out', dist, '--main', '--platform', 'linux-x64', '--binary', pre.binary,
    ], { env }),
    'package-npm.sh',
  );
  const main = path.join(dist, `coditect-ai-coditect-core-${version}.tgz`);
  const platform = path.join(dist, `coditect-ai-coditect-core-linux-x64-${version}.tgz`);
  assert.ok(packed.stdout.includes(main) && packed.stdout.includes(platform), packed.stdout);

  const prefix = path.join(work, 'prefix');
  ok(run('npm', ['install', '-g', '--prefix', prefix, '--offline', main, platform], { env }), 'npm install');
  bin = path.join(prefix, 'bin', 'coditect');
  installed = path.join(prefix, 'lib/node_modules/@coditect-ai/coditect-core-linux-x64/bin/coditect');

  const barePrefix = path.join(work, 'bare');
  ok(
    run('npm', ['install', '-g', '--prefix', barePrefix, '--offline', '--omit=optional', main], { env }),
    'npm install --omit=optional',
  );
  bare = path.join(barePrefix, 'bin', 'coditect');
});

test.after(() => {
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

test('npm installs the shim as `coditect` and the binary beside it; no install scripts run', options, () => {
  assert.ok(fs.lstatSync(bin).isSymbolicLink());
  assert.ok(fs.readlinkSync(bin).endsWith('coditect-core/bin/coditect.js'));
  assert.equal(fs.statSync(installed).mode & 0o111, 0o111, 'the binary is executable');
  assert.ok(fs.readFileSync(installed).equals(fs.readFileSync(pre.binary)));
});

test('coditect --version: the version, exit 0', options, () => {
  const out = run(bin, ['--version'], { env });
  assert.equal(out.status, 0, out.stderr);
  assert.equal(out.stdout, `coditect ${version}\n`);
});

test('coditect license status on a machine without a license: the reason, exit 1', options, () => {
  const out = run(bin, ['license', 'status'], { env });
  assert.equal(out.status, 1, out.stdout + out.stderr);
  assert.match(out.stderr, /no CODITECT license/);
  assert.match(out.stderr, /coditect activate/);
});

test('exit codes pass through: a usage error (1), an unexpected failure (2)', options, () => {
  const usage = run(bin, ['--no-such-flag'], { env });
  assert.equal(usage.status, 1, usage.stderr);
  assert.match(usage.stderr, /unexpected argument '--no-such-flag'/);
  // Writing the man page to a full disk: the binary's unexpected-error exit.
  const full = fs.openSync('/dev/full', 'w');
  try {
    const failed = run(bin, ['man'], { env, stdio: ['ignore', full, 'pipe'] });
    assert.equal(failed.status, 2, failed.stderr);
    assert.match(failed.stderr, /No space left on device/);
  } finally {
    fs.closeSync(full);
  }
});

test('CODITECT_BINARY names the binary to run, with the arguments and exit code passed through', options, () => {
  const fake = path.join(work, 'fake-coditect');
  fs.writeFileSync(fake, '#!/bin/sh\necho "fake coditect: $*"\nexit 7\n', { mode: 0o755 });
  const out = run(bin, ['license', 'status', '--json'], { env: { ...env, CODITECT_BINARY: fake } });
  assert.equal(out.status, 7, out.stderr);
  assert.equal(out.stdout, 'fake coditect: license status --json\n');
  // The override works without the platform package too.
  const alone = run(bare, ['--version'], { env: { ...env, CODITECT_BINARY: pre.binary } });
  assert.equal(alone.status, 0, alone.stderr);
  assert.equal(alone.stdout, `coditect ${version}\n`);
  // A wrong override: said plainly, exit 1.
  const wrong = run(bin, ['--version'], { env: { ...env, CODITECT_BINARY: path.join(work, 'nothing') } });
  assert.equal(wrong.status, 1);
  assert.match(wrong.stderr, /cannot run .*nothing.*CODITECT_BINARY/);
});

test('without the platform package: one paragraph saying what to do, exit 1', options, () => {
  const out = run(bare, ['--version'], { env });
  assert.equal(out.status, 1, out.stdout);
  assert.equal(out.stdout, '');
  const text = out.stderr.trimEnd();
  assert.ok(!text.includes('\n'), `one paragraph: ${text}`);
  assert.ok(!/\bat .*\.js:\d+/.test(text), `no stack trace: ${text}`);
  for (const needle of ['@coditect-ai/coditect-core-linux-x64', '--omit=optional', 'npm install -g @coditect-ai/coditect-core']) {
    assert.ok(text.includes(needle), `${needle} in: ${text}`);
  }
});

/// The children of process `pid` (Linux).
function children(pid) {
  try {
    return fs
      .readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

function exe(pid) {
  try {
    return fs.readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return null;
  }
}

async function signalled(signal) {
  // `login --password-stdin` waits for stdin, which stays open.
  const shim = spawn(bin, ['login', '--email', 'a@example.com', '--password-stdin'], {
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const ended = new Promise((resolve) => shim.on('exit', (code, sig) => resolve({ code, sig })));
  const target = fs.realpathSync(installed);
  let child = null;
  const deadline = Date.now() + 60_000;
  while (child === null && Date.now() < deadline) {
    child = children(shim.pid).find((c) => exe(c) === target) ?? null;
    if (child === null) await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(child !== null, 'the shim started the binary');
  process.kill(shim.pid, signal);
  const { code, sig } = await ended;
  const binaryAlive = exe(child) === target;
  shim.stdin.end();
  assert.equal(sig, signal, `the shim ended by ${signal} (exit code ${code})`);
  assert.ok(!binaryAlive, 'the binary got the signal and ended first');
}

// A shim that kept the signal to itself would leave both processes waiting
// on stdin: the timeout turns that hang into a failure.
const signalOptions = { ...options, timeout: 120_000 };

test('SIGINT sent to `coditect` reaches the binary, and `coditect` ends by it', signalOptions, () =>
  signalled('SIGINT'));

test('SIGTERM sent to `coditect` reaches the binary, and `coditect` ends by it', signalOptions, () =>
  signalled('SIGTERM'));
