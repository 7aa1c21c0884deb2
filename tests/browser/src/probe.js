// Page-side instruments shared by the test pages: records every fetch (method,
// url, body, status, response), every RTCPeerConnection and data channel (and
// each message on it), and measures received audio and video.
//
// Everything here observes; the code under test (the official client, or the
// raw page) talks to the server by itself.

export const record = {
  fetches: [], // {method, url, body, status, response, ms}
  pcs: [], // RTCPeerConnection instances, in creation order
  dcMessages: [], // {dir: "in"|"out", data, t}
  t0: performance.now(),
};

export function now() {
  return Math.round(performance.now() - record.t0);
}

// -- fetch ------------------------------------------------------------------
const realFetch = window.fetch.bind(window);
window.fetch = async function (input, init = {}) {
  const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
  const method = (init.method || (input instanceof Request ? input.method : "GET")).toUpperCase();
  let body = init.body;
  if (body === undefined && input instanceof Request) {
    try {
      body = await input.clone().text();
    } catch {}
  }
  const entry = { method, url, body: typeof body === "string" ? body : null, t: now() };
  record.fetches.push(entry);
  try {
    const response = await realFetch(input, init);
    entry.status = response.status;
    entry.ms = now() - entry.t;
    try {
      entry.response = await response.clone().text();
    } catch {}
    return response;
  } catch (e) {
    entry.error = String(e);
    throw e;
  }
};

// -- RTCPeerConnection --------------------------------------------------------
const RealPC = window.RTCPeerConnection;
class RecordedPC extends RealPC {
  constructor(...args) {
    super(...args);
    record.pcs.push(this);
    this.__events = [];
    for (const ev of ["connectionstatechange", "iceconnectionstatechange", "signalingstatechange", "icegatheringstatechange"]) {
      this.addEventListener(ev, () => {
        const value = {
          connectionstatechange: this.connectionState,
          iceconnectionstatechange: this.iceConnectionState,
          signalingstatechange: this.signalingState,
          icegatheringstatechange: this.iceGatheringState,
        }[ev];
        this.__events.push({ ev, value, t: now() });
      });
    }
    this.addEventListener("icecandidate", (e) => {
      this.__events.push({ ev: "icecandidate", value: e.candidate ? e.candidate.candidate : null, t: now() });
    });
  }
  createDataChannel(label, options) {
    const dc = super.createDataChannel(label, options);
    const send = dc.send.bind(dc);
    dc.send = (data) => {
      if (typeof data !== "string" || !data.startsWith("ping")) record.dcMessages.push({ dir: "out", data, t: now() });
      else record.pings = (record.pings || 0) + 1;
      return send(data);
    };
    dc.addEventListener("open", () => record.dcMessages.push({ dir: "open", data: label, t: now() }));
    dc.addEventListener("message", (e) => record.dcMessages.push({ dir: "in", data: e.data, t: now() }));
    return dc;
  }
}
window.RTCPeerConnection = RecordedPC;

export function currentPc() {
  return record.pcs[record.pcs.length - 1];
}

/** JSON messages received on the data channel (parsed), optionally since a time. */
export function received(since = 0) {
  return record.dcMessages
    .filter((m) => m.dir === "in" && m.t >= since)
    .map((m) => {
      try {
        return { ...JSON.parse(m.data), __t: m.t };
      } catch {
        return { __raw: m.data, __t: m.t };
      }
    });
}

export async function waitFor(fn, timeoutMs, what) {
  const end = performance.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (performance.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

// -- audio ------------------------------------------------------------------
/** Plays a remote track in an <audio> element, as a client app does. */
export function play(track) {
  const el = document.createElement("audio");
  el.autoplay = true;
  el.srcObject = new MediaStream([track]);
  document.body.append(el);
  el.play().catch(() => {});
  return el;
}

let audioCtx;
function ctx() {
  audioCtx ||= new AudioContext();
  return audioCtx;
}

/**
 * Listens to `track` for `ms` and reports its loudness and dominant frequency:
 * {rmsMax, rmsMean, peakHz, peakHzMode, loudFrames, frames, sampleRate}.
 */
export async function analyseAudio(track, ms = 1500) {
  const ac = ctx();
  // Headless Firefox here has no audio output (no PulseAudio), and its
  // AudioContext never leaves "suspended"; record and decode offline there.
  const running = await Promise.race([ac.resume().then(() => true), new Promise((r) => setTimeout(() => r(false), 1000))]);
  if (!running || ac.state !== "running") return analyseRecorded(track, ms);
  // Chromium only feeds a remote WebRTC track into WebAudio while some media
  // element plays it, so attach it to a muted one.
  const el = document.createElement("audio");
  el.muted = true;
  el.srcObject = new MediaStream([track]);
  document.body.append(el);
  el.play().catch(() => {});
  const src = ac.createMediaStreamSource(new MediaStream([track]));
  const an = ac.createAnalyser();
  an.fftSize = 8192;
  an.smoothingTimeConstant = 0;
  src.connect(an);
  const time = new Float32Array(an.fftSize);
  const freq = new Float32Array(an.frequencyBinCount);
  const binHz = ac.sampleRate / an.fftSize;
  let frames = 0;
  let loud = 0;
  let rmsMax = 0;
  let rmsSum = 0;
  const peaks = [];
  const end = performance.now() + ms;
  while (performance.now() < end) {
    await new Promise((r) => setTimeout(r, 100));
    an.getFloatTimeDomainData(time);
    let sum = 0;
    for (const x of time) sum += x * x;
    const rms = Math.sqrt(sum / time.length);
    frames++;
    rmsSum += rms;
    rmsMax = Math.max(rmsMax, rms);
    if (rms > 0.01) {
      loud++;
      an.getFloatFrequencyData(freq);
      let best = 1;
      for (let i = 2; i < freq.length; i++) if (freq[i] > freq[best]) best = i;
      // Parabolic interpolation around the peak bin.
      const a = freq[best - 1], b = freq[best], c = freq[best + 1] ?? b;
      const p = (a - c) / (2 * (a - 2 * b + c)) || 0;
      peaks.push((best + p) * binHz);
    }
  }
  src.disconnect();
  el.srcObject = null;
  el.remove();
  peaks.sort((x, y) => x - y);
  return {
    rmsMax: +rmsMax.toFixed(4),
    rmsMean: +(rmsSum / Math.max(frames, 1)).toFixed(4),
    peakHz: peaks.length ? +peaks[Math.floor(peaks.length / 2)].toFixed(1) : null,
    loudFrames: loud,
    frames,
    binHz: +binHz.toFixed(2),
    sampleRate: ac.sampleRate,
    method: "AnalyserNode",
  };
}

/**
 * The same measurements as analyseAudio, without a running AudioContext:
 * MediaRecorder records the track, an OfflineAudioContext decodes it, and the
 * dominant frequency comes from a Goertzel scan (2 Hz steps, 50..4000 Hz).
 */
export async function analyseRecorded(track, ms = 1500) {
  const rec = new MediaRecorder(new MediaStream([track]));
  const chunks = [];
  rec.ondataavailable = (e) => e.data.size && chunks.push(e.data);
  rec.start();
  await new Promise((r) => setTimeout(r, ms));
  const stopped = new Promise((r) => (rec.onstop = r));
  rec.stop();
  await stopped;
  const bytes = await new Blob(chunks, { type: rec.mimeType }).arrayBuffer();
  const audio = await new OfflineAudioContext(1, 1, 48000).decodeAudioData(bytes);
  const rate = audio.sampleRate;
  const data = audio.getChannelData(0).subarray(Math.round(rate * 0.1)); // skip the encoder's start
  const frameLen = Math.round(rate * 0.1);
  let frames = 0, loud = 0, rmsMax = 0, rmsSum = 0, loudest = 0;
  for (let i = 0; i + frameLen <= data.length; i += frameLen) {
    let sum = 0;
    for (let j = i; j < i + frameLen; j++) sum += data[j] * data[j];
    const rms = Math.sqrt(sum / frameLen);
    frames++;
    rmsSum += rms;
    if (rms > 0.01) loud++;
    if (rms > rmsMax) [rmsMax, loudest] = [rms, i];
  }
  let peakHz = null;
  const n = Math.min(8192, data.length - loudest);
  if (rmsMax > 0.01 && n > 1024) {
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = data[loudest + i] * (0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (n - 1)));
    let best = -1;
    for (let f = 50; f <= 4000; f += 2) {
      const w = (2 * Math.PI * f) / rate, c = 2 * Math.cos(w);
      let s1 = 0, s2 = 0;
      for (let i = 0; i < n; i++) {
        const s0 = x[i] + c * s1 - s2;
        s2 = s1;
        s1 = s0;
      }
      const power = s1 * s1 + s2 * s2 - c * s1 * s2;
      if (power > best) [best, peakHz] = [power, f];
    }
  }
  return {
    rmsMax: +rmsMax.toFixed(4),
    rmsMean: +(rmsSum / Math.max(frames, 1)).toFixed(4),
    peakHz,
    loudFrames: loud,
    frames,
    binHz: 2,
    sampleRate: rate,
    method: "MediaRecorder",
  };
}

/**
 * Echo round trip: silences the local track, waits until the remote track is
 * quiet, unsilences it and times how long until the remote track is loud.
 */
export async function echoDelay(localTrack, remoteTrack, timeoutMs = 3000) {
  const ac = ctx();
  await ac.resume();
  const el = document.createElement("audio");
  el.muted = true;
  el.srcObject = new MediaStream([remoteTrack]);
  document.body.append(el);
  el.play().catch(() => {});
  const src = ac.createMediaStreamSource(new MediaStream([remoteTrack]));
  const an = ac.createAnalyser();
  an.fftSize = 256;
  src.connect(an);
  const buf = new Float32Array(an.fftSize);
  const level = () => {
    an.getFloatTimeDomainData(buf);
    let s = 0;
    for (const x of buf) s += x * x;
    return Math.sqrt(s / buf.length);
  };
  // Quiet (or loud) for `ms` in a row, sampled every 5 ms.
  const steady = async (test, ms, what) => {
    let since = null;
    await waitFor(() => {
      if (!test(level())) since = null;
      else since ??= performance.now();
      return since !== null && performance.now() - since >= ms;
    }, timeoutMs, what);
  };
  try {
    await steady((l) => l > 0.01, 100, "the echo to be heard");
    localTrack.enabled = false;
    await steady((l) => l < 0.003, 300, "the echo to go quiet");
    const t = performance.now();
    localTrack.enabled = true;
    await waitFor(() => level() > 0.01, timeoutMs, "the echo to come back");
    return Math.round(performance.now() - t);
  } finally {
    localTrack.enabled = true;
    src.disconnect();
    el.remove();
  }
}

// -- video ------------------------------------------------------------------
/** Plays `track` for `ms` and counts decoded frames; checks the picture is not flat. */
export async function analyseVideo(track, ms = 2000) {
  const v = document.createElement("video");
  v.muted = true;
  v.playsInline = true;
  v.autoplay = true;
  v.srcObject = new MediaStream([track]);
  document.body.append(v);
  await v.play().catch(() => {});
  let frames = 0;
  const onFrame = () => {
    frames++;
    v.requestVideoFrameCallback(onFrame);
  };
  if (v.requestVideoFrameCallback) v.requestVideoFrameCallback(onFrame);
  await new Promise((r) => setTimeout(r, ms));
  let variance = null;
  if (v.videoWidth) {
    const c = document.createElement("canvas");
    c.width = 64;
    c.height = 48;
    const g = c.getContext("2d");
    g.drawImage(v, 0, 0, 64, 48);
    const px = g.getImageData(0, 0, 64, 48).data;
    let sum = 0, sum2 = 0, n = 0;
    for (let i = 0; i < px.length; i += 4) {
      const y = 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
      sum += y;
      sum2 += y * y;
      n++;
    }
    variance = +(sum2 / n - (sum / n) ** 2).toFixed(1);
  }
  const out = { frames, width: v.videoWidth, height: v.videoHeight, variance };
  v.srcObject = null;
  v.remove();
  return out;
}

/** The inbound/outbound RTP stats of a transceiver, by kind. */
export async function rtpStats(pc) {
  const report = await pc.getStats();
  const out = { inbound: [], outbound: [], pair: null };
  const codecs = {};
  report.forEach((s) => {
    if (s.type === "codec") codecs[s.id] = s.mimeType;
  });
  report.forEach((s) => {
    if (s.type === "inbound-rtp") {
      out.inbound.push({
        kind: s.kind, mid: s.mid, packetsReceived: s.packetsReceived, bytesReceived: s.bytesReceived,
        packetsLost: s.packetsLost, framesDecoded: s.framesDecoded, totalAudioEnergy: s.totalAudioEnergy,
        jitterBufferMs: s.jitterBufferEmittedCount ? Math.round((1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount) : undefined,
        codec: codecs[s.codecId],
      });
    } else if (s.type === "outbound-rtp") {
      out.outbound.push({ kind: s.kind, mid: s.mid, packetsSent: s.packetsSent, bytesSent: s.bytesSent, framesEncoded: s.framesEncoded, codec: codecs[s.codecId] });
    } else if (s.type === "candidate-pair" && (s.nominated || s.selected) && s.state === "succeeded") {
      out.pair = { rtt: s.currentRoundTripTime, local: s.localCandidateId, remote: s.remoteCandidateId };
    }
  });
  return out;
}
