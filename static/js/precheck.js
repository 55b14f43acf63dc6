// Device pre-check: secure context and WebRTC, camera and microphone (front camera, never an
// infrared one), a live microphone level and a short connection test. Each failure maps to a
// reason code the server records (POST /v1/sessions/{id}/client-report).

/// A pre-check failure: `code` is a reason code, `device` camera | microphone | browser.
export class DeviceFailure extends Error {
  constructor(code, device, detail) {
    super(`${code} (${device}: ${detail})`);
    this.code = code;
    this.device = device;
    this.detail = detail;
  }
}

/// Why the browser cannot run the call at all, or null.
export function browserProblem() {
  if (!window.isSecureContext) return 'InsecureContext';
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return 'NoMediaDevices';
  if (typeof RTCPeerConnection !== 'function') return 'NoWebRTC';
  return null;
}

/// Maps a getUserMedia error to a reason code.
export function codeForMediaError(err) {
  switch (err && err.name) {
    case 'NotAllowedError':
    case 'PermissionDeniedError':
    case 'SecurityError':
      return 'PERMISSION_DENIED';
    case 'NotFoundError':
    case 'DevicesNotFoundError':
      return 'DEVICE_NOT_FOUND';
    case 'NotReadableError':
    case 'TrackStartError':
    case 'AbortError':
      return 'DEVICE_IN_USE';
    case 'OverconstrainedError':
    case 'ConstraintNotSatisfiedError':
      return 'DEVICE_UNSUPPORTED';
    case 'TypeError':
      return 'BROWSER_UNSUPPORTED';
    default:
      return 'DEVICE_IN_USE';
  }
}

// Infrared (Windows Hello) cameras show a grey, flat picture that fails every check.
const INFRARED = /\b(ir|infrared|infra-red)\b/i;

const VIDEO = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 15, max: 30 } };

/// Opens the front camera and the microphone. Returns { stream, audio: bool }. A missing
/// microphone is not fatal here (the server decides whether the session needs audio); a
/// denied permission, a missing, busy or infrared-only camera is.
export async function openDevices() {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { ...VIDEO, facingMode: { ideal: 'user' } },
      audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: true },
    });
  } catch (err) {
    if (err.name !== 'NotFoundError' && err.name !== 'NotReadableError') {
      throw new DeviceFailure(codeForMediaError(err), 'camera', err.name);
    }
    // Tell camera from microphone: try the camera alone.
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { ...VIDEO, facingMode: { ideal: 'user' } } });
    } catch (err2) {
      throw new DeviceFailure(codeForMediaError(err2), 'camera', err2.name);
    }
    console.warn('vericall: microphone unavailable:', err.name);
  }
  return avoidInfrared(stream);
}

async function avoidInfrared(stream) {
  const [track] = stream.getVideoTracks();
  if (!track || !INFRARED.test(track.label)) return stream;
  const devices = await navigator.mediaDevices.enumerateDevices();
  const other = devices.find((d) => d.kind === 'videoinput' && d.deviceId && !INFRARED.test(d.label));
  if (!other) throw new DeviceFailure('DEVICE_UNSUPPORTED', 'camera', 'InfraredOnly');
  track.stop();
  stream.removeTrack(track);
  const replacement = await navigator.mediaDevices.getUserMedia({
    video: { ...VIDEO, deviceId: { exact: other.deviceId } },
  });
  stream.addTrack(replacement.getVideoTracks()[0]);
  return stream;
}

/// Live microphone level (0..1 RMS) through `onLevel`, until the returned stop() is called.
/// Also reports the loudest level seen, so the page can warn about a muted microphone.
export function meterMicrophone(stream, onLevel) {
  const [track] = stream.getAudioTracks();
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!track || typeof Ctx !== 'function') return { stop() {}, peak: () => null };
  const ctx = new Ctx();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  let peak = 0;
  let running = true;
  const timer = setInterval(() => {
    if (!running) return;
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const v of buf) sum += v * v;
    const rms = Math.sqrt(sum / buf.length);
    peak = Math.max(peak, rms);
    onLevel(rms);
  }, 100);
  ctx.resume().catch(() => {});
  return {
    stop() {
      running = false;
      clearInterval(timer);
      ctx.close().catch(() => {});
    },
    // A context still suspended (no user gesture yet, e.g. Android web views) heard nothing:
    // the level is unknown rather than silent.
    peak: () => (ctx.state === 'running' ? peak : null),
    resume: () => ctx.resume().catch(() => {}),
  };
}

/// Median round trip of a few small requests to the server, in ms (null when unreachable).
export async function measureRoundTrip(tries = 3) {
  const times = [];
  for (let i = 0; i < tries; i += 1) {
    const started = performance.now();
    try {
      const res = await fetch('/healthz', { cache: 'no-store' });
      await res.arrayBuffer();
      if (!res.ok) continue;
      times.push(performance.now() - started);
    } catch {
      // counted as a missing sample
    }
  }
  if (!times.length) return null;
  times.sort((a, b) => a - b);
  return Math.round(times[Math.floor(times.length / 2)]);
}

/// Tells the server about a device problem (best effort: the page shows the hint regardless).
export async function reportFailure(session, token, failure) {
  try {
    await fetch(`/v1/sessions/${encodeURIComponent(session)}/client-report`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
      body: JSON.stringify({ code: failure.code, device: failure.device, detail: failure.detail }),
    });
  } catch (err) {
    console.warn('vericall: could not report the device problem', err);
  }
}
