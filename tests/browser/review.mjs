#!/usr/bin/env node
// Drives the operator review console (static/review.html) in headless Chromium the way an
// operator would: a wrong password first, then signs in, opens one session from the queue,
// writes a note and approves or rejects it.
//
//   node tests/browser/review.mjs --url <base url, e.g. http://127.0.0.1:8080>
//        --username <name> --password <password> --session <id>
//        [--decision approve|reject|none] [--note <text>] [--screens <path prefix>]
//        [--viewport 1280x800] [--locale en-US] [--timeout 60]
//
// --locale is the browser's language (the console picks its own from it); --decision none only
// opens the session (by its address) and reads the page, for a session already decided.
//
// Prints one JSON line: {wrongPasswordRejected, wrongPasswordMessage, loggedIn, username,
// detail: {status, reasons, frames, framesLoaded, hasFaceMatch, faceMatch, scores, tracks,
// timeline}, lastDecision, decisionMessage, queueAfter, audit: [{operator, action, note}],
// texts: {lang, loginTitle, loginSubmit, queueTitle, queueEmpty, refresh, metaSession, status,
// decisionTitle, approve, decisionMessage}, consoleErrors, error?}; exits 0 when the decision went
// through (window.review.lastDecision names the session and the decision), or with --decision
// none when the session was shown. Screenshots <prefix>-detail.png and <prefix>-decided.png
// (and <prefix>-error.png on failure). Chromium: /usr/bin/chromium or $CHROMIUM.
//
// The 401s the page expects (GET /v1/review/me before sign-in, the wrong password) are not
// console errors here; every other console error and page error is.

import { parseArgs } from 'node:util';
import { CHROMIUM_ARGS, drive } from './chromium.mjs';

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string' },
    username: { type: 'string' },
    password: { type: 'string' },
    session: { type: 'string' },
    // With --decision none: open the session by typing this support reference into the lookup
    // (as customer service would) instead of by its address; result.found says what opened.
    find: { type: 'string' },
    decision: { type: 'string', default: 'approve' },
    note: { type: 'string', default: 'Checked the frames and the ID photo comparison (browser test).' },
    screens: { type: 'string' },
    viewport: { type: 'string', default: '1280x800' },
    locale: { type: 'string', default: 'en-US' },
    timeout: { type: 'string', default: '60' },
  },
  strict: true,
});
for (const k of ['url', 'username', 'password', 'session']) if (!opts[k]) throw new Error(`--${k} is required`);
if (!['approve', 'reject', 'none'].includes(opts.decision)) throw new Error('--decision is approve, reject or none');
if (!opts.note.trim()) throw new Error('--note must not be empty');
const [width, height] = opts.viewport.split('x').map(Number);
const timeoutMs = Number(opts.timeout) * 1000;
const sessionId = opts.session;
const pageUrl = new URL('review.html', opts.url.endsWith('/') ? opts.url : `${opts.url}/`).href;

const consoleErrors = [];
const result = {
  wrongPasswordRejected: false, wrongPasswordMessage: null, loggedIn: false, username: null,
  detail: null, lastDecision: null, decisionMessage: null, queueAfter: null, audit: null, texts: {}, consoleErrors,
};

const started = Date.now();
const left = () => Math.max(1000, timeoutMs - (Date.now() - started));

// 401s the page provokes on purpose: "am I signed in?" and the wrong password.
function expected401(msg) {
  const where = msg.location()?.url ?? '';
  return /status of 401/.test(msg.text()) && /\/v1\/review\/(me|login)(\?|$)/.test(where);
}

async function review(page) {
  return page.evaluate(() => (window.review ? JSON.parse(JSON.stringify(window.review)) : null)).catch(() => null);
}

async function until(page, predicate, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await review(page);
    if (v && predicate(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (review ${JSON.stringify(v)})`);
    await page.waitForTimeout(150);
  }
}

async function shot(page, name) {
  if (!opts.screens) return;
  // From the top, with the evidence frames decoded (not blank boxes).
  await page.evaluate(async () => {
    window.scrollTo(0, 0);
    await Promise.all([...document.querySelectorAll('#frames img')].map((i) => i.decode().catch(() => {})));
  }).catch(() => {});
  await page.screenshot({ path: `${opts.screens}-${name}.png`, fullPage: true });
}

const attr = (v) => `"${String(v).replace(/["\\]/g, '\\$&')}"`;

const launch = {
  result, timeoutMs, args: CHROMIUM_ARGS, viewport: { width, height }, locale: opts.locale, screens: opts.screens,
};
await drive(launch, async (page) => {
  page.on('console', (msg) => { if (msg.type() === 'error' && !expected401(msg)) consoleErrors.push(msg.text()); });
  page.on('pageerror', (err) => consoleErrors.push(`pageerror: ${err.message}`));
  await page.goto(pageUrl, { waitUntil: 'load' });

  let v = await until(page, (s) => s.ready, 15_000, 'the sign-in check');
  if (v.loggedIn) {
    await page.click('#logout');
    v = await until(page, (s) => !s.loggedIn, 10_000, 'sign-out');
  }
  await page.waitForSelector('#login-form', { state: 'visible', timeout: 5000 });
  result.texts.loginTitle = (await page.textContent('#login-title'))?.trim() ?? null;
  result.texts.loginSubmit = (await page.textContent('#login-submit'))?.trim() ?? null;

  // A wrong password: an error on screen, still signed out.
  await page.fill('#username', opts.username);
  await page.fill('#password', `${opts.password}-not-the-password`);
  await page.click('#login-submit');
  try {
    await page.waitForSelector('#login-error:not([hidden])', { state: 'visible', timeout: 10_000 });
    result.wrongPasswordMessage = (await page.textContent('#login-error'))?.trim() ?? null;
    v = await review(page);
    result.wrongPasswordRejected = Boolean(result.wrongPasswordMessage) && !v?.loggedIn;
  } catch {
    v = await review(page);
    result.wrongPasswordRejected = false;
    if (v?.loggedIn) throw new Error('a wrong password signed in');
  }

  // The right one.
  await page.fill('#username', opts.username);
  await page.fill('#password', opts.password);
  await page.click('#login-submit');
  await page.waitForFunction(() => window.review.loggedIn || !document.getElementById('login-error').hidden,
    null, { timeout: 15_000, polling: 150 });
  v = await review(page);
  if (!v.loggedIn) {
    const msg = await page.textContent('#login-error').catch(() => null);
    throw new Error(`sign-in failed: ${msg?.trim() || v.error}`);
  }
  result.loggedIn = true;
  result.username = v.username;

  // What the page shows in the browser's language.
  const readTexts = () => page.evaluate(() => {
    const text = (sel) => document.querySelector(sel)?.textContent?.trim() ?? null;
    return {
      lang: document.documentElement.lang,
      queueTitle: text('#queue-title [data-i18n]'),
      queueEmpty: document.getElementById('queue-empty').hidden ? null : text('#queue-empty'),
      refresh: text('#refresh'),
      metaSession: text('#d-meta dt'),
      status: text('#d-status'),
      decisionTitle: text('#decision-title'),
      approve: text('#approve'),
      decisionMessage: text('#decision-msg'),
    };
  });
  if (opts.decision === 'none') {
    if (opts.find) {
      await page.fill('#lookup-ref', opts.find);
      await page.click('#lookup-find');
    } else {
      await page.evaluate((id) => { location.hash = `session=${encodeURIComponent(id)}`; }, sessionId);
    }
    await page.waitForSelector(`#detail[data-id=${attr(sessionId)}][data-loaded="true"]`, { timeout: Math.min(left(), 20_000) });
    Object.assign(result.texts, await readTexts());
    result.found = await page.evaluate(() => ({
      id: document.getElementById('detail').dataset.id,
      lookup: window.review.lookup,
      reasons: [...document.querySelectorAll('#reasons li[data-code]')].map((li) => li.dataset.code),
      hints: [...document.querySelectorAll('#reasons .r-hint')].map((s) => s.textContent),
    }));
    await shot(page, 'shown');
    return 0;
  }

  // The session in the queue (refreshing now and then rather than waiting for the page's poll).
  const deadline = Date.now() + left();
  for (let n = 0; ; n += 1) {
    v = await review(page);
    if (v?.queue?.includes(sessionId)) break;
    if (Date.now() > deadline) throw new Error(`session ${sessionId} not in the queue (${JSON.stringify(v?.queue)})`);
    if (n && n % 10 === 0) await page.click('#refresh');
    await page.waitForTimeout(200);
  }
  const item = `#queue li[data-id=${attr(sessionId)}]`;
  await page.waitForSelector(item, { state: 'visible', timeout: 5000 });
  await page.click(`${item} button`);
  await page.waitForSelector(`#detail[data-id=${attr(sessionId)}][data-loaded="true"]`, { timeout: Math.min(left(), 20_000) });
  // Let the evidence frames load (or fail) before counting them.
  await page.waitForFunction(() => [...document.querySelectorAll('#frames img')].every((i) => i.complete), null,
    { timeout: 15_000 }).catch(() => {});
  await shot(page, 'detail');
  result.detail = await page.evaluate(() => {
    const imgs = [...document.querySelectorAll('#frames img')];
    const fm = document.getElementById('face-match');
    return {
      status: document.getElementById('detail').dataset.status,
      reasons: [...document.querySelectorAll('#reasons li[data-code]')].map((li) => li.dataset.code),
      frames: imgs.length,
      framesLoaded: imgs.filter((i) => i.complete && i.naturalWidth > 0).length,
      hasFaceMatch: fm?.dataset.present === 'true',
      faceMatch: fm?.dataset.present === 'true'
        ? { text: fm.querySelector('.fm-value')?.textContent ?? '', result: fm.dataset.result,
          similarity: Number(fm.dataset.similarity), threshold: fm.dataset.threshold === '' ? null : Number(fm.dataset.threshold) }
        : null,
      scores: Object.fromEntries([...document.querySelectorAll('#scores tbody tr[data-key]')]
        .map((tr) => [tr.dataset.key, tr.querySelector('td')?.textContent ?? ''])),
      tracks: [...document.querySelectorAll('#network table.track')].map((t) => t.dataset.kind),
      timeline: document.querySelectorAll('#timeline li').length,
    };
  });

  // The decision.
  await page.fill('#note', opts.note);
  await page.click(opts.decision === 'approve' ? '#approve' : '#reject');
  const kind = await page.waitForFunction(
    (id) => {
      const r = window.review;
      if (r.lastDecision && r.lastDecision.id === id) return 'done';
      const msg = document.getElementById('decision-msg');
      return msg.dataset.kind === 'error' ? 'error' : false;
    },
    sessionId, { timeout: Math.min(left(), 20_000), polling: 150 },
  ).then((h) => h.jsonValue());
  result.decisionMessage = (await page.textContent('#decision-msg'))?.trim() ?? null;
  v = await review(page);
  result.lastDecision = v.lastDecision;
  result.queueAfter = v.queue;
  result.audit = await page.evaluate(() => [...document.querySelectorAll('#audit li[data-action]')]
    .map((li) => ({ operator: li.dataset.operator, action: li.dataset.action, note: li.dataset.note })));
  await shot(page, 'decided');
  Object.assign(result.texts, await readTexts());
  if (kind !== 'done') throw new Error(`the decision failed: ${result.decisionMessage} (${v.error})`);
  const ok = v.lastDecision?.id === sessionId && v.lastDecision?.decision === opts.decision;
  return ok ? 0 : 1;
});
