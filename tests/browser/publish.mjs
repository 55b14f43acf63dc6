#!/usr/bin/env node
// Publishes a clip to vericall from headless Chromium, the way a user's
// browser would, and reports what the page saw.
//
//   node tests/browser/publish.mjs --url <page url> --video <clip.y4m>
//        [--audio <clip.wav>] [--seconds 6] [--screenshot out.png]
//
// <page url> is the full page URL including the fragment, e.g.
//   http://127.0.0.1:8080/#session=<id>&token=<tok>
//
// Prints exactly one JSON line on stdout:
//   {"state":..., "eventsReceived":n, "lastEvent":..., "consoleErrors":[...]}
// and exits 0 once the page reached state "connected" and kept it for
// --seconds; otherwise prints the same line plus "error" and exits 1.
//
// Chromium: /usr/bin/chromium, or $CHROMIUM.

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const CONNECT_TIMEOUT_MS = 20_000;

function emit(result, code) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exitCode = code;
}

function usage(msg) {
  emit({ error: `${msg}; usage: node tests/browser/publish.mjs --url <page url> --video <clip.y4m> [--audio <clip.wav>] [--seconds 6] [--screenshot out.png]` }, 1);
  process.exit(1);
}

let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      url: { type: 'string' },
      video: { type: 'string' },
      audio: { type: 'string' },
      seconds: { type: 'string', default: '6' },
      screenshot: { type: 'string' },
    },
    strict: true,
  }));
} catch (err) {
  usage(err.message);
}
if (!opts.url) usage('--url is required');
if (!opts.video) usage('--video is required');
const seconds = Number(opts.seconds);
if (!Number.isFinite(seconds) || seconds < 0) usage('--seconds must be a number >= 0');
const video = resolve(opts.video);
if (!existsSync(video)) usage(`video clip not found: ${video}`);
const audio = opts.audio ? resolve(opts.audio) : null;
if (audio && !existsSync(audio)) usage(`audio clip not found: ${audio}`);

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const args = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  `--use-file-for-fake-video-capture=${video}`,
  ...(audio ? [`--use-file-for-fake-audio-capture=${audio}`] : []),
  '--allow-loopback-in-peer-connection',
];

const consoleErrors = [];
const result = { state: null, eventsReceived: 0, lastEvent: null, consoleErrors };

// Playwright refuses --user-data-dir in launch() args, so the fresh profile
// comes from launchPersistentContext with a new temp dir, removed at the end.
const userDataDir = mkdtempSync(join(tmpdir(), 'vericall-chromium-'));
let context;
// Hard stop so a wedged browser can never hang CI.
const watchdog = setTimeout(() => {
  emit({ ...result, error: 'watchdog: driver did not finish in time' }, 1);
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(1);
}, CONNECT_TIMEOUT_MS + seconds * 1000 + 30_000);

async function snapshot(page) {
  const v = await page.evaluate(() => window.vericall ?? null).catch(() => null);
  if (v) {
    result.state = v.state ?? null;
    result.eventsReceived = v.eventsReceived ?? 0;
    result.lastEvent = v.lastEvent ?? null;
    return v;
  }
  return null;
}

try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    args,
    headless: true,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (msg) => {
    if (msg.type() === 'error') consoleErrors.push(msg.text());
  });
  page.on('pageerror', (err) => consoleErrors.push(`pageerror: ${err.message}`));

  await page.goto(opts.url, { waitUntil: 'load' });
  try {
    await page.waitForFunction(
      () => window.vericall && (window.vericall.state === 'connected' || window.vericall.state === 'failed'),
      null,
      { timeout: CONNECT_TIMEOUT_MS, polling: 100 },
    );
  } catch {
    await snapshot(page);
    throw new Error(`page did not reach state "connected" within ${CONNECT_TIMEOUT_MS / 1000} s (state: ${result.state})`);
  }
  let v = await snapshot(page);
  if (v.state !== 'connected') throw new Error(`page state "${v.state}": ${v.error ?? 'unknown error'}`);

  await page.waitForTimeout(seconds * 1000);
  v = await snapshot(page);
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
  if (v.state !== 'connected') throw new Error(`page left state "connected": ${v.state}: ${v.error ?? ''}`);

  emit(result, 0);
} catch (err) {
  if (opts.screenshot && context) {
    const page = context.pages()[0];
    if (page) await page.screenshot({ path: opts.screenshot, fullPage: true }).catch(() => {});
  }
  emit({ ...result, error: err.message.split('\n')[0] }, 1);
} finally {
  clearTimeout(watchdog);
  await context?.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
