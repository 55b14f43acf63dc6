// The review console: operators decide the sessions the verdict left to a person (needs_review).
//
// API (same origin, HttpOnly session cookie set by login; mutating requests carry
// `x-vericall-csrf: 1` and a JSON body):
//   GET  v1/review/me                      -> {username} | 401
//   POST v1/review/login {username, password} -> {username} | 401
//   POST v1/review/logout                  -> 204
//   GET  v1/review/queue                   -> {sessions: [...]}
//   GET  v1/review/sessions/{id}           -> session detail (verdict, network, timeline, audit)
//   GET  v1/review/sessions/{id}/frames/{name} -> image/jpeg
//   POST v1/review/sessions/{id}/decision {decision, note} -> {verdict} | 409 | 422
//
// Everything that comes from the API is untrusted: it reaches the page through textContent,
// dataset and attribute setters only, never as markup.
//
// URL: review.html#session=<id> opens that session (the hash follows the selection).
// Tests read window.review (see below).
//
// Strings: js/review-i18n.js (en, zh-CN; `?lang=`, else the browser's preference, switchable in
// the header).

import { actionText, initialLanguage, language, setLanguage, statusText, t, translate } from './review-i18n.js';

const API = 'v1/review';
const QUEUE_POLL_MS = 30_000;

const $ = (id) => document.getElementById(id);

const review = {
  ready: false, // the first "am I logged in?" check has finished
  loggedIn: false,
  username: null,
  queue: [], // session ids in the queue, oldest first
  selected: null, // id of the session shown on the right
  detailStatus: null, // verdict status of the shown session
  lastDecision: null, // { id, decision, status } after a decision went through
  lookup: null, // { ref, sessions } after a support-reference lookup
  error: null, // last error message shown, null when none
  lang: 'en', // the language the console is shown in
};
window.review = review;

let pollTimer = null;
let detailRequest = 0; // ignores answers for a session no longer selected
let queueRequest = 0;
let current = null; // the session object on display
let queueSessions = []; // the queue as last loaded (re-rendered when the language changes)
let queueError = null; // the queue error on the banner, if it is the one shown

// ---- API ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super((body && typeof body.message === 'string' && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && typeof body.error === 'string' ? body.error : null;
  }
}

async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } };
  if (method !== 'GET') {
    init.headers['x-vericall-csrf'] = '1';
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body ?? {});
  }
  let res;
  try {
    res = await fetch(`${API}/${path}`, init);
  } catch {
    throw new ApiError(0, { message: t('error.unreachable') });
  }
  let data = null;
  if (res.status !== 204) {
    const text = await res.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

const sessionPath = (id) => `sessions/${encodeURIComponent(id)}`;

// ---- small helpers --------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null) continue;
    if (k === 'text') node.textContent = String(v);
    else if (k === 'class') node.className = v;
    else if (k === 'data') for (const [dk, dv] of Object.entries(v)) node.dataset[dk] = String(dv ?? '');
    else node.setAttribute(k, String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function round(n) {
  if (!Number.isFinite(n)) return String(n);
  if (Number.isInteger(n)) return String(n);
  return String(Math.round(n * 1000) / 1000);
}

function scalar(v) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'number') return round(v);
  if (typeof v === 'boolean') return v ? t('value.yes') : t('value.no');
  if (typeof v === 'string') return v;
  return compact(v);
}

// Compact one-line JSON with numbers rounded to 3 decimals.
function compact(v) {
  if (v === undefined) return '';
  try {
    return JSON.stringify(v, (_k, x) => (typeof x === 'number' && !Number.isInteger(x) && Number.isFinite(x) ? Math.round(x * 1000) / 1000 : x));
  } catch {
    return String(v);
  }
}

// {a: {b: 1, c: [2, 3]}} -> [["a.b", 1], ["a.c", [2, 3]]]; arrays of numbers stay one value.
function flatten(value, prefix = '', out = []) {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const keys = Object.keys(value);
    if (!keys.length && prefix) out.push([prefix, '{}']);
    for (const k of keys) flatten(value[k], prefix ? `${prefix}.${k}` : k, out);
  } else if (Array.isArray(value) && value.some((x) => x && typeof x === 'object')) {
    value.forEach((x, i) => flatten(x, `${prefix}[${i}]`, out));
  } else if (Array.isArray(value)) {
    out.push([prefix, value.map(scalar).join(', ')]);
  } else {
    out.push([prefix, value]);
  }
  return out;
}

const isTime = (ms) => typeof ms === 'number' && Number.isFinite(ms) && ms > 0;

function formatTime(ms) {
  if (!isTime(ms)) return '—';
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function age(ms) {
  if (!isTime(ms)) return '';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return t('age.s', { n: s });
  const m = Math.round(s / 60);
  if (m < 60) return t('age.min', { n: m });
  const h = Math.round(m / 60);
  if (h < 48) return t('age.h', { n: h });
  return t('age.d', { n: Math.round(h / 24) });
}

function duration(ms) {
  if (!Number.isFinite(ms)) return '';
  const sign = ms < 0 ? '−' : '+';
  const s = Math.abs(ms) / 1000;
  if (s < 60) return `${sign}${s.toFixed(3)} ${t('unit.s')}`;
  const m = Math.floor(s / 60);
  return `${sign}${m} ${t('unit.min')} ${(s - m * 60).toFixed(1)} ${t('unit.s')}`;
}

const shortId = (id) => {
  const s = String(id ?? '');
  const bare = s.replace(/^ses_/, '');
  return bare.length > 10 ? `${s.slice(0, s.length - bare.length)}${bare.slice(0, 8)}…` : s;
};

function showError(message) {
  review.error = message || null;
  const banner = $('error');
  banner.textContent = message || '';
  banner.hidden = !message;
}

function setView(view) {
  document.body.dataset.view = view;
  $('login-screen').hidden = view !== 'login';
  $('console').hidden = view !== 'console';
  $('who').hidden = view !== 'console';
  $('logout').hidden = view !== 'console';
}

// ---- language -------------------------------------------------------------------------------

function showWho() {
  $('who').textContent = review.username ? t('who.named', { name: review.username }) : t('who.anonymous');
}

// Shows the console in `lang`: the page's own strings, then whatever is on display again.
function applyLanguage(lang) {
  setLanguage(lang);
  review.lang = language();
  $('lang').value = review.lang;
  translate();
  if (!review.loggedIn) return;
  showWho();
  renderQueue(queueSessions);
  if (current && review.selected && $('detail').dataset.loaded === 'true') {
    // The "already decided" line follows the language; a message about an action stays.
    if ($('decision-msg').dataset.kind === 'info') setDecisionMsg('', '');
    renderSession(review.selected, current);
  } else if ($('detail-body').hidden && !review.selected) {
    $('detail-empty').textContent = t('detail.empty');
  }
}

function onLanguageChange() {
  applyLanguage($('lang').value);
  // Kept in the address (`?lang=`) so that a reload shows the same language.
  const params = new URLSearchParams(location.search);
  params.set('lang', review.lang);
  history.replaceState(null, '', `${location.pathname}?${params}${location.hash}`);
}

// ---- login / logout -------------------------------------------------------------------------

function showLogin(message) {
  review.loggedIn = false;
  review.username = null;
  review.queue = [];
  review.selected = null;
  review.detailStatus = null;
  current = null;
  stopPolling();
  clearDetail();
  $('queue').replaceChildren();
  setView('login');
  const err = $('login-error');
  err.textContent = message || '';
  err.hidden = !message;
  $('password').value = '';
  ($('username').value ? $('password') : $('username')).focus();
}

function enterConsole(username) {
  review.loggedIn = true;
  review.username = typeof username === 'string' ? username : null;
  showWho();
  $('login-error').hidden = true;
  showError(null);
  setView('console');
  loadQueue();
  startPolling();
  const wanted = new URLSearchParams(location.hash.slice(1)).get('session');
  if (wanted) selectSession(wanted);
}

// Any 401 after login means the cookie expired or was revoked.
function handleAuth(err) {
  if (!(err instanceof ApiError && err.status === 401)) return false;
  if (review.loggedIn) {
    showError(null);
    showLogin(t('login.expired'));
  }
  return true;
}

async function onLogin(event) {
  event.preventDefault();
  const username = $('username').value.trim();
  const password = $('password').value;
  const err = $('login-error');
  if (!username || !password) {
    err.textContent = t('login.missing');
    err.hidden = false;
    return;
  }
  const button = $('login-submit');
  button.disabled = true;
  err.hidden = true;
  try {
    const me = await api('POST', 'login', { username, password });
    enterConsole(me?.username ?? username);
  } catch (e) {
    err.textContent = e.status === 401
      ? t('login.wrong')
      : e.status === 429 ? t('login.too_many') : t('login.failed', { message: e.message });
    err.hidden = false;
    $('password').value = '';
    $('password').focus();
  } finally {
    button.disabled = false;
  }
}

async function onLogout() {
  try {
    await api('POST', 'logout');
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) {
      showError(t('logout.failed', { message: e.message }));
      return;
    }
  }
  showError(null);
  history.replaceState(null, '', location.pathname + location.search);
  showLogin(null);
}

// ---- queue ----------------------------------------------------------------------------------

function startPolling() {
  stopPolling();
  pollTimer = setInterval(() => { if (!document.hidden) loadQueue(); }, QUEUE_POLL_MS);
}

function stopPolling() {
  if (pollTimer) clearInterval(pollTimer);
  pollTimer = null;
}

async function loadQueue() {
  const mine = ++queueRequest;
  try {
    const data = await api('GET', 'queue');
    if (mine !== queueRequest || !review.loggedIn) return;
    const sessions = Array.isArray(data?.sessions) ? data.sessions.filter((s) => s && s.id !== undefined) : [];
    renderQueue(sessions);
    if (queueError !== null && review.error === queueError) showError(null);
    queueError = null;
  } catch (e) {
    if (handleAuth(e)) return;
    queueError = t('queue.failed', { message: e.message });
    showError(queueError);
  }
}

function renderQueue(sessions) {
  queueSessions = sessions;
  review.queue = sessions.map((s) => String(s.id));
  const count = $('queue-count');
  count.textContent = String(sessions.length);
  count.dataset.count = String(sessions.length);
  $('queue-empty').hidden = sessions.length > 0;
  const items = sessions.map((s) => {
    const id = String(s.id);
    const codes = (Array.isArray(s.verdict?.reasons) ? s.verdict.reasons : []).map((r) => String(r?.code ?? ''));
    const waitingSince = isTime(s.ended_at) ? s.ended_at : s.created_at;
    const button = el('button', { type: 'button', class: 'queue-item' },
      el('span', { class: 'q-subject', text: s.subject || t('subject.none') }),
      el('span', { class: 'q-line' },
        el('code', { class: 'q-id', text: shortId(id), title: id }),
        el('span', { class: 'q-age', text: age(waitingSince), title: formatTime(waitingSince) })),
      el('span', { class: 'q-codes' }, ...codes.map((c) => el('span', { class: 'chip', text: c }))));
    button.addEventListener('click', () => selectSession(id));
    const li = el('li', { data: { id, codes: codes.join(' ') } }, button);
    if (id === review.selected) button.setAttribute('aria-current', 'true');
    return li;
  });
  $('queue').replaceChildren(...items);
}

function markSelected() {
  for (const li of $('queue').querySelectorAll('li[data-id]')) {
    const b = li.querySelector('button');
    if (li.dataset.id === review.selected) b.setAttribute('aria-current', 'true');
    else b.removeAttribute('aria-current');
  }
}

// ---- session detail -------------------------------------------------------------------------

function clearDetail() {
  const d = $('detail');
  d.dataset.id = '';
  d.dataset.loaded = 'false';
  d.dataset.status = '';
  $('detail-body').hidden = true;
  $('detail-empty').hidden = false;
  $('detail-empty').textContent = t('detail.empty');
  $('frames').replaceChildren();
  $('frames').dataset.key = '';
}

async function selectSession(id) {
  if (review.selected !== id) {
    $('note').value = '';
    setDecisionMsg('', '');
  }
  review.selected = id;
  markSelected();
  const hash = `#session=${encodeURIComponent(id)}`;
  if (location.hash !== hash) history.replaceState(null, '', hash);
  const d = $('detail');
  if (d.dataset.id !== id) {
    d.dataset.loaded = 'false';
    $('detail-body').hidden = true;
    $('detail-empty').hidden = false;
    $('detail-empty').textContent = t('detail.loading');
  }
  await loadSession(id);
}

async function loadSession(id) {
  const mine = ++detailRequest;
  try {
    const s = await api('GET', sessionPath(id));
    if (mine !== detailRequest || review.selected !== id) return;
    renderSession(id, s);
  } catch (e) {
    if (handleAuth(e) || mine !== detailRequest) return;
    const msg = e.status === 404 ? t('detail.missing') : t('detail.failed', { message: e.message });
    if ($('detail').dataset.id !== id) {
      $('detail-empty').textContent = msg;
    }
    showError(msg);
  }
}

function renderSession(id, s) {
  current = s ?? {};
  const verdict = current.verdict ?? {};
  const status = String(verdict.status ?? '');
  review.detailStatus = status || null;

  $('d-subject').textContent = current.subject || t('subject.none');
  const st = $('d-status');
  st.textContent = statusText(status);
  st.dataset.status = status;

  const created = current.created_at;
  const meta = [
    [t('meta.session'), String(current.id ?? id)],
    [t('meta.support_ref'), current.support_ref ?? '—'],
    [t('meta.state'), current.state ?? '—'],
    [t('meta.created'), `${formatTime(created)}${isTime(created) ? ` (${age(created)})` : ''}`],
    [t('meta.connected'), formatTime(current.connected_at)],
    [t('meta.ended'), formatTime(current.ended_at)],
    [t('meta.end_reason'), current.end_reason ?? '—'],
  ];
  if (isTime(current.connected_at) && isTime(current.ended_at)) {
    meta.push([t('meta.call_length'), duration(current.ended_at - current.connected_at).replace(/^\+/, '')]);
  }
  $('d-meta').replaceChildren(...meta.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: scalar(v) })]));

  renderReasons(Array.isArray(verdict.reasons) ? verdict.reasons : []);
  renderScores(verdict.scores);
  renderFrames(id, Array.isArray(verdict.frames) ? verdict.frames : []);
  renderNetwork(current.network);
  renderTimeline(Array.isArray(current.timeline) ? current.timeline : [], current);
  renderAudit(Array.isArray(current.audit) ? current.audit : []);
  renderDecisionForm(status);

  const d = $('detail');
  d.dataset.id = id;
  d.dataset.status = status;
  d.dataset.loaded = 'true';
  $('detail-empty').hidden = true;
  $('detail-body').hidden = false;
}

function renderReasons(reasons) {
  const items = reasons.map((r) => {
    const code = String(r?.code ?? '');
    const li = el('li', { data: { code, retryable: Boolean(r?.retryable) } },
      el('span', { class: 'r-head' },
        el('code', { class: 'r-code', text: code }),
        r?.retryable ? el('span', { class: 'chip', text: t('reasons.retryable') }) : null),
      r?.hint_en ? el('span', { class: 'r-hint', text: r.hint_en }) : null,
      r?.hint_zh ? el('span', { class: 'r-hint zh', lang: 'zh-CN', text: r.hint_zh }) : null);
    if (r?.evidence !== undefined && r?.evidence !== null) {
      li.append(el('code', { class: 'json', text: compact(r.evidence) }));
    }
    return li;
  });
  if (!items.length) items.push(el('li', { class: 'muted', text: t('reasons.none') }));
  $('reasons').replaceChildren(...items);
}

function renderScores(scores) {
  const fm = $('face-match');
  const match = scores && typeof scores === 'object' ? scores.face_match : null;
  fm.replaceChildren();
  if (match && typeof match === 'object' && typeof match.similarity === 'number') {
    const threshold = typeof match.threshold === 'number' ? match.threshold : null;
    const above = threshold === null ? null : match.similarity >= threshold;
    fm.dataset.present = 'true';
    fm.dataset.similarity = String(match.similarity);
    fm.dataset.threshold = threshold === null ? '' : String(threshold);
    fm.dataset.result = above === null ? 'unknown' : above ? 'above' : 'below';
    fm.append(
      el('span', { class: 'fm-label', text: t('face.label') }),
      el('span', { class: 'fm-value', text: t('face.value', { similarity: round(match.similarity), threshold: threshold === null ? '—' : round(threshold) }) }),
      el('span', { class: 'fm-verdict', text: above === null ? '' : above ? t('face.above') : t('face.below') }));
    if (typeof match.frames === 'number') fm.append(el('span', { class: 'fm-frames', text: t('face.frames', { n: match.frames }) }));
    fm.hidden = false;
  } else {
    fm.dataset.present = 'false';
    fm.dataset.result = '';
    fm.append(el('span', { class: 'fm-label', text: t('face.label') }),
      el('span', { class: 'fm-value muted', text: t('face.none') }));
    fm.hidden = false;
  }
  const rows = scores && typeof scores === 'object' ? flatten(scores) : [];
  $('scores').tBodies[0].replaceChildren(...rows.map(([k, v]) => el('tr', { data: { key: k } },
    el('th', { scope: 'row', text: k }), el('td', { text: scalar(v), class: typeof v === 'number' ? 'num' : null }))));
  $('scores').hidden = rows.length === 0;
  $('scores-empty').hidden = rows.length > 0;
}

function renderFrames(id, frames) {
  // Unchanged (a refresh after a decision): keep the loaded images rather than fetch them again.
  const key = JSON.stringify([id, frames, language()]);
  const box = $('frames');
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  const figures = frames.map((name, i) => {
    const file = String(name);
    const src = `${API}/${sessionPath(id)}/frames/${encodeURIComponent(file)}`;
    const caption = file.replace(/\.jpe?g$/i, '');
    const img = el('img', { src, alt: t('frames.alt', { n: i + 1, name: caption }), loading: 'eager', data: { name: file } });
    img.addEventListener('error', () => { img.closest('figure')?.setAttribute('data-broken', 'true'); });
    return el('figure', { data: { name: file } },
      el('a', { href: src, target: '_blank', rel: 'noopener noreferrer', title: t('frames.open') }, img),
      el('figcaption', { text: caption }));
  });
  box.replaceChildren(...figures);
  $('frames-empty').hidden = frames.length > 0;
}

function kvTable(rows, caption) {
  return el('table', { class: 'kv' },
    el('caption', { text: caption }),
    el('tbody', {}, ...rows.map(([k, v]) => el('tr', { data: { key: k } },
      el('th', { scope: 'row', text: k }), el('td', { text: scalar(v), class: typeof v === 'number' ? 'num' : null })))));
}

function renderNetwork(network) {
  const box = $('network');
  if (!network || typeof network !== 'object') {
    box.replaceChildren(el('p', { class: 'muted', text: t('network.none') }));
    return;
  }
  const parts = [];
  const { tracks, ...summary } = network;
  const summaryRows = flatten(summary).filter(([, v]) => v !== undefined);
  if (summaryRows.length) parts.push(kvTable(summaryRows, t('network.summary')));
  for (const [i, t] of (Array.isArray(tracks) ? tracks : []).entries()) {
    if (!t || typeof t !== 'object') continue;
    const title = [t.kind, t.codec].filter((x) => typeof x === 'string' && x).join(' · ') || t('network.track', { n: i + 1 });
    const rows = flatten(t).filter(([k]) => k !== 'kind' && k !== 'codec');
    if (typeof t.codec === 'string') rows.unshift(['codec', t.codec]);
    const table = kvTable(rows, title);
    table.classList.add('track');
    table.dataset.kind = String(t.kind ?? '');
    parts.push(table);
  }
  if (!parts.length) parts.push(el('p', { class: 'muted', text: t('network.empty') }));
  box.replaceChildren(...parts);
}

function renderTimeline(events, s) {
  // at_ms is unix ms; show it as an offset from the session's start.
  const origin = isTime(s.created_at) ? s.created_at : null;
  const items = events.map((ev) => {
    const e = ev && typeof ev === 'object' ? ev : { type: String(ev) };
    const { type, seq, at_ms: at, ...rest } = e;
    let when = '';
    if (typeof at === 'number') when = origin !== null && at > 1e11 ? duration(at - origin) : duration(at);
    return el('li', { data: { type: String(type ?? ''), seq: seq ?? '' } },
      el('span', { class: 't-at', text: when, title: typeof at === 'number' && at > 1e11 ? formatTime(at) : null }),
      el('span', { class: 't-type', text: String(type ?? '?') }),
      Object.keys(rest).length ? el('code', { class: 'json', text: compact(rest) }) : null);
  });
  $('timeline').replaceChildren(...items);
  $('timeline-count').textContent = String(events.length);
}

function renderAudit(entries) {
  const items = entries.map((a) => {
    const action = String(a?.action ?? '');
    const operator = String(a?.operator ?? '');
    const note = String(a?.note ?? '');
    const at = typeof a?.at === 'number' ? formatTime(a.at) : typeof a?.at === 'string' ? a.at : '—';
    return el('li', { data: { action, operator, note, at: a?.at ?? '' } },
      el('span', { class: 'a-head' },
        el('span', { class: 'a-action', data: { action }, text: action ? actionText(action) : '?' }),
        el('span', { class: 'a-by', text: t('audit.by', { name: operator || t('audit.unknown') }) }),
        el('time', { class: 'a-at', text: at })),
      note ? el('span', { class: 'a-note', text: note }) : null);
  });
  $('audit').replaceChildren(...items);
  $('audit-empty').hidden = entries.length > 0;
}

function renderDecisionForm(status) {
  const open = status === 'needs_review';
  for (const id of ['note', 'approve', 'reject']) $(id).disabled = !open;
  $('decision-form').dataset.open = String(open);
  if (!open && !$('decision-msg').dataset.kind) {
    setDecisionMsg(t('decision.already', { status: statusText(status) }), 'info');
  }
}

function setDecisionMsg(text, kind) {
  const m = $('decision-msg');
  m.textContent = text;
  m.dataset.kind = kind;
}

// ---- decision -------------------------------------------------------------------------------

async function onDecision(event) {
  event.preventDefault();
  const decision = event.submitter?.value;
  const id = review.selected;
  if (!id || (decision !== 'approve' && decision !== 'reject')) return;
  const noteEl = $('note');
  const note = noteEl.value.trim();
  if (!note) {
    noteEl.setAttribute('aria-invalid', 'true');
    setDecisionMsg(t('decision.note_required'), 'error');
    noteEl.focus();
    return;
  }
  noteEl.removeAttribute('aria-invalid');
  const buttons = [$('approve'), $('reject')];
  buttons.forEach((b) => { b.disabled = true; });
  setDecisionMsg(decision === 'approve' ? t('decision.approving') : t('decision.rejecting'), 'busy');
  let outcome = null;
  try {
    const res = await api('POST', `${sessionPath(id)}/decision`, { decision, note });
    outcome = { id, decision, status: res?.verdict?.status ?? null };
    noteEl.value = '';
    const now = outcome.status ? statusText(outcome.status) : t('status.updated');
    setDecisionMsg(t(decision === 'approve' ? 'decision.approved' : 'decision.rejected', { status: now }), 'ok');
    showError(null);
  } catch (e) {
    if (handleAuth(e)) return;
    if (e.status === 409) setDecisionMsg(t('decision.conflict'), 'error');
    else if (e.status === 422) {
      noteEl.setAttribute('aria-invalid', 'true');
      setDecisionMsg(t('decision.note_refused', { message: e.message }), 'error');
    } else setDecisionMsg(t('decision.failed', { message: e.message }), 'error');
    review.error = `decision: ${e.status || 'network'} ${e.message}`;
  }
  // Whatever happened, show the session and queue as the server now has them.
  await Promise.all([review.selected === id ? loadSession(id) : null, loadQueue()]);
  if (review.selected === id) renderDecisionForm(review.detailStatus ?? '');
  if (outcome) review.lastDecision = outcome;
}

// ---- start ----------------------------------------------------------------------------------

applyLanguage(initialLanguage());
$('lang').addEventListener('change', onLanguageChange);
$('login-form').addEventListener('submit', onLogin);
// Customer service: the reference a caller reads from their result screen opens their session.
$('lookup-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const typed = $('lookup-ref').value.trim();
  const msg = $('lookup-msg');
  if (!typed) return;
  msg.textContent = '';
  try {
    const data = await api('GET', `lookup?ref=${encodeURIComponent(typed)}`);
    const ids = Array.isArray(data?.sessions) ? data.sessions : [];
    review.lookup = { ref: data?.support_ref ?? null, sessions: ids };
    if (!ids.length) {
      msg.textContent = t('lookup.none', { ref: data?.support_ref ?? typed });
      return;
    }
    await selectSession(String(ids[0]));
  } catch (e) {
    if (handleAuth(e)) return;
    msg.textContent = e.status === 400 ? t('lookup.invalid') : t('lookup.failed', { message: e.message });
  }
});

$('logout').addEventListener('click', onLogout);
$('refresh').addEventListener('click', () => {
  loadQueue();
  if (review.selected) loadSession(review.selected);
});
$('decision-form').addEventListener('submit', onDecision);
$('note').addEventListener('input', () => $('note').removeAttribute('aria-invalid'));
window.addEventListener('hashchange', () => {
  const wanted = new URLSearchParams(location.hash.slice(1)).get('session');
  if (review.loggedIn && wanted && wanted !== review.selected) selectSession(wanted);
});
document.addEventListener('visibilitychange', () => { if (!document.hidden && review.loggedIn) loadQueue(); });

(async () => {
  try {
    const me = await api('GET', 'me');
    enterConsole(me?.username ?? null);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) showError(t('login.check_failed', { message: e.message }));
    showLogin(null);
  } finally {
    review.ready = true;
  }
})();
