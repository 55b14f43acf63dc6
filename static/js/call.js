// WHIP publisher (RFC 9725) with trickle ICE and ICE restarts, and the session's event stream.
//
// The offer is POSTed as soon as it exists; candidates found later are PATCHed as
// application/trickle-ice-sdpfrag (RFC 8840). When the connection drops, the call restarts ICE
// with a PATCH carrying new credentials: the server keeps the same session, so challenge progress
// survives a network change.
//
// Events (JSON with `type` and, except live-only ones, `seq`) come on the `vericall` data
// channel; when that is not open 3 s after the answer, or closes, they come over SSE from the
// URL in the WHIP response's Link header. Duplicates across the two are dropped by `seq`.

const EVENTS_REL = 'urn:ietf:params:whip:ext:vericall:events';
const DATA_CHANNEL_TIMEOUT_MS = 3000;
const DISCONNECTED_RESTART_MS = 2500;
const MAX_RESTARTS = 5;
const RESTART_GATHER_MS = 1500;

/// Parses a Link header value, returning the URL whose rel list contains `rel`.
export function findLink(header, rel, base) {
  if (!header) return null;
  for (const m of header.matchAll(/<([^>]*)>([^<]*)/g)) {
    const relParam = /;\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,]+))/i.exec(m[2]);
    const rels = relParam ? (relParam[1] ?? relParam[2]).split(/\s+/) : [];
    if (rels.includes(rel)) return new URL(m[1], base).href;
  }
  return null;
}

/// ICE servers from `Link: <stun:...>; rel="ice-server"` headers (RFC 9725 section 4.6).
function iceServersFrom(header) {
  const servers = [];
  if (!header) return servers;
  for (const m of header.matchAll(/<([^>]*)>([^<]*)/g)) {
    if (!/rel\s*=\s*"?ice-server"?/i.test(m[2])) continue;
    const server = { urls: m[1] };
    const user = /username\s*=\s*"([^"]*)"/i.exec(m[2]);
    const cred = /credential\s*=\s*"([^"]*)"/i.exec(m[2]);
    if (user) server.username = user[1];
    if (cred) server.credential = cred[1];
    servers.push(server);
  }
  return servers;
}

function sdpLine(sdp, name) {
  const m = new RegExp(`^a=${name}:(.*)$`, 'm').exec(sdp);
  return m ? m[1].trim() : null;
}

export class WhipCall {
  /// onEvent(event) for each server event; onState(state) with
  /// 'connecting' | 'connected' | 'reconnecting' | 'failed' | 'closed'.
  constructor({ session, token, stream, onEvent, onState, skipLight = false }) {
    this.session = session;
    this.skipLight = skipLight;
    this.token = token;
    this.stream = stream;
    this.onEvent = onEvent;
    this.onState = onState;
    this.pc = null;
    this.resource = null;
    this.etag = null;
    this.eventsUrl = null;
    this.sse = null;
    this.lastSeq = 0;
    this.pendingCandidates = [];
    this.endOfCandidates = false;
    this.restarts = 0;
    this.restarting = false;
    this.disconnectTimer = null;
    this.closed = false;
    this.transport = null;
  }

  auth(extra = {}) {
    return { Authorization: `Bearer ${this.token}`, ...extra };
  }

  async start() {
    this.onState('connecting');
    let iceServers = [];
    try {
      // Pre-flight (RFC 9725 4.6) for STUN/TURN servers; fine to skip when it fails.
      const pre = await fetch(`/whip/${encodeURIComponent(this.session)}`, { method: 'OPTIONS', headers: this.auth() });
      iceServers = iceServersFrom(pre.headers.get('Link'));
    } catch {
      // no pre-flight: host candidates only
    }
    const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle' });
    this.pc = pc;
    for (const track of this.stream.getTracks()) {
      pc.addTransceiver(track, { direction: 'sendonly', streams: [this.stream] });
    }
    const dc = pc.createDataChannel('vericall');
    this.dc = dc;
    dc.onopen = () => { this.transport = this.sse ? this.transport : 'datachannel'; };
    dc.onmessage = (e) => this.deliver(e.data, 'datachannel');
    dc.onclose = () => { if (!this.closed) this.openSse(); };

    pc.onicecandidate = (e) => {
      if (e.candidate && e.candidate.candidate) this.pendingCandidates.push(e.candidate);
      else if (!e.candidate) this.endOfCandidates = true;
      this.flushCandidates();
    };
    pc.onconnectionstatechange = () => this.onConnectionState();

    await pc.setLocalDescription(await pc.createOffer());
    const query = this.skipLight ? '?screen_light=off' : '';
    const res = await fetch(`/whip/${encodeURIComponent(this.session)}${query}`, {
      method: 'POST',
      headers: this.auth({ 'Content-Type': 'application/sdp' }),
      body: pc.localDescription.sdp,
    });
    if (res.status !== 201) {
      const body = (await res.text()).slice(0, 200);
      const err = new Error(`WHIP POST returned ${res.status}${body ? `: ${body}` : ''}`);
      err.status = res.status;
      throw err;
    }
    const answer = await res.text();
    this.resource = new URL(res.headers.get('Location') || `/whip/${this.session}`, res.url).href;
    this.etag = res.headers.get('ETag');
    this.eventsUrl = findLink(res.headers.get('Link'), EVENTS_REL, res.url);
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    // Candidates gathered while the POST was in flight.
    this.flushCandidates();
    setTimeout(() => {
      if (dc.readyState !== 'open' && !this.closed) this.openSse();
    }, DATA_CHANNEL_TIMEOUT_MS);
    addEventListener('pagehide', () => this.stop(true), { once: true });
  }

  deliver(data, transport) {
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      console.warn('vericall: ignoring non-JSON event');
      return;
    }
    if (typeof event.seq === 'number') {
      if (event.seq <= this.lastSeq) return; // already seen on the other transport
      this.lastSeq = event.seq;
    }
    this.transport = transport;
    this.onEvent(event, transport);
  }

  openSse() {
    if (this.sse || !this.eventsUrl || this.closed) return;
    console.warn('vericall: events over SSE');
    this.sse = new EventSource(this.eventsUrl);
    this.sse.onmessage = (e) => this.deliver(e.data, 'sse');
  }

  /// PATCHes queued local candidates once the resource exists (RFC 8840 fragment).
  async flushCandidates() {
    if (!this.resource || this.restarting || this.closed) return;
    if (!this.pendingCandidates.length && !this.endOfCandidates) return;
    const candidates = this.pendingCandidates.splice(0);
    const end = this.endOfCandidates;
    this.endOfCandidates = false;
    const body = this.fragment(candidates, end);
    try {
      const res = await fetch(this.resource, {
        method: 'PATCH',
        headers: this.auth({ 'Content-Type': 'application/trickle-ice-sdpfrag', 'If-Match': this.etag || '*' }),
        body,
      });
      if (!res.ok && res.status !== 204) console.warn(`vericall: trickle PATCH returned ${res.status}`);
    } catch (err) {
      console.warn('vericall: trickle PATCH failed', err);
    }
  }

  fragment(candidates, end) {
    const sdp = this.pc.localDescription.sdp;
    const lines = [
      `a=ice-ufrag:${sdpLine(sdp, 'ice-ufrag')}`,
      `a=ice-pwd:${sdpLine(sdp, 'ice-pwd')}`,
    ];
    // One bundled transport: every candidate under the first m-line.
    const mid = sdpLine(sdp, 'mid') ?? '0';
    lines.push('m=audio 9 UDP/TLS/RTP/SAVPF 0', `a=mid:${mid}`);
    for (const c of candidates) lines.push(`a=${c.candidate}`);
    if (end) lines.push('a=end-of-candidates');
    return `${lines.join('\r\n')}\r\n`;
  }

  onConnectionState() {
    const state = this.pc.connectionState;
    if (this.closed) return;
    if (state === 'connected') {
      clearTimeout(this.disconnectTimer);
      this.disconnectTimer = null;
      this.restarts = 0;
      this.onState('connected');
    } else if (state === 'disconnected') {
      this.onState('reconnecting');
      clearTimeout(this.disconnectTimer);
      this.disconnectTimer = setTimeout(() => this.restartIce(), DISCONNECTED_RESTART_MS);
    } else if (state === 'failed') {
      this.onState('reconnecting');
      this.restartIce();
    }
  }

  /// ICE restart over WHIP PATCH (RFC 9725 4.3.2): new local credentials out, the server's new
  /// credentials back, patched into the remote description.
  async restartIce() {
    if (this.restarting || this.closed) return;
    if (this.restarts >= MAX_RESTARTS) {
      this.onState('failed');
      return;
    }
    this.restarting = true;
    this.restarts += 1;
    try {
      if (typeof this.pc.restartIce === 'function') this.pc.restartIce();
      const offer = await this.pc.createOffer({ iceRestart: true });
      await this.pc.setLocalDescription(offer);
      await new Promise((r) => setTimeout(r, RESTART_GATHER_MS));
      const candidates = this.pendingCandidates.splice(0);
      const res = await fetch(this.resource, {
        method: 'PATCH',
        headers: this.auth({ 'Content-Type': 'application/trickle-ice-sdpfrag', 'If-Match': '*' }),
        body: this.fragment(candidates, false),
      });
      if (res.status !== 200) throw new Error(`ICE restart PATCH returned ${res.status}`);
      this.etag = res.headers.get('ETag') || this.etag;
      const frag = await res.text();
      const ufrag = sdpLine(frag, 'ice-ufrag');
      const pwd = sdpLine(frag, 'ice-pwd');
      const remote = this.pc.currentRemoteDescription || this.pc.remoteDescription;
      const sdp = remote.sdp
        .replace(/^a=ice-ufrag:.*$/gm, `a=ice-ufrag:${ufrag}`)
        .replace(/^a=ice-pwd:.*$/gm, `a=ice-pwd:${pwd}`);
      await this.pc.setRemoteDescription({ type: 'answer', sdp });
    } catch (err) {
      console.warn('vericall: ICE restart failed', err);
      this.restarting = false;
      setTimeout(() => this.restartIce(), DISCONNECTED_RESTART_MS);
      return;
    }
    this.restarting = false;
    // Candidates gathered after the restart PATCH went out.
    this.flushCandidates();
  }

  /// Ends the call: DELETE the WHIP resource (keepalive so it survives page unload).
  stop(unloading = false) {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.disconnectTimer);
    if (this.sse) this.sse.close();
    if (this.resource) {
      fetch(this.resource, { method: 'DELETE', headers: this.auth(), keepalive: unloading }).catch(() => {});
    }
    if (this.pc) this.pc.close();
    this.onState('closed');
  }
}
