// The chat page: messages streamed live over the chat's stream WebSocket, tool calls with their
// screenshots (opened with the action's click point drawn; a running command's output as it is
// printed), child chats with live status and cost, interrupt, resume, compaction, the budget, the message
// box, and for a computer-use chat the player of its recordings (a marker per action; an action's button
// in the chat seeks the video to it), a help banner when this chat (or, on a root's page, one of its agents)
// asks a person for help, and a card per action waiting for approval (this chat's; on a root's page, its
// tree's), decided from here and updated live.
//
// Model and tool output is untrusted text: it only ever reaches the page through textContent.

import { CLOSE, FINAL_CLOSES } from "./closecodes.js";
import { api, backoff, wsUrl } from "./http.js";

const config = JSON.parse(document.getElementById("chat-config").textContent);
const chat = config.chat;
const urls = config.urls;

const ACTIVE = new Set(["pending", "running"]);
const RESUMABLE = new Set(["interrupted", "budget"]);
const STATUS_WORDS = {
  waiting: "Waiting",
  pending: "Pending",
  running: "Running",
  paused: "Paused",
  completed: "Completed",
  error: "Error",
};
// What the page says when the stream is closed for good without a reason (see SPEC §4).
const FINAL_TEXT = {
  [CLOSE.NOT_AUTHENTICATED]: "Your session has ended. Reload the page to log in again.",
  [CLOSE.FORBIDDEN_ORIGIN]: "The server refused this page's origin.",
  [CLOSE.NOT_FOUND]: "This chat no longer exists.",
};

const $ = (id) => document.getElementById(id);
const messagesEl = $("messages");
const numberFormat = new Intl.NumberFormat();

// ---- small DOM helpers -------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function statusBadge(status) {
  const badge = el("span", `badge badge--${status}`, STATUS_WORDS[status] || status);
  badge.dataset.status = status;
  return badge;
}

const ZERO_ID = "00000000-0000-0000-0000-000000000000";

function chatPageUrl(id) {
  return urls.page.replace(ZERO_ID, id);
}

function nearBottom() {
  return messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < 80;
}

// Run `change`, keeping the message list pinned to the bottom if the reader was there.
function appending(change) {
  const stick = nearBottom();
  change();
  if (stick) messagesEl.scrollTop = messagesEl.scrollHeight;
}

function truncate(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

// "left_click (640, 400)", "type "hello"", "prompt: Open the browser…": a tool input in one short line.
function summarizeInput(input) {
  if (input === null || input === undefined) return "";
  if (typeof input !== "object") return truncate(String(input), 100);
  const parts = [];
  const rest = { ...input };
  if (typeof rest.action === "string") {
    parts.push(rest.action);
    delete rest.action;
  }
  if (Array.isArray(rest.coordinate)) {
    parts.push(`(${rest.coordinate.join(", ")})`);
    delete rest.coordinate;
  }
  if (typeof rest.text === "string") {
    parts.push(JSON.stringify(rest.text));
    delete rest.text;
  }
  for (const [key, value] of Object.entries(rest)) {
    parts.push(`${key}: ${typeof value === "string" ? value : JSON.stringify(value)}`);
  }
  return truncate(parts.join(" ").replace(/\s+/g, " "), 100);
}

// "$12.34", "$0.50", "$0.0123": cents, or 1/100 cent when that matters (chats/pricing.py format_usd).
function formatUsd(value) {
  const amount = Number(value) || 0;
  const cents = Math.round(amount * 100) / 100;
  const places = Math.abs(amount) >= 1 || Math.abs(cents - amount) < 1e-9 ? 2 : 4;
  return `$${amount.toFixed(places)}`;
}

// The chat's cost; for a root, its tree's against the budget (chats/views.py cost_text).
function costText(data) {
  let text = formatUsd(data.cost_usd);
  if (data.tree_cost_usd !== null && data.tree_cost_usd !== undefined) {
    if (Number(data.tree_cost_usd) !== Number(data.cost_usd)) text += ` · with its agents ${formatUsd(data.tree_cost_usd)}`;
    text += data.budget_usd === null || data.budget_usd === undefined
      ? " · no budget" : ` of ${formatUsd(data.budget_usd)} budget`;
  }
  return text;
}

function formatTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// ---- images ---------------------------------------------------------------------------------------

const viewer = $("image-viewer");
const viewerImg = $("image-viewer-img");
const viewerPoint = $("image-viewer-point");
const viewerCaption = $("image-viewer-caption");

// The point an action clicked (or moved to), in the screenshot's own pixels: screenshots are taken at the
// size declared to the model, the space of its coordinates.
function clickPoint(input) {
  const point = input && Array.isArray(input.coordinate) ? input.coordinate : null;
  return point && point.length === 2 && point.every((v) => typeof v === "number") ? { x: point[0], y: point[1] } : null;
}

function placePoint(point) {
  viewerPoint.hidden = true;
  if (!point || !viewerImg.naturalWidth) return;
  viewerPoint.style.left = `${(100 * (point.x + 0.5)) / viewerImg.naturalWidth}%`;
  viewerPoint.style.top = `${(100 * (point.y + 0.5)) / viewerImg.naturalHeight}%`;
  viewerPoint.hidden = false;
}

function openViewer(url, description, point) {
  viewerPoint.hidden = true;
  viewerCaption.hidden = !point;
  viewerCaption.textContent = point ? `The red circle marks the action's point (${point.x}, ${point.y}).` : "";
  viewerImg.onload = () => placePoint(point);
  viewerImg.src = url;
  viewerImg.alt = description;
  viewer.showModal();
  if (viewerImg.complete) placePoint(point);
}

function thumbnail(part, description, point = null) {
  const link = el("a", "thumb");
  link.href = part.url;
  link.target = "_blank";
  link.rel = "noopener";
  const img = el("img");
  img.src = part.url;
  img.alt = description;
  img.loading = "lazy";
  img.decoding = "async";
  link.append(img);
  link.addEventListener("click", (event) => {
    if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || !viewer.showModal) return;
    event.preventDefault();
    openViewer(part.url, description, point);
  });
  return link;
}

viewer.addEventListener("click", (event) => {
  if (event.target === viewer) viewer.close(); // a click on the backdrop closes the viewer
});

// ---- messages ---------------------------------------------------------------------------------------

const seen = new Set();
const toolCalls = new Map(); // tool_use_id → {element, name, summary, done}
let usage = { ...(chat.usage || {}) }; // the server's sums: set from the chat and its usage events
let lastId = 0;

function messageShell(role, createdAt) {
  const article = el("article", `msg msg--${role}`);
  const head = el("header", "msg-head");
  const who = { user: "You", assistant: "Assistant", tool: "Tool", system: "Summary" }[role] || role;
  head.append(el("span", "msg-role", who));
  if (createdAt) {
    const time = el("time", "msg-time", formatTime(createdAt));
    time.dateTime = createdAt;
    head.append(time);
  }
  article.append(head);
  return article;
}

function toolCallElement(name, summary, fullInput) {
  const box = el("div", "tool");
  const details = el("details", "tool-details");
  const summaryEl = el("summary", "tool-summary");
  summaryEl.append(el("span", "tool-name", name), el("span", "tool-input", summary));
  details.append(summaryEl);
  const pre = el("pre", "tool-json", fullInput);
  details.append(pre);
  box.append(details, el("div", "tool-result"));
  return box;
}

function renderToolUse(part) {
  const summary = summarizeInput(part.input);
  const box = toolCallElement(part.name || "tool", summary, JSON.stringify(part.input ?? {}, null, 2));
  box.dataset.toolUseId = part.id || "";
  if (part.id) toolCalls.set(part.id, { element: box, name: part.name || "tool", summary, input: part.input });
  if (part.id) addSeekButton(part.id);
  return box;
}

function resultText(part) {
  if (typeof part.content === "string") return part.content;
  if (!Array.isArray(part.content)) return "";
  return part.content.filter((p) => p && p.type === "text").map((p) => p.text || "").join("\n");
}

// Fill a tool call's result area: its text (short, expandable) and screenshot thumbnails.
function fillToolResult(container, part, call) {
  container.replaceChildren();
  const box = container.closest(".tool");
  if (part.is_error && box) box.classList.add("tool--error");
  const text = resultText(part).trim();
  const child = part.is_error ? null : childChat(text);
  if (child) {
    // spawn_computer_use_agent / wait_agent results: a link to the child chat, its status, its report.
    const line = el("p", "tool-child");
    const link = el("a", null, child.title || "Child chat");
    link.href = chatPageUrl(child.chat_id);
    line.append(link);
    if (child.status && "report" in child) line.append(" ", statusBadge(child.status));
    container.append(line);
    if (typeof child.report === "string" && child.report) appendText(container, child.report, false);
  } else if (text) {
    appendText(container, text, part.is_error);
  }
  const images = Array.isArray(part.content) ? part.content.filter((p) => p && p.type === "image" && p.url) : [];
  if (images.length) {
    const row = el("div", "thumbs");
    const what = call ? `${call.name} ${call.summary}`.trim() : "tool call";
    const point = call ? clickPoint(call.input) : null;
    for (const image of images) row.append(thumbnail(image, `Screenshot after ${what}`, point));
    container.append(row);
  }
}

function appendText(container, text, isError) {
  const shown = truncate(text, 240);
  container.append(el("p", "tool-result-text", isError ? `Error: ${shown}` : shown));
  if (shown !== text) {
    const more = el("details", "tool-result-more");
    more.append(el("summary", null, "Full output"), el("pre", "tool-json", text));
    container.append(more);
  }
}

function childChat(text) {
  if (!text.startsWith("{")) return null;
  try {
    const data = JSON.parse(text);
    return data && typeof data.chat_id === "string" && /^[0-9a-f-]{36}$/.test(data.chat_id) ? data : null;
  } catch {
    return null;
  }
}

function renderMessage(message) {
  const article = messageShell(message.role, message.created_at);
  article.dataset.messageId = String(message.id);
  const body = el("div", "msg-body");
  for (const part of message.content || []) {
    if (!part || typeof part !== "object") continue;
    if (part.type === "text" && part.text) {
      body.append(el("div", "msg-text", part.text));
    } else if (part.type === "tool_use") {
      body.append(renderToolUse(part));
    } else if (part.type === "tool_result") {
      const call = toolCalls.get(part.tool_use_id);
      if (call) {
        call.done = true; // later output pieces, if any straggle in, must not replace the result
        fillToolResult(call.element.querySelector(".tool-result"), part, call);
      } else {
        const box = toolCallElement("result", "", "");
        box.querySelector("details").remove();
        fillToolResult(box.querySelector(".tool-result"), part, null);
        body.append(box);
      }
    } else if (part.type === "image" && part.url) {
      body.append(thumbnail(part, "Image"));
    } else if (part.type === "summary" && part.text) {
      // A compaction: the model's summary replaces the messages above it in what the model is sent.
      const box = el("details", "msg-summary");
      box.append(el("summary", null, "Earlier messages were summarized for the model"));
      box.append(el("div", "msg-text", part.text));
      body.append(box);
    }
  }
  if (!body.childElementCount) return null; // e.g. tool results shown under their calls
  article.append(body);
  return article;
}

// `fromStream`: the stream delivers messages in id order, so only its messages move the reconnect cursor.
// A message shown from a POST response must not: a message stored before it (an assistant reply the
// socket had not delivered when it dropped) would then be skipped by the reconnect's `after_id`.
function addMessage(message, { fromStream = true } = {}) {
  if (!message || typeof message.id !== "number") return;
  if (fromStream) lastId = Math.max(lastId, message.id);
  if (seen.has(message.id)) return;
  seen.add(message.id);
  if (message.role === "assistant") dropDraft();
  appending(() => {
    const article = renderMessage(message);
    if (!article) return;
    // In id order, whichever way a message arrived first.
    const later = [...messagesEl.querySelectorAll("article[data-message-id]")].find(
      (other) => Number(other.dataset.messageId) > message.id,
    );
    messagesEl.insertBefore(article, later || null);
  });
}

function showCost(data) {
  $("chat-cost").textContent = costText(data);
}

// A usage event, or the chat's JSON: its sums, its cost (and for a root, the tree's and the budget).
// Sums only grow: a JSON read before the latest event (the refresh on reconnect) must not undo it.
let shownCost = { cost_usd: "0", tree_cost_usd: null, budget_usd: null };
function applyUsage(data) {
  const older = Number(data.cost_usd) < Number(shownCost.cost_usd)
    || Number(data.tree_cost_usd ?? 0) < Number(shownCost.tree_cost_usd ?? 0);
  if (!older) {
    if (data.usage) usage = { ...data.usage };
    shownCost = { ...shownCost, cost_usd: data.cost_usd, tree_cost_usd: data.tree_cost_usd };
  }
  if ("budget_usd" in data) shownCost.budget_usd = data.budget_usd;
  showUsage();
  showCost(shownCost);
  if (budgetInput && "budget_usd" in data && document.activeElement !== budgetInput) {
    budgetInput.value = data.budget_usd === null ? "" : String(Number(data.budget_usd));
  }
}

function showUsage() {
  const input = (usage.input_tokens || 0) + (usage.cache_read_input_tokens || 0) + (usage.cache_creation_input_tokens || 0);
  let text = `${numberFormat.format(input)} in · ${numberFormat.format(usage.output_tokens || 0)} out`;
  if (usage.cache_read_input_tokens) text += ` (${numberFormat.format(usage.cache_read_input_tokens)} cached)`;
  $("chat-usage").textContent = text;
}

// ---- the message being streamed ------------------------------------------------------------------

let draft = null; // {article, body, parts: Map(index → Text node)}

function ensureDraft() {
  if (draft) return draft;
  const article = messageShell("assistant", null);
  article.classList.add("msg--streaming");
  article.setAttribute("aria-busy", "true");
  const body = el("div", "msg-body");
  article.append(body);
  appending(() => messagesEl.append(article));
  draft = { article, body, parts: new Map() };
  return draft;
}

function applyPart(part) {
  if (!part) return;
  if (part.type === "reset") {
    dropDraft(); // the reply is being retried from the start
    return;
  }
  if (typeof part.delta !== "string") return;
  const current = ensureDraft();
  let node = current.parts.get(part.index);
  if (!node) {
    node = document.createTextNode("");
    if (part.type === "tool_input") {
      const box = toolCallElement("Calling a tool…", "", "");
      const input = box.querySelector(".tool-input");
      input.append(node);
      box.querySelector(".tool-json").remove();
      current.body.append(box);
    } else {
      const text = el("div", "msg-text");
      text.append(node);
      current.body.append(text);
    }
    current.parts.set(part.index, node);
  }
  appending(() => node.appendData(part.delta));
}

function dropDraft() {
  if (!draft) return;
  draft.article.remove();
  draft = null;
}

// ---- a running tool's output -----------------------------------------------------------------------

const LIVE_OUTPUT_MAX = 100000; // characters kept on the page; the final result replaces them anyway

// A piece of a running command's output (a `tool_output` event): shown under its call until the
// tool's result arrives and takes its place (fillToolResult replaces the result area).
function appendToolOutput(toolUseId, output) {
  const call = toolCalls.get(toolUseId);
  if (!call || call.done || typeof output !== "string" || !output) return;
  const result = call.element.querySelector(".tool-result");
  let live = result.querySelector(".tool-live");
  if (!live) {
    live = el("pre", "tool-live");
    live.setAttribute("aria-live", "polite");
    result.replaceChildren(live);
  }
  appending(() => {
    const stick = live.scrollHeight - live.scrollTop - live.clientHeight < 20;
    live.textContent = (live.textContent + output).slice(-LIVE_OUTPUT_MAX);
    if (stick) live.scrollTop = live.scrollHeight;
  });
}

// ---- status, children --------------------------------------------------------------------------------

const interruptButton = $("interrupt-button");
const resumeButton = $("resume-button");
const compactButton = $("compact-button");
const budgetNotice = $("budget-notice");
const budgetForm = $("budget-form");
const budgetInput = $("budget-input");
const composerHint = $("composer-hint");
let status = chat.status;

function setStatus(next, lastError, pausedReason) {
  status = next;
  $("chat-status").replaceChildren(statusBadge(next));
  interruptButton.disabled = !ACTIVE.has(next);
  resumeButton.hidden = !(next === "paused" && RESUMABLE.has(pausedReason));
  const error = $("chat-error");
  error.hidden = !(next === "error" && lastError);
  error.textContent = next === "error" ? lastError || "" : "";
  // Paused for the budget: last_error says so, with the amounts.
  const overBudget = next === "paused" && pausedReason === "budget";
  budgetNotice.hidden = !overBudget;
  $("budget-text").textContent = overBudget ? lastError || "Paused: the budget is reached." : "";
  if (!ACTIVE.has(next)) dropDraft();
  helpFromStatus(chat.id, next, pausedReason, null);
  composerHint.textContent = ACTIVE.has(next)
    ? "The agent is working. A message you send now is handled after the current turn."
    : overBudget ? "" : next === "paused" ? "Paused. Resume, or send a message to continue." : "";
}

function upsertChild(child) {
  if (!child || child.parent_chat_id !== chat.id) return;
  const list = $("children");
  let card = list.querySelector(`[data-chat-id="${CSS.escape(child.id)}"]`);
  if (!card) {
    card = el("li", "child-card");
    card.dataset.chatId = child.id;
    const link = el("a", "child-card-link");
    link.href = chatPageUrl(child.id);
    const cost = el("span", "child-cost muted small");
    cost.title = "What this agent's model calls cost";
    card.append(link, cost, statusBadge(child.status));
    list.append(card);
  }
  card.querySelector(".child-card-link").textContent = child.title;
  if (child.cost_usd !== undefined) card.querySelector(".child-cost").textContent = formatUsd(child.cost_usd);
  card.querySelector(".badge").replaceWith(statusBadge(child.status));
  helpFromStatus(child.id, child.status, child.paused_reason, child.help_reason, child.title);
  $("children-panel").hidden = false;
  $("children-empty").hidden = true;
}

// ---- help banners --------------------------------------------------------------------------------------
// A chat paused with `needs_help` (this one, or on a root's page one of its agents) gets a banner with the
// model's reason (untrusted text: textContent only) and a "Take control" button. It goes when the chat
// runs again (its status, a child event, or a check after a change of control).

const helpBox = $("help-banners");
const helpBanners = new Map(); // chat id → banner element

function helpFromStatus(id, status, pausedReason, reason, title) {
  if (status === "paused" && pausedReason === "needs_help") showHelp(id, reason, title);
  else hideHelp(id);
}

function showHelp(id, reason, title) {
  let banner = helpBanners.get(id);
  if (!banner) {
    banner = el("div", "alert alert--help help-banner");
    banner.setAttribute("role", "alert");
    banner.dataset.chatId = id;
    const head = el("p", "help-head");
    head.append(el("strong", null, id === chat.id ? "The agent needs your help." : "An agent needs your help: "));
    if (id !== chat.id) {
      const link = el("a", "help-chat", title || "open its chat");
      link.href = chatPageUrl(id);
      head.append(link);
    }
    const button = el("button", "button button--primary button--small help-takeover", "Take control");
    button.type = "button";
    button.addEventListener("click", () => takeControl(id, banner));
    banner.append(head, el("p", "help-reason"), el("div", "help-actions"), el("p", "help-state small"));
    banner.querySelector(".help-actions").append(button);
    helpBox.append(banner);
    helpBanners.set(id, banner);
  }
  if (typeof title === "string" && title && id !== chat.id) banner.querySelector(".help-chat").textContent = title;
  const text = typeof reason === "string" && reason ? reason : id === chat.id ? chat.help_reason : "";
  if (text) banner.querySelector(".help-reason").textContent = text;
}

function hideHelp(id) {
  const banner = helpBanners.get(id);
  if (!banner) return;
  banner.remove();
  helpBanners.delete(id);
}

// Banners of chats this page gets no status of (a root's grandchildren): read their state back.
async function recheckHelp() {
  for (const id of [...helpBanners.keys()]) {
    if (id === chat.id) continue;
    try {
      const other = await api("GET", urls.other_chat.replace(ZERO_ID, id));
      helpFromStatus(other.id, other.status, other.paused_reason, other.help_reason, other.title);
    } catch {
      // Gone or unreachable: the next event or reconnect looks again.
    }
  }
}

async function takeControl(id, banner) {
  const button = banner.querySelector(".help-takeover");
  const state = banner.querySelector(".help-state");
  // On the asking chat's own page, the desktop panel takes control: it then shows the hand-back form.
  const panelButton = $("desktop-takeover");
  if (id === chat.id && panelButton && !panelButton.hidden && !panelButton.disabled) {
    panelButton.click();
    state.textContent = "You have control of the desktop: help the agent, then hand it back with a note.";
    return;
  }
  button.disabled = true;
  state.textContent = "Taking control…";
  try {
    await api("POST", urls.other_takeover.replace(ZERO_ID, id));
  } catch (error) {
    state.textContent = `Could not take control: ${error.message}`;
    button.disabled = false;
    return;
  }
  // The asking chat's page shows the desktop in your hands, with the hand-back form.
  if (id === chat.id) window.location.reload();
  else window.location.assign(chatPageUrl(id));
}

// ---- approvals -------------------------------------------------------------------------------------------
// One card per action waiting for a person: the action, its input and the screenshot with the target marked;
// Approve / Deny with an optional note. A decision (here, elsewhere, or the timeout) updates the card live.

const approvalsBox = $("approvals");
const approvalList = $("approval-cards");
const approvalCards = new Map(); // approval id → card element
const DECIDED_WORDS = { approved: "Approved", denied: "Denied", expired: "Expired: nobody decided in time" };

function approvalUrl(id) {
  return urls.approval.replace(ZERO_ID, id);
}

async function loadApprovals() {
  let pending;
  try {
    pending = await api("GET", `${urls.approvals}?state=pending`);
  } catch {
    return; // the next event or reconnect loads them again
  }
  const ids = new Set(pending.map((a) => a.id));
  for (const [id, card] of approvalCards) {
    if (!ids.has(id) && card.dataset.state === "pending") removeApproval(id); // decided while away
  }
  for (const approval of pending) showApproval(approval);
}

// An `approval` audit event: {data: {approval_id, state, action, note}, user (who decided)}.
async function approvalEvent(event) {
  const data = event.data;
  if (typeof data.approval_id !== "string") return;
  const card = approvalCards.get(data.approval_id);
  if (data.state !== "pending") {
    if (card) markDecided(card, data.state, event.user, data.note);
    return;
  }
  if (card) return;
  try {
    showApproval(await api("GET", approvalUrl(data.approval_id)));
  } catch {
    // Not visible to us (or gone): nothing to show.
  }
}

function showApproval(approval) {
  if (approvalCards.has(approval.id)) return;
  const card = el("li", "approval-card");
  card.dataset.approvalId = approval.id;
  card.dataset.state = approval.state;
  const head = el("p", "approval-head");
  head.append(el("strong", null, "Approve this action? "), el("code", "approval-action", approval.action));
  if (approval.chat_id !== chat.id) {
    const link = el("a", "approval-chat small", "in an agent's chat");
    link.href = chatPageUrl(approval.chat_id);
    head.append(" ", link);
  }
  card.append(head);
  const input = { ...(approval.input || {}) };
  if (input.action === approval.action) delete input.action;
  card.append(el("pre", "approval-input", JSON.stringify(input, null, 2)));
  if (approval.screenshot) {
    const part = { url: approval.screenshot };
    card.append(thumbnail(part, `The screen before ${approval.action}; the target is marked`));
  }
  const form = el("form", "approval-form");
  const noteId = `approval-note-${approval.id}`;
  const label = el("label", "small", "Note for the agent (optional)");
  label.htmlFor = noteId;
  const note = el("input", "approval-note");
  note.id = noteId;
  note.name = "note";
  note.type = "text";
  note.maxLength = 2000;
  note.placeholder = "e.g. Type it into the search box instead";
  const approve = el("button", "button button--primary button--small", "Approve");
  approve.type = "submit";
  approve.value = "approve";
  const deny = el("button", "button button--danger button--small", "Deny");
  deny.type = "submit";
  deny.value = "deny";
  const row = el("div", "inline-field");
  row.append(note, approve, deny);
  form.append(label, row);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    decide(card, event.submitter?.value === "approve" ? "approve" : "deny", note.value.trim());
  });
  card.append(form, el("p", "approval-state small"));
  approvalList.append(card);
  approvalCards.set(approval.id, card);
  approvalsBox.hidden = false;
  if (approval.state !== "pending") markDecided(card, approval.state, approval.decided_by, approval.note);
}

async function decide(card, decision, note) {
  const buttons = card.querySelectorAll("button");
  for (const button of buttons) button.disabled = true;
  const state = card.querySelector(".approval-state");
  try {
    const approval = await api("POST", approvalUrl(card.dataset.approvalId), note ? { decision, note } : { decision });
    markDecided(card, approval.state, approval.decided_by, approval.note);
  } catch (error) {
    if (error.status === 409) {
      loadApprovals(); // decided meanwhile: the live event (or this reload) shows by whom
      state.textContent = error.message;
      return;
    }
    state.textContent = `Not decided: ${error.message}`;
    for (const button of buttons) button.disabled = false;
  }
}

function markDecided(card, state, by, note) {
  card.dataset.state = state;
  card.classList.add(`approval-card--${state}`);
  card.querySelector(".approval-form")?.remove();
  let text = DECIDED_WORDS[state] || state;
  if (by) text += ` by ${by}`;
  if (note && state !== "expired") text += ` · “${note}”`;
  card.querySelector(".approval-state").textContent = `${text}.`;
  if (!card.querySelector(".approval-dismiss")) {
    const dismiss = el("button", "button button--ghost button--small approval-dismiss", "Dismiss");
    dismiss.type = "button";
    dismiss.addEventListener("click", () => removeApproval(card.dataset.approvalId));
    card.append(dismiss);
  }
}

function removeApproval(id) {
  approvalCards.get(id)?.remove();
  approvalCards.delete(id);
  approvalsBox.hidden = approvalCards.size === 0;
}

// ---- the stream --------------------------------------------------------------------------------------

const streamState = $("stream-state");
let attempt = 0;
let socket = null;

function connect() {
  socket = new WebSocket(wsUrl(`${urls.stream}?after_id=${lastId}`));
  const ws = socket;
  ws.addEventListener("open", () => {
    attempt = 0;
    streamState.textContent = "Live";
    streamState.classList.add("is-live");
    refresh();
  });
  ws.addEventListener("message", (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    handleEvent(data);
  });
  ws.addEventListener("close", (event) => {
    if (ws !== socket) return;
    streamState.classList.remove("is-live");
    // Deltas of a message in flight are lost with the socket; its final form comes after reconnecting.
    dropDraft();
    if (FINAL_CLOSES.has(event.code)) {
      streamState.textContent = event.reason || FINAL_TEXT[event.code];
      return;
    }
    const delay = backoff(attempt++);
    streamState.textContent = `Reconnecting in ${Math.ceil(delay / 1000)} s…`;
    setTimeout(connect, delay);
  });
}

function handleEvent(data) {
  // Other panels of the page follow the stream too (desktop.js: control and status changes).
  document.dispatchEvent(new CustomEvent("chat-event", { detail: data }));
  switch (data.type) {
    case "message":
      addMessage(data.message);
      break;
    case "message_part":
      applyPart(data.part);
      break;
    case "tool_output":
      appendToolOutput(data.tool_use_id, data.output);
      break;
    case "status":
      setStatus(data.status, data.last_error, data.paused_reason);
      refreshRecordings();
      break;
    case "child":
      upsertChild(data.chat);
      break;
    case "usage":
      if (data.chat_id === chat.id) applyUsage(data);
      break;
    case "help_requested":
      if (data.event && typeof data.event.chat_id === "string") {
        showHelp(data.event.chat_id, data.event.data?.reason, null);
      }
      break;
    case "approval":
      if (data.event && data.event.data) approvalEvent(data.event);
      break;
    case "control":
      recheckHelp();
      break;
    default:
      break;
  }
}

// Status and child events sent while we were disconnected are not replayed: read them back.
async function refresh() {
  try {
    const [current, children] = await Promise.all([api("GET", urls.chat), api("GET", urls.children)]);
    setStatus(current.status, current.last_error, current.paused_reason);
    helpFromStatus(current.id, current.status, current.paused_reason, current.help_reason);
    applyUsage(current);
    for (const child of children) upsertChild(child);
    recheckHelp();
    loadApprovals();
  } catch {
    // The stream itself reports connection trouble; the next reconnect refreshes again.
  }
}

// ---- actions -----------------------------------------------------------------------------------------

interruptButton.addEventListener("click", async () => {
  interruptButton.disabled = true;
  try {
    const updated = await api("POST", urls.interrupt);
    setStatus(updated.status, updated.last_error, updated.paused_reason);
  } catch (error) {
    composerHint.textContent = `Could not interrupt: ${error.message}`;
    interruptButton.disabled = !ACTIVE.has(status);
  }
});

async function resume() {
  const updated = await api("POST", urls.resume);
  setStatus(updated.status, updated.last_error, updated.paused_reason);
}

resumeButton.addEventListener("click", async () => {
  resumeButton.disabled = true;
  try {
    await resume();
  } catch (error) {
    composerHint.textContent = `Could not resume: ${error.message}`;
  } finally {
    resumeButton.disabled = false;
  }
});

budgetForm?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const raw = budgetInput.value.trim();
  const button = budgetForm.querySelector("button");
  button.disabled = true;
  try {
    const updated = await api("PATCH", urls.chat, { budget_usd: raw === "" ? null : raw });
    applyUsage(updated);
    await resume();
  } catch (error) {
    $("budget-text").textContent = error.message;
  } finally {
    button.disabled = false;
  }
});

compactButton.addEventListener("click", async () => {
  compactButton.disabled = true;
  try {
    await api("POST", urls.compact);
    composerHint.textContent = "Compacting: the summary appears here when the model has written it.";
  } catch (error) {
    composerHint.textContent = `Not compacted: ${error.message}`;
  } finally {
    compactButton.disabled = false;
  }
});

const archiveButton = $("archive-button");
archiveButton.addEventListener("click", async () => {
  const archived = archiveButton.dataset.archived !== "true";
  archiveButton.disabled = true;
  try {
    const updated = await api("PATCH", urls.chat, { archived });
    archiveButton.dataset.archived = String(updated.archived);
    archiveButton.textContent = updated.archived ? "Unarchive" : "Archive";
  } catch (error) {
    composerHint.textContent = `Could not update the chat: ${error.message}`;
  } finally {
    archiveButton.disabled = false;
  }
});

const composer = $("composer");
const input = $("composer-input");
const sendButton = composer.querySelector("button[type=submit]");

composer.addEventListener("submit", async (event) => {
  event.preventDefault();
  const content = input.value;
  if (!content.trim()) {
    composerHint.textContent = "Write a message first.";
    input.focus();
    return;
  }
  sendButton.disabled = true;
  try {
    const message = await api("POST", urls.messages, { content });
    input.value = "";
    addMessage(message, { fromStream: false });
    messagesEl.scrollTop = messagesEl.scrollHeight;
  } catch (error) {
    composerHint.textContent = `Not sent: ${error.message}`;
  } finally {
    sendButton.disabled = false;
    input.focus();
  }
});

input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    composer.requestSubmit();
  }
});

// ---- recordings ----------------------------------------------------------------------------------------

const recordingPanel = $("recordings-panel");
const video = $("recording-video");
const recordingSelect = $("recording-select");
const markersEl = $("recording-markers");
let recordings = [];
let timeline = [];
let currentRecording = null;
let pendingSeek = null;
let recordingTimer = null;

// 83.4 → "1:23.4": a position in a recording, to a tenth of a second (actions come fast).
function clock(seconds) {
  const tenths = Math.max(0, Math.round(seconds * 10));
  const whole = Math.floor(tenths / 10);
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}.${tenths % 10}`;
}

function playable(recording) {
  return recording && typeof recording.url === "string" && recording.url;
}

async function refreshRecordings() {
  if (!recordingPanel) return;
  clearTimeout(recordingTimer);
  try {
    [recordings, timeline] = await Promise.all([api("GET", urls.recordings), api("GET", urls.timeline)]);
  } catch {
    recordingTimer = setTimeout(refreshRecordings, 5000);
    return;
  }
  renderRecordings();
  // A recording is fetched from the agent after its turn ends: look again until every one has settled.
  if (ACTIVE.has(status) || recordings.some((r) => r.state === "recording")) {
    recordingTimer = setTimeout(refreshRecordings, 2000);
  }
}

function renderRecordings() {
  const stored = recordings.filter(playable);
  const state = $("recording-state");
  recordingSelect.replaceChildren();
  for (const recording of stored) {
    const when = formatTime(recording.started_at);
    const who = recording.kind === "person" ? "person" : "agent";
    const length = recording.duration_seconds == null ? "" : ` · ${clock(recording.duration_seconds)}`;
    const option = el("option", null, `${when} · ${who}${length}${recording.complete ? "" : " · incomplete"}`);
    option.value = recording.id;
    recordingSelect.append(option);
  }
  recordingSelect.hidden = stored.length < 2;
  const running = recordings.some((r) => r.state === "recording");
  const expired = recordings.filter((r) => r.expired).length;
  if (!stored.length) {
    state.textContent = running ? "Recording… the video appears here when this turn ends."
      : expired ? "The recordings of this chat expired." : state.textContent;
  } else {
    const incomplete = stored.find((r) => r.id === (currentRecording || stored.at(-1)).id && !r.complete);
    state.textContent = incomplete ? `This recording is incomplete: ${incomplete.note || "the recorder stopped early"}.`
      : running ? "Recording… a newer video appears when this turn ends." : "";
  }
  $("recording-player").hidden = !stored.length;
  if (!stored.length) return;
  const keep = currentRecording && stored.find((r) => r.id === currentRecording.id);
  if (!keep) showRecording(stored.at(-1));
  else {
    currentRecording = keep;
    recordingSelect.value = keep.id;
    renderMarkers();
  }
  for (const id of toolCalls.keys()) addSeekButton(id);
}

function showRecording(recording, seekTo = null) {
  currentRecording = recording;
  recordingSelect.value = recording.id;
  pendingSeek = seekTo;
  if (video.getAttribute("src") !== recording.url) {
    video.src = recording.url;
    video.load();
  } else if (seekTo !== null) {
    applySeek();
  }
  renderMarkers();
}

function applySeek() {
  if (pendingSeek === null || video.readyState < 1) return;
  video.currentTime = pendingSeek;
  pendingSeek = null;
}

video?.addEventListener("loadedmetadata", () => {
  applySeek();
  renderMarkers();
});

recordingSelect?.addEventListener("change", () => {
  const recording = recordings.find((r) => r.id === recordingSelect.value);
  if (recording) showRecording(recording);
});

function recordingLength(recording) {
  if (Number.isFinite(video.duration) && video.duration > 0) return video.duration;
  return recording.duration_seconds || 0;
}

function renderMarkers() {
  markersEl.replaceChildren();
  if (!currentRecording) return;
  const length = recordingLength(currentRecording);
  for (const entry of timeline) {
    if (entry.recording_id !== currentRecording.id || entry.t === null || !length) continue;
    const marker = el("button", `recording-marker recording-marker--${entry.by}`);
    marker.type = "button";
    marker.style.left = `${Math.min(100, (100 * entry.t) / length)}%`;
    const what = entry.coordinate ? `${entry.action} (${entry.coordinate.join(", ")})` : entry.action;
    marker.title = `${what} at ${clock(entry.t)}`;
    marker.setAttribute("aria-label", marker.title);
    marker.dataset.t = String(entry.t);
    if (entry.tool_use_id) marker.dataset.toolUseId = entry.tool_use_id;
    marker.addEventListener("click", () => seekToEntry(entry));
    markersEl.append(marker);
  }
}

function entryFor(toolUseId) {
  return timeline.find((e) => e.tool_use_id === toolUseId && e.recording_id && e.t !== null);
}

function seekToEntry(entry) {
  const recording = recordings.find((r) => r.id === entry.recording_id);
  if (!playable(recording)) return;
  for (const box of messagesEl.querySelectorAll(".tool.is-playing")) box.classList.remove("is-playing");
  const call = entry.tool_use_id && toolCalls.get(entry.tool_use_id);
  if (call) call.element.classList.add("is-playing");
  showRecording(recording, entry.t);
  recordingPanel.scrollIntoView({ block: "nearest" });
}

// An action in the chat gets a button that plays the recording from the moment it started.
function addSeekButton(toolUseId) {
  if (!recordingPanel) return;
  const call = toolCalls.get(toolUseId);
  const entry = entryFor(toolUseId);
  if (!call || !entry || call.element.querySelector(".tool-seek")) return;
  const button = el("button", "button button--ghost button--small tool-seek", `▶ ${clock(entry.t)}`);
  button.type = "button";
  button.title = "Play the recording from this action";
  button.setAttribute("aria-label", `Play the recording from this action (${clock(entry.t)})`);
  button.addEventListener("click", () => {
    const latest = entryFor(toolUseId);
    if (latest) seekToEntry(latest);
  });
  call.element.prepend(button);
}

setStatus(chat.status, chat.last_error, chat.paused_reason);
applyUsage(chat);
connect();
refreshRecordings();
