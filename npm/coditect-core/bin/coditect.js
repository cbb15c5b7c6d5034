#!/usr/bin/env node
'use strict';
// The `coditect` command of @coditect-ai/coditect-core: runs the coditect
// binary of the platform package npm installed beside this one (an optional
// dependency), with this process's arguments, environment and terminal, and
// ends the way the binary ended: the same exit code, or the same signal.
// CODITECT_BINARY, when set, names the binary to run instead.

const { spawn } = require('node:child_process');
const os = require('node:os');
const path = require('node:path');
const platforms = require('../lib/platforms.js');

function findBinary() {
  const override = process.env.CODITECT_BINARY;
  if (override) return override;
  const libc = platforms.detectLibc();
  for (const platform of platforms.candidates(process.platform, process.arch, libc)) {
    try {
      return require.resolve(`${platforms.packageName(platform)}/${platforms.binaryFile(platform)}`);
    } catch {
      // Not installed: try the next one.
    }
  }
  process.stderr.write(`${platforms.missingMessage(process.platform, process.arch, libc)}\n`);
  process.exit(1);
}

const binary = findBinary();
const child = spawn(binary, process.argv.slice(2), { stdio: 'inherit' });

// Signals sent to this process go to the binary (a terminal's Ctrl-C
// reaches both; `kill` of this process only reaches it). This process then
// waits for the binary to end. On Windows the console delivers Ctrl-C and
// Ctrl-Break to the binary itself: this process only ignores them, and
// waits.
const windows = process.platform === 'win32';
const forwarded = windows
  ? ['SIGINT', 'SIGBREAK']
  : ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];
const forward = (signal) => {
  if (windows) return;
  try {
    child.kill(signal);
  } catch {
    // The binary has already ended.
  }
};
for (const signal of forwarded) process.on(signal, forward);

child.on('error', (err) => {
  const hint = process.env.CODITECT_BINARY
    ? ' (CODITECT_BINARY names it: unset it to run the installed binary)'
    : ` (from ${path.dirname(binary)}: reinstall ${platforms.MAIN})`;
  process.stderr.write(`coditect: cannot run ${binary}: ${err.message}${hint}\n`);
  process.exit(1);
});

child.on('exit', (code, signal) => {
  if (signal) {
    // End by the same signal, so that the shell and any parent see what
    // the binary's caller would have seen.
    for (const s of forwarded) process.removeListener(s, forward);
    try {
      process.kill(process.pid, signal);
    } catch {
      // Fall through to the exit code the shell would show.
    }
    process.exitCode = 128 + (os.constants.signals[signal] || 0);
    return;
  }
  process.exit(code ?? 1);
});
