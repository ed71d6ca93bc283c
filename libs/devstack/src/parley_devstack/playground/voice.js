// The voice half of the playground: a WebRTC call to the agent (docs/webrtc.md).
// The microphone goes out as the call's audio track, the agent's voice comes back as the remote
// track (played by an <audio> element), and the call's events (transcripts, the agent's text, turn
// boundaries, errors, the end) arrive on a data channel as JSON objects. The flow is the ServiceAi
// client's: POST /api/realtime-token → GET /api/csrf-token → POST /api/realtime/webrtc with the
// offer, the last two with the minted clientSecret as the bearer credential.

import { appendLine } from "./transcript.js";

// The session's `tick` arrives every second: this long without any message means the call is lost
// (the media worker died; nothing else could tell the page).
const SILENCE_LOST_MS = 5000;

export function createVoice({ api, $, agentId, agentLabel, tracesOn }) {
  const call = { agent: null, pc: null, channel: null, mic: null, lastHeard: 0, watchdog: null, meter: null, interim: null, bubble: null, ended: true };

  function say(id, text) { $(id).textContent = text || ""; }

  function line(kind, who, text) {
    return appendLine($("voice-transcript"), kind, who, text);
  }

  function setInCall(on) {
    $("talk").disabled = on || !agentId();
    $("hang-up").disabled = !on;
    $("voice-cancel").disabled = !on;
  }

  function heardYou(text, final) {
    if (!call.interim) {
      call.interim = line("user", "You", "");
      call.interim.parentElement.classList.add("interim");
    }
    call.interim.textContent = text;
    if (final) {
      call.interim.parentElement.classList.remove("interim");
      call.interim = null;
      call.bubble = null; // the agent's answer starts a new line
    }
  }

  function agentSays(text, streamed) {
    if (!streamed) { call.bubble = null; line("agent", "Agent", text); return; }
    if (!call.bubble) call.bubble = line("agent", "Agent", "");
    call.bubble.textContent += text;
  }

  function onSignal(name, data) {
    switch (name) {
      case "speech_started":
        if (!call.interim) heardYou("…", false);
        break;
      case "transcript":
        heardYou(data?.text || "", Boolean(data?.final));
        break;
      case "no_speech":
        if (call.interim) { call.interim.parentElement.remove(); call.interim = null; }
        break;
      case "barge_in":
        call.bubble = null;
        line("event", null, "You interrupted the agent.");
        break;
      default: break; // audio_format, speech_stopped: nothing to show
    }
  }

  function onEvent(event) {
    call.lastHeard = performance.now();
    switch (event.type) {
      case "ready":
        say("voice-status", "In call: speak now.");
        $("voice-transcript").dataset.conversation = event.conversation_id;
        if (tracesOn()) {
          $("voice-trace-link").href = `/traces?conversation_id=${encodeURIComponent(event.conversation_id)}`;
          $("voice-trace-link").hidden = false;
        }
        break;
      case "signal": onSignal(event.name, event.data); break;
      case "text_delta": agentSays(event.chunk, true); break;
      case "text_full": agentSays(event.content, false); break;
      case "turn_complete": call.bubble = null; break;
      case "error":
        say("voice-error", `${event.message} (${event.code})`);
        line("event", null, `Error: ${event.code}`);
        break;
      case "session_closed":
        line("event", null, `Call ended: ${event.reason}.`);
        hangUp(`Call ended (${event.reason}).`);
        break;
      default: break; // tick, flow_complete, transfer
    }
  }

  // The agent's voice: played by the <audio> element; its level drawn on a meter (and its peak
  // kept, which the browser test reads).
  function listen(stream) {
    const audio = $("voice-audio");
    audio.srcObject = stream;
    audio.play().catch(() => say("voice-error", "The browser did not start playback: press Talk again."));
    try {
      const context = new AudioContext();
      const analyser = context.createAnalyser();
      analyser.fftSize = 1024;
      context.createMediaStreamSource(stream).connect(analyser);
      const samples = new Float32Array(analyser.fftSize);
      const meter = $("voice-level");
      meter.dataset.peak = "0";
      call.meter = setInterval(() => {
        analyser.getFloatTimeDomainData(samples);
        let sum = 0;
        for (const s of samples) sum += s * s;
        const level = Math.min(1, Math.sqrt(sum / samples.length) * 4);
        meter.value = level;
        if (level > Number(meter.dataset.peak)) meter.dataset.peak = level.toFixed(3);
      }, 100);
      call.context = context;
    } catch { /* no Web Audio: playback still works */ }
  }

  async function gathered(pc) {
    // aiortc takes the offer whole (no trickle ICE): wait for the candidates, at most 3 s.
    if (pc.iceGatheringState === "complete") return;
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 3000);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
  }

  async function talk() {
    const agent = agentId();
    if (!agent || !call.ended) return;
    call.ended = false;
    call.agent = agent;
    setInCall(true);
    say("voice-error", "");
    $("voice-transcript").replaceChildren();
    $("voice-trace-link").hidden = true;
    try {
      say("voice-status", "Asking for the microphone…");
      call.mic = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
      say("voice-status", "Calling…");
      const minted = await api.call("POST", "/api/realtime-token", {}, { headers: { "X-Parley-Agent": agent } });
      if (!minted.useWebRTC) throw new Error(minted.message || "This server does not answer WebRTC calls.");
      const bearer = { authorization: `Bearer ${minted.clientSecret}` };
      const csrf = await api.call("GET", "/api/csrf-token", undefined, { headers: bearer });

      const pc = new RTCPeerConnection();
      call.pc = pc;
      for (const track of call.mic.getAudioTracks()) pc.addTrack(track, call.mic);
      const channel = pc.createDataChannel("events");
      call.channel = channel;
      channel.onmessage = (message) => {
        if (call.channel !== channel) return; // a call already hung up: its late events are not ours
        try { onEvent(JSON.parse(message.data)); } catch (error) { say("voice-error", String(error)); }
      };
      channel.onclose = () => { if (!call.ended) hangUp("The call's connection closed."); };
      pc.ontrack = (event) => listen(event.streams[0] || new MediaStream([event.track]));
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === "failed" && !call.ended) {
          say("voice-error", "The call's connection failed.");
          hangUp("Call failed.");
        }
      };
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      const answer = await api.call("POST", "/api/realtime/webrtc", { sdp: pc.localDescription.sdp },
        { headers: { ...bearer, "X-CSRF-Token": csrf.token }, text: true });
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      say("voice-status", `Connecting to ${agentLabel()}…`);
      call.lastHeard = performance.now();
      call.watchdog = setInterval(() => {
        if (!call.ended && performance.now() - call.lastHeard > SILENCE_LOST_MS) {
          say("voice-error", "The call was lost: no word from the server for 5 seconds.");
          hangUp("Call lost.");
        }
      }, 1000);
      $("hang-up").focus();
    } catch (error) {
      say("voice-error", error?.code ? `${error.message} (${error.code})` : String(error?.message || error));
      hangUp("Not in a call.");
    }
  }

  function hangUp(status) {
    const { pc, channel, mic } = call;
    call.ended = true;
    if (channel && channel.readyState === "open" && !status) {
      // Ask the session to end: `session_closed` comes back, then the call closes.
      channel.send(JSON.stringify({ type: "end" }));
      say("voice-status", "Hanging up…");
      call.ended = false;
      return;
    }
    clearInterval(call.watchdog);
    clearInterval(call.meter);
    if (call.context) call.context.close().catch(() => {});
    call.pc = call.channel = call.mic = call.context = null;
    call.interim = call.bubble = null;
    if (channel) channel.onclose = null;
    if (pc) pc.close();
    if (mic) for (const track of mic.getTracks()) track.stop();
    $("voice-audio").srcObject = null;
    $("voice-level").value = 0;
    say("voice-status", status || "Not in a call.");
    setInCall(false);
    $("talk").focus();
  }

  function cancel() {
    if (call.channel?.readyState === "open") {
      call.channel.send(JSON.stringify({ type: "cancel" }));
      call.bubble = null;
    }
  }

  $("talk").addEventListener("click", talk);
  $("hang-up").addEventListener("click", () => hangUp());
  $("voice-cancel").addEventListener("click", cancel);
  $("voice").addEventListener("keydown", (event) => { if (event.key === "Escape") cancel(); });

  return {
    agentChanged() {
      // Only another agent ends the call (the list is refreshed while a call may be running).
      if (!call.ended && agentId() !== call.agent) hangUp("Not in a call.");
      if (call.ended) setInCall(false);
    },
    stop() { if (!call.ended) hangUp("Not in a call."); },
  };
}
