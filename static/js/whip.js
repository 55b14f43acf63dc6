// Minimal WHIP publisher for vericall (plain ES module, no build step).
//
// URL: /index.html#session=<id>&token=<client token>
// The token lives in the fragment only, so it never reaches server logs or
// Referer headers; it is sent as `Authorization: Bearer` on the WHIP POST.
//
// Events (JSON objects with a `type` field) arrive on the `vericall` data
// channel; if that is not open 3 s after the answer is applied we fall back to
// SSE at the URL from the WHIP response's Link header (rel below). That URL
// must already carry any credentials, since EventSource cannot send headers.
//
// Tests read window.vericall = { state, eventsReceived, lastEvent, ... }.

const EVENTS_REL = 'urn:ietf:params:whip:ext:vericall:events';
const ICE_GATHER_TIMEOUT_MS = 1000;
const DATA_CHANNEL_TIMEOUT_MS = 3000;

const statusEl = document.getElementById('status');
const eventsEl = document.getElementById('events');
const previewEl = document.getElementById('preview');

const vc = {
  state: 'connecting', // 'connecting' | 'connected' | 'failed'
  eventsReceived: 0,
  lastEvent: null, // last parsed event object
  transport: null, // 'datachannel' | 'sse' once events flow
  error: null,
};
window.vericall = vc;

function setState(state, text = state) {
  vc.state = state;
  statusEl.dataset.state = state;
  statusEl.textContent = text;
}

function fail(err) {
  vc.error = String(err && err.message ? err.message : err);
  console.error('vericall:', vc.error);
  setState('failed', `failed: ${vc.error}`);
}

function onEvent(data, transport) {
  let event;
  try {
    event = JSON.parse(data);
  } catch {
    console.warn('vericall: ignoring non-JSON event', data);
    return;
  }
  vc.transport = transport;
  vc.eventsReceived += 1;
  vc.lastEvent = event;
  eventsEl.textContent = `${vc.eventsReceived} (last: ${event.type ?? '?'})`;
  eventsEl.dataset.count = String(vc.eventsReceived);
  eventsEl.dataset.lastType = event.type ?? '';
}

// Parses a Link header value, returning the URL whose rel list contains `rel`.
function findLink(header, rel, base) {
  if (!header) return null;
  for (const m of header.matchAll(/<([^>]*)>([^<]*)/g)) {
    const relParam = /;\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,]+))/i.exec(m[2]);
    const rels = relParam ? (relParam[1] ?? relParam[2]).split(/\s+/) : [];
    if (rels.includes(rel)) return new URL(m[1], base).href;
  }
  return null;
}

function waitForIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => pc.iceGatheringState === 'complete' && done();
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

async function getMedia() {
  const video = { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: { ideal: 'user' } };
  try {
    return await navigator.mediaDevices.getUserMedia({ video, audio: true });
  } catch (err) {
    if (err.name !== 'NotFoundError' && err.name !== 'OverconstrainedError') throw err;
    console.warn('vericall: no usable microphone, publishing video only');
    return navigator.mediaDevices.getUserMedia({ video });
  }
}

async function main() {
  const params = new URLSearchParams(location.hash.slice(1));
  const session = params.get('session');
  const token = params.get('token');
  if (!session || !token) throw new Error('missing #session=<id>&token=<token> in the URL');

  setState('connecting', 'starting camera…');
  const stream = await getMedia();
  previewEl.srcObject = stream;

  const pc = new RTCPeerConnection();
  for (const track of stream.getTracks()) {
    pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
  }
  const dc = pc.createDataChannel('vericall');
  let sse = null;
  dc.onopen = () => { if (!sse) vc.transport = 'datachannel'; };
  dc.onmessage = (e) => { if (!sse) onEvent(e.data, 'datachannel'); };

  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'connected') setState('connected');
    else if (pc.connectionState === 'failed') fail('ICE/DTLS connection failed');
  };

  setState('connecting', 'connecting…');
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIceGathering(pc, ICE_GATHER_TIMEOUT_MS);

  const res = await fetch(`/whip/${encodeURIComponent(session)}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${token}` },
    body: pc.localDescription.sdp,
  });
  if (res.status !== 201) {
    const body = (await res.text()).slice(0, 200);
    throw new Error(`WHIP POST returned ${res.status}${body ? `: ${body}` : ''}`);
  }
  const answer = await res.text();
  const eventsUrl = findLink(res.headers.get('Link'), EVENTS_REL, res.url);
  const resourceUrl = res.headers.get('Location');
  await pc.setRemoteDescription({ type: 'answer', sdp: answer });

  setTimeout(() => {
    if (dc.readyState === 'open' || vc.state === 'failed') return;
    if (!eventsUrl) {
      console.warn('vericall: data channel not open and no events Link header; no events');
      return;
    }
    console.warn('vericall: data channel not open after 3 s, falling back to SSE');
    sse = new EventSource(eventsUrl);
    sse.onmessage = (e) => onEvent(e.data, 'sse');
  }, DATA_CHANNEL_TIMEOUT_MS);

  // WHIP session teardown when the page goes away (best effort).
  if (resourceUrl) {
    addEventListener('pagehide', () => {
      fetch(new URL(resourceUrl, res.url), {
        method: 'DELETE',
        headers: { Authorization: `Bearer ${token}` },
        keepalive: true,
      }).catch(() => {});
    }, { once: true });
  }
}

main().catch(fail);
