// fetch() helpers for the REST API with the session: the CSRF token goes in X-CSRFToken.

export function csrfToken() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "csrftoken") return decodeURIComponent(rest.join("="));
  }
  return "";
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

// Return the parsed JSON answer of `method url` (null for 204); throw ApiError with the server's detail.
export async function api(method, url, body) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin" };
  if (method !== "GET") headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    throw new ApiError(response.status, describeError(data) || `Request failed (HTTP ${response.status}).`);
  }
  return data;
}

function describeError(data) {
  if (!data || typeof data !== "object") return "";
  if (typeof data.detail === "string") return data.detail;
  return Object.entries(data).map(([field, errors]) => `${field}: ${[].concat(errors).join(" ")}`).join("; ");
}

// Return the ws:// or wss:// URL of a same-origin path.
export function wsUrl(path) {
  const url = new URL(path, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

// Exponential backoff with jitter: attempt 0 → ~base ms, capped at max ms.
export function backoff(attempt, base = 500, max = 10000) {
  const delay = Math.min(max, base * 2 ** attempt);
  return Math.round(delay * (0.75 + Math.random() * 0.5));
}
