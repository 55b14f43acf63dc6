#!/usr/bin/env node
// Drives the verification page in headless Chromium the way a person would: waits for the
// pre-check, presses Start, follows the call and reads the result screen.
//
//   node tests/browser/flow.mjs --url <page url> (--video <clip.y4m> | --camera-dir <dir>)
//        [--audio <clip.wav>] [--deny] [--viewport 360x640] [--lang zh-CN (as ?lang=)]
//        [--locale zh-CN (the browser's language)]
//        [--until result|hint:CODE] [--timeout 90] [--screens <path prefix>]
//
// --video feeds Chromium's fake camera from a clip (it loops). --camera-dir is a rendered person
// who reacts to the page: frames <dir>/<clip>/<nnnn>.jpg with <dir>/manifest.json
// {"fps": 15, "clips": {"idle": n, "turn_left": n, ...}}; the person watches the instruction on
// screen (#instruction data-action/data-step-id) and plays that action's clip, as a person would.
// --speaker <dBFS> (with --camera-dir) makes the microphone a WebAudio stream: room noise at that
// level (RMS), and the person's voice reading the digits aloud (a 125 Hz voiced tone shaped by
// vowel formants, one syllable per digit, -20 dBFS) when the spoken step's clip plays, in step
// with the lips.
// --deny launches without granting camera/microphone permission.
//
// Prints one JSON line: {screens, state, result, deviceFailure, hintsShown, challenges,
// untranslated, consoleErrors, error?}; exits 0 when the --until condition was met.
// Screenshots <prefix>-<screen>.png for each screen reached. Chromium: /usr/bin/chromium or $CHROMIUM.

import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { CHROMIUM_ARGS, drive } from './chromium.mjs';

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string' },
    video: { type: 'string' },
    'camera-dir': { type: 'string' },
    audio: { type: 'string' },
    speaker: { type: 'string' },
    deny: { type: 'boolean', default: false },
    viewport: { type: 'string', default: '1280x800' },
    lang: { type: 'string' },
    locale: { type: 'string' },
    until: { type: 'string', default: 'result' },
    timeout: { type: 'string', default: '90' },
    screens: { type: 'string' },
    // Hide the page's own ICE candidates from the server (as a NAT would): the server can then
    // only answer the page's checks, so media takes the path the page chose.
    'hide-client-candidates': { type: 'boolean', default: false },
  },
  strict: true,
});
if (!opts.url) throw new Error('--url is required');
const [width, height] = opts.viewport.split('x').map(Number);
const timeoutMs = Number(opts.timeout) * 1000;
const cameraDir = opts['camera-dir'] ? resolve(opts['camera-dir']) : null;
const video = opts.video ? resolve(opts.video) : null;
const audio = opts.audio ? resolve(opts.audio) : null;
for (const f of [video, audio, cameraDir]) if (f && !existsSync(f)) throw new Error(`not found: ${f}`);

const args = [
  ...CHROMIUM_ARGS, '--disable-quic',
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
];
// Fake devices either way, so a denial is about permission, not missing hardware.
args.push('--use-fake-device-for-media-stream');
if (opts.deny) {
  args.push('--deny-permission-prompts');
} else {
  args.push('--use-fake-ui-for-media-stream');
  if (video) args.push(`--use-file-for-fake-video-capture=${video}`);
  if (audio) args.push(`--use-file-for-fake-audio-capture=${audio}`);
}

// A person in front of a canvas "camera": plays the clip for the action the page asks for.
function reactiveCamera(manifest) {
  const canvas = document.createElement('canvas');
  canvas.width = manifest.width;
  canvas.height = manifest.height;
  const ctx = canvas.getContext('2d');
  let clip = 'idle';
  let frame = 0;
  let lastStep = '';
  let lastAction = '';
  let idleSince = 0;
  let clipStart = 0;
  const tick = 1000 / manifest.fps;
  function next() {
    const el = document.getElementById('instruction');
    const step = el ? el.dataset.stepId : '';
    const action = el ? el.dataset.action : '';
    const asked = action && manifest.clips[action];
    // A new step, or the instruction shown again after a pause: react. The same step still
    // asked long after the clip ended: try again.
    const reshown = action && !lastAction;
    lastAction = action;
    if (asked && (step !== lastStep || reshown || (clip === 'idle' && frame - idleSince > 1.5 * manifest.fps))) {
      lastStep = step;
      clip = action;
      frame = 0;
      clipStart = performance.now();
      if (action === 'speak_digits') window.__testSpeak?.();
    }
    // Speaking: the lips keep time with the voice by the clock, not by frames drawn.
    if (clip === 'speak_digits') frame = Math.floor((performance.now() - clipStart) / tick);
    if (clip !== 'idle' && frame >= manifest.clips[clip]) {
      clip = 'idle';
      frame = 0;
      idleSince = 0;
    }
    const n = manifest.clips[clip];
    const url = `/__testcam/${clip}/${String(frame % n).padStart(4, '0')}.jpg`;
    frame += 1;
    return url;
  }
  let busy = false;
  const draw = async () => {
    if (busy) return;
    busy = true;
    try {
      const res = await fetch(next());
      const bmp = await createImageBitmap(await res.blob());
      ctx.drawImage(bmp, 0, 0, canvas.width, canvas.height);
      bmp.close();
      reflectPageLight();
    } catch (err) {
      console.warn('testcam', err);
    } finally {
      busy = false;
    }
  };
  // The face reflects the page's light as it is painted now (its computed colour, mid-fade
  // included): added over the face ellipse, fading out at its rim. The wall behind is far.
  function reflectPageLight() {
    if (document.body.dataset.light !== 'on' || !manifest.face) return;
    const rgb = getComputedStyle(document.documentElement).backgroundColor.match(/\d+/g);
    if (!rgb) return;
    const [cx, cy, rx, ry] = manifest.face;
    ctx.save();
    ctx.globalCompositeOperation = 'lighter';
    ctx.translate(cx, cy);
    ctx.scale(rx, ry);
    const glow = ctx.createRadialGradient(0, 0, 0, 0, 0, 1);
    glow.addColorStop(0, `rgba(${rgb[0]}, ${rgb[1]}, ${rgb[2]}, 0.09)`);
    glow.addColorStop(0.8, `rgba(${rgb[0]}, ${rgb[1]}, ${rgb[2]}, 0.07)`);
    glow.addColorStop(1, 'rgba(0, 0, 0, 0)');
    ctx.fillStyle = glow;
    ctx.beginPath();
    ctx.arc(0, 0, 1, 0, 2 * Math.PI);
    ctx.fill();
    ctx.restore();
  }
  setInterval(draw, tick);
  // A microphone in a quiet room whose person reads the digits aloud when asked (see --speaker).
  function speakingMicrophone(roomDbfs) {
    const ac = new AudioContext({ sampleRate: 48000 });
    const dest = ac.createMediaStreamDestination();
    const noise = ac.createBuffer(1, 2 * ac.sampleRate, ac.sampleRate);
    const data = noise.getChannelData(0);
    let seed = 12345;
    for (let i = 0; i < data.length; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      data[i] = (seed / 2 ** 32) * 2 - 1;
    }
    const room = ac.createBufferSource();
    room.buffer = noise;
    room.loop = true;
    const roomGain = ac.createGain();
    roomGain.gain.value = 10 ** (roomDbfs / 20) * Math.sqrt(3); // uniform noise: RMS = peak / sqrt(3)
    room.connect(roomGain).connect(dest);
    room.start();
    // 125 Hz harmonics falling 6 dB an octave, weighted by the formants of an open vowel.
    const formants = [[730, 90], [1090, 110], [2440, 170]];
    const real = new Float32Array(31);
    const imag = new Float32Array(31);
    for (let k = 1; k < 31; k++) {
      let w = 0.1;
      for (const [c, bw] of formants) w += Math.exp(-(((125 * k - c) / bw) ** 2));
      imag[k] = w / k;
    }
    const osc = ac.createOscillator();
    osc.setPeriodicWave(ac.createPeriodicWave(real, imag));
    osc.frequency.value = 125;
    const voice = ac.createGain();
    voice.gain.value = 0;
    osc.connect(voice).connect(dest);
    osc.start();
    // One syllable: a sin² rise and fall over 0.32 s; four of them every 0.5 s from 0.6 s after
    // the prompt (the timing of the Rust actors, testkit::voice::speaking).
    const curve = Float32Array.from({ length: 64 }, (_, i) => 0.25 * Math.sin((Math.PI * i) / 63) ** 2);
    window.__testSpeak = () => {
      ac.resume();
      const t0 = ac.currentTime + 0.6;
      voice.gain.cancelScheduledValues(ac.currentTime);
      voice.gain.setValueAtTime(0, ac.currentTime);
      for (let k = 0; k < 4; k++) voice.gain.setValueCurveAtTime(curve, t0 + k * 0.5, 0.32);
    };
    return dest.stream;
  }
  const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const out = new MediaStream();
    if (constraints.audio && manifest.speaker !== undefined) {
      speakingMicrophone(manifest.speaker).getAudioTracks().forEach((t) => out.addTrack(t));
    } else if (constraints.audio) {
      const mic = await original({ audio: constraints.audio });
      mic.getAudioTracks().forEach((t) => out.addTrack(t));
    }
    if (constraints.video) canvas.captureStream(manifest.fps).getVideoTracks().forEach((t) => out.addTrack(t));
    return out;
  };
}

// Visible text in the page's language that is not translated: Latin words outside names.
function untranslatedText() {
  const allowed = new Set(['vericall', 'Wi-Fi', 'Wi', 'Fi', 'ID', 'Chrome', 'Safari', 'Edge', 'Firefox', 'WebRTC', 'dBFS']);
  const lang = document.documentElement.lang;
  if (!lang.startsWith('zh')) return [];
  const found = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    // Codes (a support reference) are marked translate="no": not language.
    if (!el || el.closest('[lang]:not(html)') || el.closest('script,style,[translate="no"]')) continue;
    const style = getComputedStyle(el);
    if (el.closest('[hidden]') || style.display === 'none' || style.visibility === 'hidden') continue;
    for (const word of n.textContent.match(/[A-Za-z][A-Za-z_-]+/g) ?? []) {
      if (!allowed.has(word)) found.push(`${word} (in "${n.textContent.trim().slice(0, 60)}")`);
    }
  }
  const attrs = [...document.querySelectorAll('[aria-label],[title]')]
    .flatMap((e) => [e.getAttribute('aria-label'), e.getAttribute('title')])
    .filter(Boolean);
  for (const a of attrs) for (const word of a.match(/[A-Za-z][A-Za-z_-]+/g) ?? []) if (!allowed.has(word)) found.push(`${word} (attribute "${a}")`);
  return found;
}

const url = new URL(opts.url);
if (opts.lang) url.searchParams.set('lang', opts.lang);

const consoleErrors = [];
const result = {
  screens: [], state: null, result: null, deviceFailure: null, hintsShown: [], challenges: [],
  untranslated: [], missingKeys: null, consoleErrors, transport: null,
};

async function state(page) {
  const v = await page.evaluate(() => window.vericall ?? null).catch(() => null);
  if (v) {
    result.state = v.state;
    result.result = v.result;
    result.deviceFailure = v.deviceFailure;
    result.hintsShown = v.hintsShown;
    result.transport = v.transport;
    if (v.light) result.light = v.light;
    if (v.challenge && !result.challenges.includes(v.challenge.action)) result.challenges.push(v.challenge.action);
    if (v.challenge?.action === 'speak_digits' && !result.spoken) {
      result.spoken = await page.evaluate(() => document.getElementById('instruction')?.textContent ?? null).catch(() => null);
    }
  }
  return v;
}

async function capture(page, screen) {
  if (result.screens.includes(screen)) return;
  result.screens.push(screen);
  if (opts.screens) await page.screenshot({ path: `${opts.screens}-${screen}.png`, fullPage: true });
  for (const u of await page.evaluate(untranslatedText)) result.untranslated.push(`${screen}: ${u}`);
}

async function until(page, predicate, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await state(page);
    if (v && predicate(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (state ${v?.state}, screen ${v?.screen}, error ${v?.error})`);
    await page.waitForTimeout(200);
  }
}

const launch = {
  result, timeoutMs, args, viewport: { width, height }, locale: opts.locale ?? opts.lang ?? 'en-US',
  screens: opts.screens,
};
await drive(launch, async (page) => {
  page.on('console', (msg) => { if (msg.type() === 'error') consoleErrors.push(msg.text()); });
  page.on('pageerror', (err) => consoleErrors.push(`pageerror: ${err.message}`));
  if (cameraDir) {
    const manifest = JSON.parse(readFileSync(join(cameraDir, 'manifest.json'), 'utf8'));
    if (opts.speaker !== undefined) manifest.speaker = Number(opts.speaker);
    await page.route('**/__testcam/**', (route) => {
      const rel = new URL(route.request().url()).pathname.replace('/__testcam/', '');
      route.fulfill({ path: join(cameraDir, rel), contentType: 'image/jpeg' });
    });
    await page.addInitScript(reactiveCamera, manifest);
  }
  if (opts['hide-client-candidates']) {
    await page.route('**/whip/**', (route) => {
      const req = route.request();
      const body = req.postData();
      if (!body || !['POST', 'PATCH'].includes(req.method())) return route.continue();
      const stripped = body.split(/\r?\n/).filter((l) => !l.startsWith('a=candidate:')).join('\r\n');
      return route.continue({ postData: stripped });
    });
  }
  const started = Date.now();
  await page.goto(url.href, { waitUntil: 'load' });

  // Every string exists in every language (the visible-text check below covers what is shown).
  result.missingKeys = await page.evaluate(async () => {
    const { STRINGS } = await import('/js/i18n.js');
    const langs = Object.keys(STRINGS);
    const keys = new Set(langs.flatMap((l) => Object.keys(STRINGS[l])));
    return langs.flatMap((l) => [...keys].filter((k) => !(k in STRINGS[l]) || !STRINGS[l][k]).map((k) => `${l}: ${k}`));
  });
  let v = await until(page, (s) => s.state === 'ready' || s.screen === 'result', 30_000, 'the pre-check');
  await capture(page, 'precheck');
  // The requirements list (GET /v1/requirements) in the page's language.
  result.requirements = await page.evaluate(() =>
    [...document.querySelectorAll('#requirements-list li')].map((li) => li.textContent));
  if (v.screen !== 'result') {
    await page.click('#start');
    v = await until(page, (s) => s.state === 'connected' || s.screen === 'result', 30_000, 'the call to connect');
    if (v.screen === 'call') {
      await until(page, (s) => s.challenge || s.hints.length || s.screen === 'result', 20_000, 'guidance or a challenge')
        .catch(() => {});
      await page.waitForTimeout(500);
      await capture(page, 'call');
    }
  }
  const left = () => Math.max(1000, timeoutMs - (Date.now() - started));
  if (opts.until.startsWith('hint:')) {
    const code = opts.until.slice(5);
    await until(page, (s) => s.hintsShown.includes(code), left(), `hint ${code}`);
    // The hint on screen, not just in state.
    await page.waitForSelector(`#hints li[data-code="${code}"]`, { timeout: 5000 });
    await capture(page, `hint-${code}`);
  } else {
    await until(page, (s) => s.screen === 'result', left(), 'the result screen');
    await page.waitForTimeout(300);
    await capture(page, 'result');
  }
  await state(page);
  // The support reference is computed in the page when no verdict carried it.
  await page.waitForFunction(() => window.vericall?.screen !== 'result' || window.vericall?.supportRef, null, { timeout: 3000 }).catch(() => {});
  result.shown = await page.evaluate(() => ({
    title: document.getElementById('result-title').textContent,
    reasons: [...document.querySelectorAll('#result-reasons li')].map((li) => ({ code: li.dataset.code, text: li.textContent })),
    hints: [...document.querySelectorAll('#hints li')].map((li) => ({ code: li.dataset.code, text: li.textContent })),
    retry: !document.getElementById('retry').hidden,
    lang: document.documentElement.lang,
    supportRef: document.getElementById('result-ref').hidden ? null : document.getElementById('result-ref-code').textContent,
  }));
  return 0;
});
