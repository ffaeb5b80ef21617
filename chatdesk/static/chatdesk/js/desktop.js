// The live desktop panel: noVNC over the chat's desktop WebSocket (raw RFB), view-only by default,
// "Take control" / "Hand back", and reconnection with backoff while the agent is away.

import { CLOSE, FINAL_CLOSES } from "./closecodes.js";
import { api, backoff, wsUrl } from "./http.js";

const config = JSON.parse(document.getElementById("chat-config").textContent).desktop;
const { default: RFB } = await import(config.novnc);

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

class DesktopPanel {
  constructor() {
    this.control = config.held_by_me; // whether this viewer holds the desktop (sends input)
    this.ws = null;
    this.rfb = null;
    this.attempt = 0;
    this.retryTimer = null;
    takeoverButton.addEventListener("click", () => this.takeOver());
    handbackForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.handBack();
    });
    this.showControls();
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
    const url = wsUrl(config.socket + (this.control ? "" : "?view_only=1"));
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
      if (this.control) {
        this.setState("You have control. The agent waits until you hand the desktop back.", "control");
        rfb.focus();
      } else {
        this.setState("Live · view only", "live");
      }
    });
    this.rfb = rfb;
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

  // Replace the current connection by one in the current mode (view-only or control).
  reconnect() {
    const old = this.ws;
    const rfb = this.rfb;
    this.ws = null;
    this.rfb = null;
    if (rfb) rfb.disconnect();
    else if (old) old.close();
    this.attempt = 0;
    this.connect();
  }

  async takeOver() {
    takeoverButton.disabled = true;
    try {
      await api("POST", config.takeover);
    } catch (error) {
      this.setState(`Could not take control: ${error.message}`, "error");
      takeoverButton.disabled = false;
      return;
    }
    this.control = true;
    this.showControls();
    this.reconnect();
    noteInput.focus();
  }

  async handBack() {
    const note = noteInput.value.trim();
    const button = handbackForm.querySelector("button");
    button.disabled = true;
    try {
      await api("POST", config.handback, note ? { note } : {});
    } catch (error) {
      this.setState(`Could not hand back: ${error.message}`, "error");
      return;
    } finally {
      button.disabled = false;
    }
    noteInput.value = "";
    this.control = false;
    this.showControls();
    this.reconnect();
    takeoverButton.focus();
  }
}

new DesktopPanel().connect();
