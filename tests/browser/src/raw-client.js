// Test page driver for a raw RTCPeerConnection client, shaped like Pipecat's
// old voice-agent example page: one audio and one video transceiver (both
// sendrecv), no data channel, no trickle (the offer waits for ICE gathering),
// and a POST of only {sdp, type} to /api/offer.
import * as probe from "./probe.js";

const T = {
  ...probe,
  pc: null,
  local: null,

  async connect({ server }) {
    const start = probe.now();
    T.local = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    const pc = (T.pc = new RTCPeerConnection());
    pc.addTransceiver(T.local.getAudioTracks()[0], { direction: "sendrecv" });
    pc.addTransceiver(T.local.getVideoTracks()[0], { direction: "sendrecv" });
    // Play the bot's audio as an app would (the jitter buffer only drains while played).
    probe.play(pc.getTransceivers()[0].receiver.track);
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
      setTimeout(resolve, 3000);
    });
    const offerAt = probe.now();
    const response = await fetch(`${server}/api/offer`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`POST /api/offer: ${response.status} ${text}`);
    const answer = JSON.parse(text);
    const answeredAt = probe.now();
    await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
    await probe.waitFor(() => pc.connectionState === "connected", 10000, "connectionState connected");
    return {
      answer,
      ms: { gathering: offerAt - start, answer: answeredAt - offerAt, connected: probe.now() - offerAt },
    };
  },

  remoteTrack(kind) {
    return T.pc.getTransceivers().find((t) => t.receiver.track.kind === kind)?.receiver.track;
  },
  localAudioTrack() {
    return T.local.getAudioTracks()[0];
  },
  close() {
    T.pc?.close();
    T.local?.getTracks().forEach((t) => t.stop());
  },
};
window.T = T;
