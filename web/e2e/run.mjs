// What CI runs (`cd web && node e2e/run.mjs`): every e2e/*.test.mjs with
// Node's own test runner, one file at a time (each starts its own server and
// browser; the machine has 2 cores), one line per test. Exits non-zero when
// any test fails. Arguments filter the files: `node e2e/run.mjs ide`.

import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { BINS, CHROMIUM, E2E_DIR, OUT_DIR } from './harness.mjs';

const filters = process.argv.slice(2);
const files = readdirSync(E2E_DIR)
  .filter((f) => f.endsWith('.test.mjs'))
  .filter((f) => filters.length === 0 || filters.some((w) => f.includes(w)))
  .sort()
  .map((f) => path.join(E2E_DIR, f));

const missing = [
  [BINS.server, 'cloudcode-server (CLOUDCODE_SERVER_BIN)'],
  [BINS.runner, 'cloudcode-runner (CLOUDCODE_RUNNER_BIN)'],
  [BINS.tui, 'cloudcode-tui (CLOUDCODE_TUI_BIN)'],
  [CHROMIUM, 'Chromium (apt-get install chromium)'],
].filter(([file]) => !existsSync(file));
for (const [file, what] of missing) console.error(`e2e: ${what} is missing: ${file}`);
if (missing.length > 0) {
  console.error('e2e: build the binaries with `cargo build -p cloudcode-server -p cloudcode-runner -p cloudcode-tui`');
  process.exit(2);
}
if (files.length === 0) {
  console.error(`e2e: no test file matches ${filters.join(' ')}`);
  process.exit(2);
}

// Screenshots and server logs of this run only (a stale FAILED-*.png
// would mislead).
for (const f of readdirSync(OUT_DIR)) rmSync(path.join(OUT_DIR, f), { recursive: true, force: true });

const result = spawnSync(
  process.execPath,
  ['--test', '--test-concurrency=1', '--test-reporter=spec', ...files],
  { stdio: 'inherit', cwd: path.dirname(E2E_DIR) },
);
process.exit(result.status ?? 1);
