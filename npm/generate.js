#!/usr/bin/env node
'use strict';
// Writes the package.json of the main npm package and of each platform
// package from the workspace version (Cargo.toml, [workspace.package]) and
// the platform list (coditect-core/lib/platforms.js). The files are
// committed; `node npm/generate.js --check` (run by the tests) fails when
// one differs from what this script writes, so versions never drift.
// Usage: node npm/generate.js [--check]

const fs = require('node:fs');
const path = require('node:path');
const platforms = require('./coditect-core/lib/platforms.js');

const here = __dirname;
const root = path.dirname(here);

function workspaceVersion() {
  const cargo = fs.readFileSync(path.join(root, 'Cargo.toml'), 'utf8');
  const section = cargo.split(/^\[workspace\.package\]\s*$/m)[1];
  const version = section && section.split(/^\[/m)[0].match(/^version\s*=\s*"([^"]+)"/m);
  if (!version) throw new Error('Cargo.toml has no version in [workspace.package]');
  return version[1];
}

const common = {
  license: 'UNLICENSED',
  publishConfig: { access: 'public' },
};

function mainPackage(version) {
  return {
    name: platforms.MAIN,
    version,
    description: 'The coditect command-line tool: activate and check your CODITECT license',
    ...common,
    bin: { coditect: 'bin/coditect.js' },
    files: ['bin/coditect.js', 'lib/platforms.js', 'README.md'],
    engines: { node: '>=18' },
    optionalDependencies: Object.fromEntries(
      platforms.PLATFORMS.map((p) => [platforms.packageName(p), version]),
    ),
  };
}

function platformPackage(platform, version) {
  return {
    name: platforms.packageName(platform),
    version,
    description: `The coditect command-line tool for ${platform.suffix} (installed by ${platforms.MAIN})`,
    ...common,
    os: [platform.os],
    cpu: [platform.cpu],
    ...(platform.libc ? { libc: [platform.libc] } : {}),
    files: [platforms.binaryFile(platform)],
    preferUnplugged: true,
  };
}

/// Every generated file: its path (relative to npm/) and its content.
function generated(version = workspaceVersion()) {
  const files = [['coditect-core/package.json', mainPackage(version)]];
  for (const p of platforms.PLATFORMS) {
    files.push([`platforms/${p.suffix}/package.json`, platformPackage(p, version)]);
  }
  return files.map(([file, json]) => [file, `${JSON.stringify(json, null, 2)}\n`]);
}

function main(args) {
  const check = args.includes('--check');
  const stale = [];
  for (const [file, content] of generated()) {
    const full = path.join(here, file);
    let existing = null;
    try {
      existing = fs.readFileSync(full, 'utf8');
    } catch {
      // Missing: written below, or reported.
    }
    if (existing === content) continue;
    if (check) {
      stale.push(file);
    } else {
      fs.mkdirSync(path.dirname(full), { recursive: true });
      fs.writeFileSync(full, content);
      console.log(`wrote npm/${file}`);
    }
  }
  if (stale.length > 0) {
    console.error(
      `npm/generate.js: out of date (the workspace version or the platform list changed): ${stale
        .map((f) => `npm/${f}`)
        .join(', ')}\n  run \`node npm/generate.js\` and commit the result`,
    );
    process.exit(1);
  }
}

module.exports = { generated, workspaceVersion, mainPackage, platformPackage };

if (require.main === module) main(process.argv.slice(2));
