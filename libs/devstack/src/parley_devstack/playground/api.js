// The platform's HTTP API, same origin: the session cookie goes along by itself; a pasted API key
// goes as `Authorization: Bearer`. Errors come back as the platform's envelope ({code, message}).

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code || "http.error";
  }
}

export function createApi() {
  let key = null;
  return {
    setKey(value) { key = value || null; },
    get key() { return key; },
    // `options.headers` are added last (an own `authorization` wins over the key); `options.text`:
    // the answer's body as text (the SDP answer), not JSON.
    async call(method, path, body, options = {}) {
      const headers = { accept: options.text ? "application/sdp" : "application/json" };
      if (body !== undefined) headers["content-type"] = "application/json";
      if (key) headers.authorization = `Bearer ${key}`;
      Object.assign(headers, options.headers || {});
      const response = await fetch(path, {
        method,
        headers,
        credentials: "same-origin",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await response.text();
      if (options.text && response.ok) return text;
      let data = null;
      try { data = text ? JSON.parse(text) : null; } catch { data = null; }
      if (!response.ok) throw new ApiError(response.status, data);
      return data;
    },
  };
}

// `/realtime` on this origin: the cookie authenticates it (the page is of the platform's origin),
// a pasted key goes as `?token=` (browsers cannot set headers on a WebSocket).
export function realtimeUrl(key) {
  const url = new URL("/realtime", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (key) url.searchParams.set("token", key);
  return url.toString();
}
