// What the browser drivers in this folder (flow.mjs, review.mjs) share:
//
//   CHROMIUM_ARGS  the Chromium flags every driver launches with (a driver may add its own);
//   drive          launches headless Chromium (/usr/bin/chromium or $CHROMIUM) with a throwaway
//                  profile, runs the driver's steps on its page under a watchdog, and prints the
//                  report as exactly one JSON line whatever happens (with `error` set on failure)
//                  and sets the exit code.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

// The driver's report as one JSON line on stdout (the Rust tests parse the last line).
function emit(result, code) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exitCode = code;
}

// Runs `steps(page)` in a fresh headless Chromium; `steps` returns the exit code (0 when the run
// met its goal). `result` is the report the driver fills in as it goes: it is printed as it
// stands at the end, or with `error` added when `steps` throws or the watchdog fires.
//
//   timeoutMs  the driver's own time limit; the watchdog ends the process 30 s after it
//   args, viewport ({width, height}), locale  for Chromium
//   screens    path prefix: on failure the page is saved as <screens>-error.png (optional)
export async function drive({ result, timeoutMs, args, viewport, locale, screens }, steps) {
  const userDataDir = mkdtempSync(join(tmpdir(), 'vericall-chromium-'));
  let context;
  const watchdog = setTimeout(() => {
    emit({ ...result, error: 'watchdog: driver did not finish in time' }, 1);
    rmSync(userDataDir, { recursive: true, force: true });
    process.exit(1);
  }, timeoutMs + 30_000);

  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args,
      headless: true,
      viewport,
      locale,
    });
    const page = context.pages()[0] ?? (await context.newPage());
    const code = await steps(page);
    emit(result, code);
  } catch (err) {
    const page = context?.pages()[0];
    if (page && screens) await page.screenshot({ path: `${screens}-error.png`, fullPage: true }).catch(() => {});
    emit({ ...result, error: err.message.split('\n')[0] }, 1);
  } finally {
    clearTimeout(watchdog);
    await context?.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  }
}
