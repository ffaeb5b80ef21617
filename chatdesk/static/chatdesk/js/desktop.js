// The live desktop panel: noVNC over the chat's desktop WebSocket (raw RFB), who controls the desktop,
// "Take control" / "Hand back", and reconnection with backoff while the agent is away.
//
// Only the person holding the desktop sends it input: the server drops everyone else's (SPEC §8), and
// switches a connected viewer when the holder changes, so this panel never reconnects for that; it
// only mirrors the holder (noVNC's viewOnly, the buttons, the holder line). It reads the holder from
// GET …/desktop/control when it connects, whenever the chat stream (chat.js, as a "chat-event" DOM
// event) reports a control change or a status change, and every HOLDER_POLL_MS while the page is
// visible (a change made through another chat on the same desktop reaches that chat's stream only).

import { CLOSE, FINAL_CLOSES } from "./closecodes.js";
import { api, backoff, wsUrl } from "./http.js";

const config = JSON.parse(document.getElementById("chat-config").textContent).desktop;
const { default: RFB } = await import(config.novnc);

const panel = document.getElementById("desktop-panel");
const holderEl = document.getElementById("desktop-holder");
const screen = document.getElementById("desktop-screen");
const stateEl = document.getElementById("desktop-state");
const takeoverButton = document.getElementById("desktop-takeover");
const handbackForm = document.getElementById("desktop-handback");
const noteInput = document.getElementById("handback-note");

// What the panel says when the desktop socket is closed without a reason (SPEC §4): for good, or
// while it retries.
const FINAL_TEXT = {
  [CLOSE.NOT_AUTHENTICATED]: "Your session has ended. Reload the page to log in again.",
  [CLOSE.FORBIDDEN_ORIGIN]: "The server refused this page's origin.",
  [CLOSE.NOT_FOUND]: "This chat no longer exists.",
};
const RETRY_TEXT = {
  [CLOSE.NO_AGENT]: "The workspace agent is not connected.",
  [CLOSE.AGENT_UNREACHABLE]: "The workspace agent cannot be reached.",
};

// A WebSocket that has already received its first bytes, handed to noVNC as its channel.
//
// noVNC logs a console error when a socket closes before the RFB handshake; the proxy refuses a
// connection (no agent, agent down) by accepting it and closing with a 4xxx code. So the panel opens
// the socket itself and attaches noVNC only once RFB bytes arrive; until then it buffers them.
class PrimedChannel {
  constructor(ws) {
    this._ws = ws;
    this._buffer = [];
    this._onmessage = null;
    this._onopen = null;
    this._onclose = null;
    this._onerror = null;
    ws.onmessage = (event) => {
      if (this._buffer === null) this._onmessage?.(event);
      else this._buffer.push(event);
    };
    ws.onclose = (event) => this._onclose?.(event);
    ws.onerror = (event) => this._onerror?.(event);
  }

  get binaryType() { return this._ws.binaryType; }
  set binaryType(value) { this._ws.binaryType = value; }
  get protocol() { return this._ws.protocol; }
  get readyState() { return this._ws.readyState; }
  get onopen() { return this._onopen; }
  set onopen(handler) { this._onopen = handler; }
  get onclose() { return this._onclose; }
  set onclose(handler) { this._onclose = handler; }
  get onerror() { return this._onerror; }
  set onerror(handler) { this._onerror = handler; }
  get onmessage() { return this._onmessage; }
  set onmessage(handler) {
    this._onmessage = handler;
    // noVNC attaches, then starts its handshake synchronously; deliver what was buffered right after.
    setTimeout(() => {
      const pending = this._buffer || [];
      this._buffer = null;
      for (const event of pending) this._onmessage?.(event);
    }, 0);
  }

  send(data) { this._ws.send(data); }
  close(...args) { this._ws.close(...args); }
}

const HOLDER_POLL_MS = 15000;

// The holder line, for a person.
function holderText(state, mine) {
  if (mine) return "You control the desktop; the agent waits until you hand it back.";
  if (state.holder === "person") return `${state.user} controls the desktop.`;
  if (state.holder === "model") return "The agent controls the desktop.";
  return "Nobody controls the desktop.";
}

class DesktopPanel {
  constructor() {
    this.control = config.held_by_me; // whether this viewer's user holds the desktop (sends input)
    this.ws = null;
    this.rfb = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.stateRequest = 0; // answers to older requests are ignored
    takeoverButton.addEventListener("click", () => this.takeOver());
    handbackForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.handBack();
    });
    document.addEventListener("chat-event", (event) => {
      const type = event.detail?.type;
      if (type === "control" || type === "status") this.refreshHolder();
    });
    this.showControls();
  }

  // Show who holds the desktop (`state`: the control endpoint's answer) and follow it.
  applyHolder(state) {
    const mine = state.holder === "person" && state.user === panel.dataset.username;
    holderEl.textContent = holderText(state, mine);
    holderEl.dataset.holder = mine ? "me" : state.holder || "";
    holderEl.title = state.since ? `Since ${new Date(state.since).toLocaleString()}` : "";
    if (mine === this.control) return;
    this.control = mine;
    this.showControls();
    if (this.rfb) {
      this.rfb.viewOnly = !mine;
      this.rfb.focusOnClick = mine;
      this.showConnected();
    }
  }

  async refreshHolder() {
    const request = ++this.stateRequest;
    try {
      const state = await api("GET", panel.dataset.controlUrl);
      if (request === this.stateRequest) this.applyHolder(state);
    } catch {
      // The desktop's own state line reports connection trouble; the next event refreshes again.
    }
  }

  setState(text, kind = "") {
    stateEl.textContent = text;
    stateEl.dataset.kind = kind;
  }

  showControls() {
    takeoverButton.hidden = this.control;
    handbackForm.hidden = !this.control;
    screen.classList.toggle("is-controlled", this.control);
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.setState(this.attempt ? "Reconnecting to the desktop…" : "Connecting to the desktop…");
    const url = wsUrl(config.socket); // the server decides whose input passes
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    const channel = new PrimedChannel(ws);
    this.ws = ws;
    ws.addEventListener("message", () => this.attach(ws, channel), { once: true });
    ws.addEventListener("close", (event) => this.closed(ws, event));
  }

  attach(ws, channel) {
    if (ws !== this.ws) return;
    const rfb = new RFB(screen, channel, { shared: true });
    rfb.viewOnly = !this.control;
    rfb.scaleViewport = true;
    rfb.focusOnClick = this.control;
    rfb.background = "transparent";
    rfb.addEventListener("connect", () => {
      if (rfb !== this.rfb) return;
      this.attempt = 0;
      takeoverButton.disabled = false;
      this.showConnected();
      this.refreshHolder(); // it may have changed while this viewer was away
    });
    this.rfb = rfb;
  }

  showConnected() {
    if (this.control) {
      this.setState("You have control. The agent waits until you hand the desktop back.", "control");
      this.rfb?.focus();
    } else {
      this.setState("Live · view only", "live");
    }
  }

  closed(ws, event) {
    if (ws !== this.ws) return; // a socket we replaced on purpose
    this.rfb = null;
    this.ws = null;
    takeoverButton.disabled = true;
    if (FINAL_CLOSES.has(event.code)) {
      this.setState(event.reason || FINAL_TEXT[event.code], "error");
      return;
    }
    const why = RETRY_TEXT[event.code] ? event.reason || RETRY_TEXT[event.code] : "The desktop connection was lost.";
    const delay = backoff(this.attempt++, 1000, 15000);
    this.setState(`${why} Retrying in ${Math.ceil(delay / 1000)} s…`, "waiting");
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  async takeOver() {
    takeoverButton.disabled = true;
    let state;
    try {
      state = await api("POST", config.takeover);
    } catch (error) {
      this.setState(`Could not take control: ${error.message}`, "error");
      takeoverButton.disabled = false;
      return;
    }
    this.stateRequest++; // this answer is newer than any request in flight
    this.applyHolder(state);
    takeoverButton.disabled = !this.rfb;
    noteInput.focus();
  }

  async handBack() {
    const note = noteInput.value.trim();
    const button = handbackForm.querySelector("button");
    button.disabled = true;
    let state;
    try {
      state = await api("POST", config.handback, note ? { note } : {});
    } catch (error) {
      this.setState(`Could not hand back: ${error.message}`, "error");
      this.refreshHolder(); // e.g. 409: someone else took it meanwhile
      return;
    } finally {
      button.disabled = false;
    }
    noteInput.value = "";
    this.stateRequest++;
    this.applyHolder(state);
    takeoverButton.focus();
  }
}

const desktopPanel = new DesktopPanel();
desktopPanel.connect();
desktopPanel.refreshHolder();
setInterval(() => {
  if (document.visibilityState === "visible") desktopPanel.refreshHolder();
}, HOLDER_POLL_MS);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") desktopPanel.refreshHolder();
});
