// Parley playground: sign in, pick an agent, chat over /realtime, talk over WebRTC (voice.js), see
// turn timings and traces, read and start the agent's adversarial tests. Plain ES modules, no build
// step, no CDN.
import { createApi, realtimeUrl } from "./api.js";
import { appendLine } from "./transcript.js";
import { createVoice } from "./voice.js";

const $ = (id) => document.getElementById(id);
const api = createApi();
// `pending`: the turns sent and not complete yet, oldest first. The runtime takes inputs in order,
// so text and `turn_complete` belong to the oldest one.
const state = { agents: [], ws: null, conversation: null, pending: [], turns: 0, bubble: null, tracesOn: false };

function show(id, visible) { $(id).hidden = !visible; }
function say(id, text) { $(id).textContent = text || ""; }
function explain(error) { return error?.code ? `${error.message} (${error.code})` : String(error?.message || error); }

// ------------------------------------------------------------------------------ signing in

async function afterSignIn(label) {
  say("who", label);
  say("signin-error", "");
  show("signin", false);
  show("sign-out", true);
  for (const id of ["agents", "chat", "voice", "tests"]) show(id, true);
  await loadAgents();
  $("agent").focus();
}

async function whoAmI() {
  try {
    const me = await api.call("GET", "/users/me");
    return `Signed in as ${me.email}${api.key ? " (API key)" : ""}.`;
  } catch (error) {
    if (api.key && error.status === 403) return "Using an organization's API key.";
    throw error;
  }
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    api.setKey(null);
    await api.call("POST", "/auth/sessions", { email: $("email").value, password: $("password").value });
    await afterSignIn(await whoAmI());
  } catch (error) { say("signin-error", explain(error)); }
});

$("signup-button").addEventListener("click", async () => {
  try {
    api.setKey(null);
    const name = $("name").value || $("email").value.split("@")[0];
    await api.call("POST", "/auth/signup", { email: $("email").value, password: $("password").value, name });
    await afterSignIn(await whoAmI());
  } catch (error) { say("signin-error", explain(error)); }
});

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  api.setKey($("api-key").value.trim());
  $("api-key").value = "";
  try { await afterSignIn(await whoAmI()); } catch (error) { api.setKey(null); say("signin-error", explain(error)); }
});

$("sign-out").addEventListener("click", async () => {
  disconnect();
  voice.stop();
  if (!api.key) { try { await api.call("DELETE", "/auth/sessions/me"); } catch { /* already gone */ } }
  api.setKey(null);
  window.location.reload();
});

// ------------------------------------------------------------------------------ agents

async function loadAgents() {
  const found = [];
  try {
    const page = await api.call("GET", "/users/me/agents?limit=100");
    for (const agent of page.items) found.push({ ...agent, owner: "personal" });
  } catch (error) { if (error.status !== 403) throw error; }
  try {
    for (const org of await api.call("GET", "/orgs")) {
      const page = await api.call("GET", `/orgs/${encodeURIComponent(org.slug)}/agents?limit=100`);
      for (const agent of page.items) found.push({ ...agent, owner: org.name });
    }
  } catch (error) { say("agent-info", explain(error)); }
  state.agents = found;
  const select = $("agent");
  select.replaceChildren(...found.map((agent) => {
    const option = document.createElement("option");
    option.value = agent.id;
    option.textContent = `${agent.config.name} — ${agent.status}, ${agent.owner}`;
    return option;
  }));
  say("agent-info", found.length ? `${found.length} agent(s).` : "You have no agents yet: create one (see the README).");
  $("connect").disabled = found.length === 0;
  await agentChanged();
}

function currentAgent() { return state.agents.find((a) => a.id === $("agent").value) || null; }

const voice = createVoice({
  api,
  $,
  agentId: () => currentAgent()?.id || null,
  agentLabel: () => currentAgent()?.config.name || "the agent",
  tracesOn: () => state.tracesOn,
});

async function agentChanged() {
  disconnect();
  voice.agentChanged();
  await loadTests();
}

$("agent").addEventListener("change", agentChanged);
$("refresh-agents").addEventListener("click", loadAgents);

// ------------------------------------------------------------------------------ the conversation

function line(kind, who, text) {
  return appendLine($("transcript"), kind, who, text);
}

function setStreaming(on) {
  $("cancel").disabled = !on;
}

function setConnected(on) {
  $("message").disabled = !on;
  $("send").disabled = !on;
  $("end").disabled = !on;
  $("connect").disabled = on || !currentAgent();
  $("agent").disabled = on;
  if (!on) setStreaming(false);
}

function startTurn(text) {
  state.turns += 1;
  state.pending.push({ n: state.turns, text, sent: performance.now(), first: null, cancelled: false });
}

function agentText(chunk, streamed) {
  const turn = state.pending[0];
  if (turn && turn.first === null) turn.first = performance.now() - turn.sent;
  if (!streamed) { state.bubble = null; line("agent", "Agent", chunk); return; }
  if (!state.bubble) state.bubble = line("agent", "Agent", "");
  state.bubble.textContent += chunk;
  setStreaming(true);
}

function finishTurn(outcome) {
  const turn = state.pending.shift();
  setStreaming(false);
  state.bubble = null;
  if (!turn) return;
  const row = document.createElement("tr");
  const cells = [
    String(turn.n), turn.text, turn.first === null ? "—" : String(Math.round(turn.first)),
    String(Math.round(performance.now() - turn.sent)), turn.cancelled ? "cancelled" : outcome,
  ];
  for (const value of cells) { const td = document.createElement("td"); td.textContent = value; row.append(td); }
  $("timings").append(row);
}

function handle(event) {
  switch (event.type) {
    case "handshake_ok":
      state.conversation = event.conversation_id;
      say("conn-status", "Connected.");
      setConnected(true);
      if (state.tracesOn) {
        $("trace-link").href = `/traces?conversation_id=${encodeURIComponent(event.conversation_id)}`;
        show("trace-link", true);
      }
      startTurn("(greeting)");
      $("message").focus();
      break;
    case "handshake_error":
      say("chat-error", `The agent refused the conversation: ${event.reason}`);
      break;
    case "text_delta": agentText(event.chunk, true); break;
    case "text_full": agentText(event.content, false); break;
    case "turn_complete": finishTurn("complete"); break;
    case "flow_complete": line("event", null, "The flow is complete."); break;
    case "transfer": line("event", null, `Transfer to agent ${event.agent_id}.`); break;
    case "error":
      say("chat-error", `${event.message} (${event.code})`);
      line("event", null, `Error: ${event.code}`);
      break;
    case "session_closed":
      while (state.pending.length) finishTurn("closed");
      line("event", null, `Conversation closed: ${event.reason}.`);
      break;
    default: break; // tick, signal, audio: nothing to show in the text chat
  }
}

function disconnect() {
  if (state.ws) { state.ws.onclose = null; state.ws.close(); state.ws = null; }
  state.conversation = null;
  state.pending = [];
  state.bubble = null;
  setConnected(false);
  show("trace-link", false);
  say("conn-status", "Not connected.");
}

$("connect").addEventListener("click", () => {
  const agent = currentAgent();
  if (!agent) return;
  disconnect();
  $("transcript").replaceChildren();
  $("timings").replaceChildren();
  say("chat-error", "");
  state.turns = 0;
  say("conn-status", "Connecting…");
  const ws = new WebSocket(realtimeUrl(api.key));
  state.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({
    type: "handshake", agent_id: agent.id, channel: "playground", render_directive: "plain text, no markdown",
  }));
  ws.onmessage = (message) => {
    if (typeof message.data !== "string") return; // audio frames: not in the text chat
    try { handle(JSON.parse(message.data)); } catch (error) { say("chat-error", String(error)); }
  };
  ws.onclose = (closed) => {
    state.ws = null;
    setConnected(false);
    say("conn-status", `Disconnected (${closed.code}${closed.reason ? `: ${closed.reason}` : ""}).`);
  };
});

$("say-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text || !state.ws) return;
  state.bubble = null; // the agent's next words start a new line
  line("user", "You", text);
  startTurn(text);
  state.ws.send(JSON.stringify({ type: "input_text", text }));
  $("message").value = "";
});

function cancel() {
  if (!state.ws || $("cancel").disabled) return;
  if (state.pending.length) state.pending[0].cancelled = true;
  state.ws.send(JSON.stringify({ type: "cancel" }));
  setStreaming(false);
  $("message").focus();
}

$("cancel").addEventListener("click", cancel);
$("message").addEventListener("keydown", (event) => { if (event.key === "Escape") cancel(); });
$("end").addEventListener("click", () => { if (state.ws) state.ws.send(JSON.stringify({ type: "end" })); });

// ------------------------------------------------------------------------------ adversarial tests

function renderRuns(runs) {
  $("test-runs").replaceChildren(...runs.map((run) => {
    const item = document.createElement("li");
    const status = document.createElement("span");
    status.className = run.status === "error" ? "error-status" : run.status;
    status.textContent = run.status;
    item.append(`${run.test_name}: `, status, ` (${run.turns_done}/${run.max_turns} turns)`);
    const failed = (run.remarks || []).filter((r) => r.verdict === "fail");
    if (failed.length) {
      const list = document.createElement("ul");
      for (const remark of failed) {
        const li = document.createElement("li");
        li.textContent = `${remark.severity}: ${remark.criterion} — ${remark.explanation}`;
        list.append(li);
      }
      item.append(list);
    }
    return item;
  }));
}

async function loadTests() {
  const agent = currentAgent();
  say("tests-error", "");
  if (!agent) { say("tests-summary", "No agent selected."); renderRuns([]); return null; }
  try {
    const result = await api.call("GET", `/agents/${agent.id}/adversarial-tests/result`);
    const counts = `${result.passed} passed, ${result.failed} failed, ${result.errored} errored of ${result.total}`;
    say("tests-summary", result.status === "not_run"
      ? "Latest result: no test run yet."
      : `Latest result: ${result.status} (${counts}; version ${result.batch_version}).`);
    if (result.batch_id) {
      const runs = await api.call("GET", `/adversarial-tests/runs?agent_id=${agent.id}&batch_id=${result.batch_id}&limit=50`);
      renderRuns(runs.items);
    } else {
      renderRuns([]);
    }
    return result;
  } catch (error) {
    say("tests-summary", "Test results are not available.");
    say("tests-error", explain(error));
    return null;
  }
}

$("run-tests").addEventListener("click", async () => {
  const agent = currentAgent();
  if (!agent) return;
  say("tests-error", "");
  $("run-tests").disabled = true;
  try {
    await api.call("POST", "/adversarial-tests/run", { agent_id: agent.id });
    say("tests-summary", "Tests started…");
    const deadline = Date.now() + 300_000;
    for (;;) {
      const result = await loadTests();
      if (!result || result.status !== "running" || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  } catch (error) {
    say("tests-error", explain(error));
  } finally {
    $("run-tests").disabled = false;
  }
});

$("generate-tests").addEventListener("click", async () => {
  const agent = currentAgent();
  if (!agent) return;
  try {
    const made = await api.call("POST", `/agents/${agent.id}/adversarial-tests/generate`);
    say("tests-summary", `${made.created.length} starter test(s) created, ${made.existing.length} already there.`);
  } catch (error) { say("tests-error", explain(error)); }
});

// ------------------------------------------------------------------------------ start

async function start() {
  try {
    const traces = await fetch("/traces.json?limit=1", { credentials: "same-origin" });
    state.tracesOn = traces.ok && Array.isArray(await traces.json());
  } catch { state.tracesOn = false; }
  try { await afterSignIn(await whoAmI()); } catch { $("email").focus(); }
}

start();
