// Drives a Parley agent session with the published @octavus/server-sdk, unchanged.
// Used by tests/e2e/test_octavus_server_sdk.py, which copies this file next to the installed
// node_modules and runs it with: BASE_URL, API_KEY, AGENT_ID, USER_MESSAGE in the environment.
// Prints one JSON document: what the SDK yielded and every raw `data:` line it received, each
// checked with the SDK's own stream-event schema (the SDK drops events that fail it silently).
import { OctavusClient, safeParseStreamEvent } from "@octavus/server-sdk";

const { BASE_URL, API_KEY, AGENT_ID, USER_MESSAGE } = process.env;
const raw = []; // every data line of every trigger response
const reads = [];
const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init) => {
  const response = await realFetch(input, init);
  if (!String(input).endsWith("/trigger") || !response.body) return response;
  const [forSdk, forUs] = response.body.tee();
  reads.push(new Response(forUs).text().then((text) => {
    for (const line of text.split("\n")) if (line.startsWith("data: ")) raw.push(line.slice(6));
  }));
  return new Response(forSdk, { status: response.status, statusText: response.statusText, headers: response.headers });
};

const client = new OctavusClient({ baseUrl: BASE_URL, apiKey: API_KEY });

if (process.env.MODE === "expired") {
  // The session's state has expired: both reads say so; restore brings the saved messages back.
  const id = process.env.SESSION_ID;
  const expired = [await client.agentSessions.get(id), await client.agentSessions.getMessages(id)];
  const restore = await client.agentSessions.restore(id, JSON.parse(process.env.MESSAGES), { COMPANY: "Acme" });
  const ui = await client.agentSessions.getMessages(id);
  console.log(JSON.stringify({ expired, restore, ui }));
  process.exit(0);
}
const toolCalls = [];
const sessionId = await client.agentSessions.create(AGENT_ID, { COMPANY: "Acme" });
const session = client.agentSessions.attach(sessionId, {
  tools: {
    // The one server-side tool: runs here, in the consumer's server, as with Octavus.
    "get-account": async (args) => {
      toolCalls.push(args);
      return { name: "Ada", plan: "pro" };
    },
  },
});

async function run(request) {
  const events = [];
  for await (const event of session.execute(request)) events.push(event);
  return events;
}

const chat = await run({ type: "trigger", triggerName: "user-message", input: { USER_MESSAGE } });
const unknown = await run({ type: "trigger", triggerName: "no-such-trigger", input: {} });
await Promise.all(reads);
const rejected = [];
for (const line of raw) {
  if (line === "[DONE]") continue;
  const parsed = safeParseStreamEvent(JSON.parse(line));
  if (!parsed.success) rejected.push({ line, error: String(parsed.error) });
}
const state = await client.agentSessions.get(sessionId); // zod-parsed by the SDK
const ui = await client.agentSessions.getMessages(sessionId);
const restore = await client.agentSessions.restore(sessionId, ui.messages);
console.log(JSON.stringify({ sessionId, chat, unknown, raw, rejected, toolCalls, state, ui, restore }));
