// The verification page: pre-check -> call (guidance, challenges) -> result.
//
// URL: /?lang=zh-CN#session=<id>&token=<client token>[&retry=<url>]
// The token lives in the fragment only, so it never reaches server logs or Referer headers.
// `retry` (optional, added by the relying party) is where "Try again" goes once the session has
// ended; without it the page asks the host app (postMessage / native bridge) to start again.
//
// Tests and embedding apps read window.vericall (state, screen, challenge, hints, result, ...).

import { t, translate, setLanguage, pickLanguage, language } from './i18n.js';
import {
  DeviceFailure, browserProblem, openDevices, meterMicrophone, measureRoundTrip, reportFailure,
} from './precheck.js';
import { WhipCall } from './call.js';

const SLOW_RTT_MS = 600;
const MIC_QUIET_RMS = 0.003; // about -50 dBFS
const MAX_HINTS = 3;

const $ = (id) => document.getElementById(id);

const vc = {
  screen: 'precheck',
  state: 'precheck', // precheck | connecting | connected | reconnecting | finished | failed
  eventsReceived: 0,
  lastEvent: null,
  transport: null,
  challenge: null, // { id, action, index, steps, digits }
  hints: [], // active hint codes, most recent first
  hintsShown: [], // every code ever shown (tests)
  result: null, // { status, reasons: [codes] }
  deviceFailure: null,
  error: null,
  light: null, // { id, sequence, painted: [[r, g, b], ...] } during the screen-light step
  skipLight: false, // the person chose to skip the flashing-colour step
  supportRef: null, // the reference shown on the result screen, e.g. 'K7Q2-M9XD'
  practice: false, // a practice run (page_url has mode=practice): labelled, its own result screen
};
window.vericall = vc;

let catalog = new Map(); // code -> { retryable, hint: { en, zh-CN } }
let call = null;
let params = new URLSearchParams(location.hash.slice(1));

function hintFor(code) {
  const entry = catalog.get(code);
  return entry ? (entry.hint[language()] ?? entry.hint.en) : t('error.generic');
}

function show(screen) {
  vc.screen = screen;
  document.body.dataset.screen = screen;
  for (const el of document.querySelectorAll('.screen')) el.hidden = el.id !== `screen-${screen}`;
}

function setCheck(name, status, label) {
  const li = document.querySelector(`[data-check="${name}"]`);
  li.dataset.status = status;
  if (label) li.querySelector('[data-i18n]').textContent = label;
}

function note(el, text) {
  el.textContent = text;
}

async function loadCatalog() {
  try {
    const res = await fetch('/v1/reasons');
    const body = await res.json();
    catalog = new Map(body.reasons.map((r) => [r.code, r]));
  } catch (err) {
    console.warn('vericall: reason catalog unavailable', err);
  }
}

/// What this deployment asks of the person (`GET /v1/requirements`), in the page's language, as
/// a collapsed list on the pre-check screen; left hidden when unavailable.
async function loadRequirements() {
  try {
    const res = await fetch('/v1/requirements');
    const body = await res.json();
    const areas = ['browser', 'camera', 'microphone', 'network', 'lighting', 'call', 'document'];
    const items = areas
      .map((area) => body[area]?.text?.[language()] ?? body[area]?.text?.en)
      .filter(Boolean)
      .map((text) => {
        const li = document.createElement('li');
        li.textContent = text;
        return li;
      });
    $('requirements-list').replaceChildren(...items);
    $('requirements').hidden = items.length === 0;
  } catch (err) {
    console.warn('vericall: requirements unavailable', err);
  }
}

// ---- Pre-check -------------------------------------------------------------------------------

async function precheck() {
  show('precheck');
  // The server decides what counts; the page only labels a practice run as one.
  vc.practice = params.get('mode') === 'practice';
  document.body.dataset.practice = String(vc.practice);
  $('practice-badge').hidden = !vc.practice;
  $('practice-note').hidden = !vc.practice;
  const session = params.get('session');
  const token = params.get('token');
  if (!session || !token) {
    note($('precheck-note'), t('precheck.no_session'));
    throw new Error('missing #session=<id>&token=<token> in the URL');
  }
  const missing = browserProblem();
  if (missing) throw new DeviceFailure('BROWSER_UNSUPPORTED', 'browser', missing);
  setCheck('browser', 'ok');

  setCheck('camera', 'running');
  const stream = await openDevices();
  setCheck('camera', 'ok');
  $('precheck-video').srcObject = stream;

  const hasMic = stream.getAudioTracks().length > 0;
  setCheck('microphone', hasMic ? 'running' : 'warn');
  const meterBar = $('mic-level');
  const meterEl = meterBar.parentElement;
  const meter = meterMicrophone(stream, (rms) => {
    // -60..0 dBFS onto 0..100 %
    const db = rms > 0 ? 20 * Math.log10(rms) : -100;
    const pct = Math.max(0, Math.min(100, Math.round(((db + 60) / 60) * 100)));
    meterBar.style.width = `${pct}%`;
    meterEl.setAttribute('aria-valuenow', String(pct));
  });

  // Audio contexts start suspended without a user gesture on some phones: any tap resumes it.
  document.addEventListener('pointerdown', () => meter.resume?.(), { once: true });
  setCheck('network', 'running');
  if (navigator.onLine === false) {
    setCheck('network', 'fail');
    note($('precheck-note'), t('precheck.offline'));
  }
  const rtt = await measureRoundTrip();
  if (rtt === null) {
    setCheck('network', 'fail');
    meter.stop();
    throw new Error(t('error.connect'));
  }
  setCheck('network', rtt > SLOW_RTT_MS ? 'warn' : 'ok', t('check.network_ms', { ms: rtt }));

  // Give the meter a moment to hear something before judging the microphone.
  await new Promise((r) => setTimeout(r, 1200));
  const notes = [];
  if (hasMic) {
    const quiet = meter.peak() !== null && meter.peak() < MIC_QUIET_RMS;
    setCheck('microphone', quiet ? 'warn' : 'ok');
    if (quiet) notes.push(t('precheck.mic_quiet'));
  }
  if (rtt > SLOW_RTT_MS) notes.push(t('precheck.slow_network', { ms: rtt }));
  notes.push(t('precheck.ready'));
  note($('precheck-note'), notes.join(' '));
  vc.state = 'ready';
  const start = $('start');
  start.disabled = false;
  start.focus();
  await new Promise((resolve) => start.addEventListener('click', resolve, { once: true }));
  vc.skipLight = $('no-flash').checked;
  meter.stop();
  return { session, token, stream };
}

// ---- Call ------------------------------------------------------------------------------------

function renderProgress(steps, current, states) {
  const ol = $('progress');
  if (ol.children.length !== steps) {
    ol.replaceChildren();
    for (let i = 0; i < steps; i += 1) {
      const li = document.createElement('li');
      li.dataset.state = 'pending';
      ol.append(li);
    }
  }
  [...ol.children].forEach((li, i) => {
    const state = states[i] ?? (i === current ? 'current' : 'pending');
    li.dataset.state = state;
    const key = { done: 'call.step_done', failed: 'call.step_failed', current: 'call.step', pending: 'call.step_pending' }[state];
    li.setAttribute('aria-label', t(key, { n: i + 1, total: steps }));
    li.textContent = String(i + 1);
    if (state === 'current') li.setAttribute('aria-current', 'step');
    else li.removeAttribute('aria-current');
  });
}

function renderHints() {
  const ul = $('hints');
  ul.replaceChildren();
  for (const code of vc.hints.slice(0, MAX_HINTS)) {
    const li = document.createElement('li');
    li.dataset.code = code;
    li.textContent = hintFor(code);
    ul.append(li);
  }
  document.body.dataset.hint = vc.hints[0] ?? '';
}

function setHint(code, active) {
  vc.hints = vc.hints.filter((c) => c !== code);
  if (active) {
    vc.hints.unshift(code);
    if (!vc.hintsShown.includes(code)) vc.hintsShown.push(code);
  }
  renderHints();
}

function setInstruction(text, action = '', stepId = '') {
  const el = $('instruction');
  el.textContent = text;
  el.dataset.action = action;
  el.dataset.stepId = String(stepId);
  $('arrow').dataset.action = action;
  // The ID step shows a card-shaped frame instead of the face oval.
  $('cardframe').dataset.action = action;
  $('oval').hidden = action === 'show_document';
}

const stepStates = [];

// ---- Screen light ----------------------------------------------------------------------------
// The server's colour sequence, painted over the whole page behind the preview as soon as the
// step's event arrives: a live face reflects it, a recording cannot. The fades and the pace (no
// more than ~2.6 changes a second, moderate colours) keep it photosensitivity-safe (WCAG 2.3.1);
// the pre-check offers to skip it.
let lightTimers = [];

function paintLight(rgb) {
  const root = document.documentElement;
  root.style.backgroundColor = rgb ? `rgb(${rgb[0]}, ${rgb[1]}, ${rgb[2]})` : '';
  if (rgb && vc.light) vc.light.painted.push(rgb);
}

function startLight(id, sequence) {
  stopLight();
  vc.light = { id, sequence, painted: [] };
  document.documentElement.style.transition = `background-color ${sequence.transition_ms}ms linear`;
  document.body.dataset.light = 'on';
  paintLight(sequence.neutral);
  let at = sequence.neutral_ms;
  for (const colour of sequence.colours) {
    lightTimers.push(setTimeout(() => paintLight(colour.rgb), at));
    at += colour.ms;
  }
  lightTimers.push(setTimeout(() => paintLight(sequence.neutral), at));
}

function stopLight() {
  lightTimers.forEach(clearTimeout);
  lightTimers = [];
  if (document.body.dataset.light) {
    delete document.body.dataset.light;
    paintLight(null);
  }
}

function onEvent(event, transport) {
  vc.eventsReceived += 1;
  vc.lastEvent = event;
  vc.transport = transport;
  switch (event.type) {
    case 'guidance':
      setHint(event.code, event.active);
      break;
    case 'network_warning':
      if (event.active && event.code) {
        vc.networkWarning = event.code;
        setHint(event.code, true);
      } else if (vc.networkWarning) {
        setHint(vc.networkWarning, false);
        vc.networkWarning = null;
      }
      break;
    case 'network': {
      const net = $('net');
      const quality = ['excellent', 'good', 'fair', 'poor'].includes(event.quality) ? event.quality : null;
      net.hidden = !quality;
      if (quality) {
        net.dataset.quality = quality;
        net.textContent = t(`net.${quality}`);
      }
      break;
    }
    case 'challenge':
      if (event.action === 'screen_light' && event.light) startLight(event.id, event.light);
      else stopLight();
      // The spoken step's digits arrive with it (and only then).
      vc.challenge = { id: event.id, action: event.action, index: event.index ?? 0, steps: event.steps ?? 1, digits: event.digits ?? '' };
      renderProgress(vc.challenge.steps, vc.challenge.index, stepStates);
      setInstruction(t(`action.${event.action}`, { digits: vc.challenge.digits }), event.action, event.id);
      break;
    case 'challenge_paused':
      stopLight();
      setInstruction(`${t('call.paused')} ${hintFor(event.because)}`, '', vc.challenge?.id ?? '');
      break;
    case 'challenge_resumed':
      if (vc.challenge) setInstruction(t(`action.${vc.challenge.action}`, { digits: vc.challenge.digits }), vc.challenge.action, vc.challenge.id);
      break;
    case 'challenge_passed':
    case 'challenge_failed':
      if (vc.light && vc.light.id === event.id) stopLight();
      if (vc.challenge && vc.challenge.id === event.id) {
        stepStates[vc.challenge.index] = event.type === 'challenge_passed' ? 'done' : 'failed';
        renderProgress(vc.challenge.steps, -1, stepStates);
        setInstruction(event.type === 'challenge_passed' ? t('call.well_done') : hintFor(event.reason));
        if (vc.challenge.index + 1 >= vc.challenge.steps) setInstruction(t('call.finishing'));
      }
      break;
    case 'verdict':
      finish(event);
      break;
    case 'call_ended':
    case 'session_ended':
      // A verdict normally comes first; without one the call was cut short.
      setTimeout(() => {
        if (!vc.result) finish({ status: 'failed', reasons: [{ code: 'SESSION_INCOMPLETE', retryable: true }] });
      }, 1500);
      break;
    default:
      break;
  }
}

function onCallState(state) {
  if (vc.result) return;
  vc.state = state;
  const el = $('call-status');
  el.dataset.state = state;
  const text = { connecting: 'call.connecting', connected: 'call.connected', reconnecting: 'call.reconnecting' }[state];
  el.textContent = text ? t(text) : '';
  if (state === 'connected' && !vc.challenge) setInstruction(t('call.get_ready'));
  if (state === 'failed') {
    finish({ status: 'failed', reasons: [{ code: 'NETWORK_UNSTABLE', retryable: true }] });
  }
}

async function runCall({ session, token, stream }) {
  show('call');
  $('call-video').srcObject = stream;
  setInstruction(t('call.connecting'));
  call = new WhipCall({ session, token, stream, onEvent, onState: onCallState, skipLight: vc.skipLight });
  await call.start();
}

// ---- Result ----------------------------------------------------------------------------------

function tellHost(message) {
  const payload = { type: 'vericall', ...message };
  try {
    if (window.parent !== window) window.parent.postMessage(payload, '*');
    window.webkit?.messageHandlers?.vericall?.postMessage(payload);
    window.VericallBridge?.onResult?.(JSON.stringify(payload));
  } catch (err) {
    console.warn('vericall: host notification failed', err);
  }
}

function finish(verdict) {
  if (vc.result) return;
  const status = verdict.status;
  const reasons = (verdict.reasons ?? []).map((r) => (typeof r === 'string' ? { code: r } : r));
  vc.result = { status, reasons: reasons.map((r) => r.code) };
  vc.state = 'finished';
  if (call) call.stop();
  for (const v of document.querySelectorAll('video')) {
    const s = v.srcObject;
    if (s) s.getTracks().forEach((tr) => tr.stop());
  }
  show('result');
  const kind = ['passed', 'failed', 'needs_review', 'cancelled', 'expired'].includes(status) ? status : 'failed';
  document.body.dataset.result = kind;
  $('result-icon').dataset.status = kind;
  $('result-title').textContent = t(`result.${kind}.title`);
  $('result-text').textContent = kind === 'failed' && !reasons.length ? t('error.generic') : t(`result.${kind}.text`);
  if (vc.practice) practiceResult(kind);
  renderReasons(reasons.filter((r) => r.code !== 'SESSION_INCOMPLETE' || reasons.length === 1));
  const retryable = kind !== 'passed' && kind !== 'needs_review'
    && reasons.some((r) => r.retryable ?? catalog.get(r.code)?.retryable);
  offerRetry(retryable, false);
  showReference(verdict.support_ref);
  $('result-title').focus();
  tellHost({ event: 'result', status, reasons: vc.result.reasons });
}

// The session's support reference, as the server derives it (reasons::support_reference):
// Crockford base 32 of the first 40 bits of SHA-256 of the session id, `XXXX-XXXX`. Computed here
// too so that every result screen shows it, also those reached without a verdict.
async function supportReference(sessionId) {
  const alphabet = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(sessionId)));
  let bits = 0n;
  for (let i = 0; i < 5; i++) bits = (bits << 8n) | BigInt(digest[i]);
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (i === 4) out += '-';
    out += alphabet[Number((bits >> BigInt(35 - 5 * i)) & 31n)];
  }
  return out;
}

async function showReference(fromServer) {
  const session = params.get('session');
  let ref = fromServer ?? null;
  if (!ref && session && crypto.subtle) {
    try {
      ref = await supportReference(session);
    } catch (err) {
      console.warn('vericall: no support reference', err);
    }
  }
  vc.supportRef = ref;
  $('result-ref').hidden = !ref;
  $('result-ref-code').textContent = ref ?? '';
}

/// A practice run's own result: what went well (the steps done) and what to fix (the reasons'
/// hints, listed below as for a real verification); nothing of it counts.
function practiceResult(kind) {
  document.body.dataset.result = `practice-${kind}`;
  $('result-title').textContent = t('result.practice.title');
  const outcome = kind === 'passed' ? 'passed' : kind === 'needs_review' ? 'review' : 'failed';
  const done = stepStates.filter((s) => s === 'done').length;
  const total = vc.challenge?.steps ?? stepStates.length;
  const steps = total ? ` ${t('result.practice.steps', { passed: done, total })}` : '';
  $('result-text').textContent = `${t(`result.practice.${outcome}`)}${steps}`;
}

function renderReasons(reasons) {
  const ul = $('result-reasons');
  ul.replaceChildren();
  for (const r of reasons) {
    const li = document.createElement('li');
    li.dataset.code = r.code;
    li.textContent = hintFor(r.code);
    ul.append(li);
  }
}

/// A device problem: the session is still open, so "Try again" re-runs the pre-check here.
function deviceProblem(failure) {
  vc.deviceFailure = failure.code;
  vc.state = 'failed';
  show('result');
  document.body.dataset.result = 'device';
  $('result-icon').dataset.status = 'device';
  $('result-title').textContent = t('result.device.title');
  $('result-text').textContent = t('result.device.text');
  renderReasons([{ code: failure.code }]);
  offerRetry(true, true);
  showReference(null);
  $('result-title').focus();
  tellHost({ event: 'device_failure', code: failure.code });
}

function offerRetry(retryable, sameSession) {
  const button = $('retry');
  button.hidden = !retryable;
  if (!retryable) return;
  const retryUrl = params.get('retry');
  button.onclick = () => {
    if (sameSession) location.reload();
    else if (retryUrl && /^https?:/i.test(retryUrl)) location.assign(retryUrl);
    else {
      tellHost({ event: 'retry' });
      $('result-text').textContent = t('result.retry_new');
    }
  };
}

function fatal(err) {
  vc.error = String(err && err.message ? err.message : err);
  console.error('vericall:', vc.error);
  if (vc.result) return;
  if (err && err.status === 409) {
    finish({ status: 'expired', reasons: [] });
    return;
  }
  vc.state = 'failed';
  show('result');
  document.body.dataset.result = 'error';
  $('result-icon').dataset.status = 'failed';
  $('result-title').textContent = t('result.failed.title');
  $('result-text').textContent = err && err.status ? t('error.connect') : vc.error;
  $('result-reasons').replaceChildren();
  offerRetry(true, true);
  showReference(null);
}

// ---- Start -----------------------------------------------------------------------------------

function wireLanguageLinks() {
  for (const a of document.querySelectorAll('[data-lang]')) {
    a.setAttribute('aria-current', a.dataset.lang === language() ? 'true' : 'false');
    a.addEventListener('click', (e) => {
      // Keep the fragment (session and token) when switching language.
      e.preventDefault();
      const url = new URL(location.href);
      url.searchParams.set('lang', a.dataset.lang);
      location.replace(url.href);
    });
  }
}

async function main() {
  setLanguage(pickLanguage());
  translate();
  wireLanguageLinks();
  show('precheck');
  await loadCatalog();
  loadRequirements();
  let devices;
  try {
    devices = await precheck();
  } catch (err) {
    if (err instanceof DeviceFailure) {
      await reportFailure(params.get('session'), params.get('token'), err);
      deviceProblem(err);
      return;
    }
    throw err;
  }
  await runCall(devices);
}

main().catch(fatal);
