// The shared inbox page. Plain JavaScript, no build step: it only talks to the JSON API of the
// same origin. Untrusted text (subjects, names, bodies) is only ever set with textContent; mail
// HTML goes into a sandboxed iframe's srcdoc, never into this document.
"use strict";

const myId = Number(document.querySelector('meta[name="user-id"]').content) || null;

const VIEWS = [
  { key: "mine", label: "Mine", query: { assignee: "me", status: "open" }, count: "mine" },
  { key: "unassigned", label: "Unassigned", query: { assignee: "unassigned", status: "open" }, count: "unassigned" },
  { key: "open", label: "All open", query: { status: "open" }, count: "open" },
  { key: "unread", label: "Unread", query: { status: "open", unread: "true" }, count: "unread" },
  { key: "waiting", label: "Waiting for reply", query: { waiting: "true" }, count: "waiting" },
  { key: "pending", label: "Pending", query: { status: "pending" }, count: "pending" },
  { key: "snoozed", label: "Snoozed", query: { status: "snoozed" }, count: "snoozed" },
  { key: "closed", label: "Closed", query: { status: "closed" }, count: "closed" },
];

const state = {
  view: VIEWS[2],
  account: null,
  stage: null,
  text: "",
  threads: [],
  cursor: null,
  selected: -1,
  openId: null,
  team: new Map(),
  accounts: new Map(),
  heartbeat: null,
};

const $ = (selector) => document.querySelector(selector);

const { el } = crm;  // common.js: the same DOM helper and fetch for every page

async function api(path, options = {}) {
  try {
    return await crm.api(path, options);
  } catch (error) {
    if (error.message !== "signed out") notify(error.message, true);
    throw error;
  }
}

function notify(message, isError = false) {
  const status = $("#list-status");
  status.textContent = message;
  status.classList.toggle("error", isError);
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => { status.textContent = ""; }, 6000);
}

function personName(id) {
  if (id === null || id === undefined) return "";
  const member = state.team.get(id);
  return member ? member.name : `user ${id}`;
}

function formatWhen(value) {
  if (!value) return "";
  const date = new Date(value);
  const now = new Date();
  const sameDay = date.toDateString() === now.toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { day: "numeric", month: "short" });
}

// ---------------------------------------------------------------------------------------------
// Sidebar

async function loadCounts() {
  const counts = await api("/api/views/counts");
  const list = $("#view-list");
  list.replaceChildren(
    ...VIEWS.map((view) =>
      el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: "view" + (state.view === view && state.account === null && state.stage === null ? " current" : ""),
            "data-view": view.key,
            "aria-current": state.view === view && state.account === null && state.stage === null ? "true" : null,
            onclick: () => chooseView(view, null),
          },
          el("span", { class: "label", text: view.label }),
          el("span", { class: "count", text: String(counts[view.count] ?? "") }),
        ),
      ),
    ),
  );
  const accounts = $("#account-list");
  accounts.replaceChildren(
    ...Object.entries(counts.per_account).map(([id, count]) =>
      el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: "view" + (String(state.account) === id ? " current" : ""),
            "aria-current": String(state.account) === id ? "true" : null,
            "data-account": id,
            onclick: () => chooseView(VIEWS[2], Number(id)),
          },
          el("span", { class: "label", text: state.accounts.get(Number(id)) || `Account ${id}` }),
          el("span", { class: "count", text: String(count) }),
        ),
      ),
    ),
  );
  renderStages(counts);
}

function countButton(attrs, label, count, current, onclick) {
  return el(
    "li",
    {},
    el(
      "button",
      { type: "button", class: "view" + (current ? " current" : ""), "aria-current": current ? "true" : null, onclick, ...attrs },
      el("span", { class: "label", text: label }),
      el("span", { class: "count", text: String(count) }),
    ),
  );
}

function renderStages(counts) {
  // Open conversations per deal stage, as many stages as the counts name (none: no heading).
  const stages = Object.entries(counts.per_deal_stage || {});
  $("#stages-heading").hidden = !stages.length;
  $("#stage-list").replaceChildren(
    ...stages.map(([stage, count]) =>
      countButton({ "data-stage": stage }, stage, count, state.stage === stage, () => chooseView(VIEWS[2], null, stage)),
    ),
  );
}

function chooseView(view, account, stage = null) {
  state.view = view;
  state.account = account;
  state.stage = stage;
  $("#list-title").textContent =
    stage !== null ? `Deals in ${stage}` : account === null ? view.label : state.accounts.get(account) || `Account ${account}`;
  document.body.classList.remove("nav-open");
  refresh();
}

// ---------------------------------------------------------------------------------------------
// Conversation list

function listQuery(cursor) {
  const params = new URLSearchParams(state.view.query);
  if (state.account !== null) params.set("account_id", String(state.account));
  if (state.stage !== null) params.set("deal_stage", state.stage);
  if (state.text) params.set("q", state.text);
  if (cursor) params.set("cursor", cursor);
  params.set("limit", "50");
  return `/api/threads?${params}`;
}

// Only the newest list request may render: a slow answer for the view the user just left
// must not replace the view (or search) they chose after it.
let listRequests = 0;

async function loadThreads(append = false) {
  const ticket = ++listRequests;
  const page = await api(listQuery(append ? state.cursor : null));
  if (ticket !== listRequests) return;
  state.threads = append ? state.threads.concat(page.items) : page.items;
  state.cursor = page.next_cursor;
  $("#more").hidden = !page.next_cursor;
  renderThreads();
}

function renderThreads() {
  const template = $("#tpl-thread");
  const items = state.threads.map((thread, index) => {
    const node = template.content.firstElementChild.cloneNode(true);
    node.dataset.threadId = String(thread.id);
    node.classList.toggle("unread", thread.unread);
    node.classList.toggle("selected", index === state.selected);
    node.setAttribute("aria-selected", index === state.selected ? "true" : "false");
    node.querySelector(".who").textContent = thread.last_from ? (thread.last_from.name || thread.last_from.email) : "";
    node.querySelector(".when").textContent = formatWhen(thread.last_date);
    if (thread.last_date) node.querySelector(".when").setAttribute("datetime", thread.last_date);
    node.querySelector(".subject").textContent = thread.subject || "(no subject)";
    node.querySelector(".snippet").textContent = thread.snippet;
    node.querySelector(".assignee").textContent = thread.assignee_user_id ? personName(thread.assignee_user_id) : "";
    node.querySelector(".state").textContent = thread.status === "open" ? "" : thread.status;
    node.addEventListener("click", () => select(index, true));
    return node;
  });
  $("#threads").replaceChildren(...items);
  if (!items.length) $("#threads").append(el("li", { class: "none", text: "No conversations here." }));
}

function select(index, open) {
  if (!state.threads.length) return;
  state.selected = Math.max(0, Math.min(index, state.threads.length - 1));
  renderThreads();
  const node = $("#threads").children[state.selected];
  if (node) node.scrollIntoView({ block: "nearest" });
  if (open) openThread(state.threads[state.selected].id);
}

async function refresh() {
  state.selected = -1;
  await Promise.all([loadCounts(), loadThreads()]);
}

// ---------------------------------------------------------------------------------------------
// One conversation

function foldQuotes(text) {
  // Quoted lines (">") and a signature after "-- " are folded: the new words come first.
  const container = el("div", { class: "text-body" });
  const lines = text.split(/\r?\n/);
  let own = [];
  let quoted = [];
  const flush = () => {
    if (own.length) container.append(el("pre", { text: own.join("\n") }));
    if (quoted.length) {
      container.append(el("details", { class: "quoted" }, el("summary", { text: "Quoted text" }), el("pre", { text: quoted.join("\n") })));
    }
    own = [];
    quoted = [];
  };
  let inSignature = false;
  for (const line of lines) {
    if (line === "-- ") inSignature = true;
    if (inSignature || line.trimStart().startsWith(">")) quoted.push(line);
    else {
      if (quoted.length) flush();
      own.push(line);
    }
  }
  flush();
  return container;
}

function mailFrame(html) {
  // No allow-* token at all: no scripts, opaque origin, no forms, no popups, no top navigation.
  // Images only from data: and this app's own /media/ (the image proxy and the message's parts).
  const frame = el("iframe", { sandbox: "", class: "mail-frame", title: "Message", referrerpolicy: "no-referrer" });
  frame.srcdoc =
    `<!doctype html><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data: ${location.origin}/media/; style-src 'unsafe-inline'">` +
    '<base target="_blank">' +
    html;
  return frame;
}

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

function attachmentList(message) {
  if (!message.attachments.length) return null;
  return el(
    "ul",
    { class: "attachments", "aria-label": "Attachments" },
    ...message.attachments.map((a, index) => {
      const name = a.filename || `attachment ${index + 1}`;
      return el(
        "li",
        {},
        el("a", { href: `/api/messages/${message.id}/attachments/${index}`, download: name, text: name }),
        el("span", { class: "muted", text: ` ${a.content_type}, ${formatSize(a.size)}${a.inline ? ", inline" : ""}` }),
      );
    }),
  );
}

// Remote images: held back until the reader asks, then loaded through the app's image proxy.
async function showDisplay(message, holder, images) {
  const display = await api(`/api/messages/${message.id}/display${images ? "?images=true" : ""}`);
  const frame = mailFrame(display.html);
  holder.querySelector(".mail-frame").replaceWith(frame);
  const bar = holder.querySelector(".images-bar");
  const sender = display.sender || "this sender";
  const always = (on) => async () => {
    await api(`/api/messages/${message.id}/sender-images`, { method: on ? "PUT" : "DELETE" });
    showDisplay(message, holder, on);
  };
  if (!display.remote_images) {
    bar.replaceChildren();
    bar.hidden = true;
    return;
  }
  bar.hidden = false;
  if (!display.images_shown) {
    bar.replaceChildren(
      el("span", { text: `${display.remote_images} remote image(s) held back: the sender cannot tell you read this. ` }),
      el("button", { type: "button", class: "show-images", onclick: () => showDisplay(message, holder, true) }, "Show images"),
      el("button", { type: "button", class: "always-images", onclick: always(true) }, `Always show images from ${sender}`),
    );
  } else {
    bar.replaceChildren(
      el("span", { text: "Images loaded through crm-inbox's image proxy (the sender does not see you). " }),
      display.sender_always
        ? el("button", { type: "button", class: "ask-images", onclick: always(false) }, `Ask again for ${sender}`)
        : el("button", { type: "button", class: "always-images", onclick: always(true) }, `Always show images from ${sender}`),
    );
  }
}

// Mail that reached a hosted forwarding address (issue 13) is shown as from the customer who
// wrote it; the line says who forwarded it, or that its original sender was not found (it then
// stays on the forwarder, flagged).
function forwardLine(message) {
  if (message.forward_unattributed) {
    return el("p", { class: "flag forwarded unattributed", text: `Forwarded${message.forwarded_by ? ` by ${message.forwarded_by}` : ""}: the original sender was not found, so it is shown as from the forwarder.` });
  }
  if (!message.forwarded_by) return null;
  return el("p", { class: "muted forwarded", text: `forwarded by ${message.forwarded_by}` });
}

function renderMessage(message, canSplit) {
  const people = (list) => list.map((p) => (p.name ? `${p.name} <${p.email}>` : p.email)).join(", ");
  const head = el(
    "header",
    { class: "message-head" },
    el("span", { class: "from", text: message.sender ? people([message.sender]) : "(no sender)" }),
    el("time", { class: "when", datetime: message.date || null, text: message.date ? new Date(message.date).toLocaleString() : "" }),
    el("span", { class: "to", text: message.to.length ? `to ${people(message.to)}` : "" }),
  );
  const threading = el("p", { class: "muted threading", "aria-live": "polite" });
  const tools = el(
    "div",
    { class: "message-tools" },
    el("button", { type: "button", class: "why-here", onclick: () => explainThreading(message.id, threading) }, "Why in this conversation?"),
    canSplit ? el("button", { type: "button", class: "split", onclick: () => splitMessage(message.id) }, "Split off") : null,
  );
  const files = attachmentList(message);
  const flags = [];
  if (message.malformed) flags.push("This message was malformed; it is shown as well as it could be read.");
  if (message.headers_only) flags.push("This message was too large: only its headers were kept.");
  let body;
  if (message.html_body) {
    // The bar keeps its place (held or shown) so showing images never moves the page.
    const bar = el("p", { class: "flag images-bar", role: "status" });
    body = el("div", { class: "html-body" }, bar, mailFrame(message.html_body));
    if (message.remote_images_held) {
      bar.append(el("span", { text: `${message.remote_images_held} remote image(s) held back: the sender cannot tell you read this.` }));
    } else {
      bar.hidden = true;
    }
    if (message.remote_images_held || /src="cid:/i.test(message.html_body)) showDisplay(message, body, false);
  } else {
    body = foldQuotes(message.text_body || "");
  }
  return el(
    "article",
    { class: "message " + (message.direction === "outbound" ? "ours" : "theirs"), "data-message-id": String(message.id) },
    head,
    forwardLine(message),
    tools,
    threading,
    ...flags.map((f) => el("p", { class: "flag", text: f })),
    body,
    files,
  );
}

async function openThread(id) {
  if (state.openId !== id) state.openedAt = new Date().toISOString();  // for the collision guard
  state.openId = id;
  const [thread, notes, history, present] = await Promise.all([
    api(`/api/threads/${id}`),
    api(`/api/threads/${id}/notes`),
    api(`/api/threads/${id}/history`),
    api(`/api/threads/${id}/presence`, { method: "POST", body: { state: "viewing" } }),
  ]);
  if (state.openId !== id) return;
  renderConversation(thread, notes, history, present);
  api(`/api/threads/${id}/read`, { method: "POST" }).then(() => {
    const row = state.threads.find((t) => t.id === id);
    if (row && row.unread) {
      row.unread = false;
      renderThreads();
      loadCounts();
    }
  });
  clearInterval(state.heartbeat);
  state.heartbeat = setInterval(() => {
    if (state.openId === id) api(`/api/threads/${id}/presence`, { method: "POST", body: { state: "viewing" } }).then(renderPresence);
  }, 10000);
}

function renderPresence(people) {
  const bar = $("#presence");
  if (!bar) return;
  bar.replaceChildren(
    ...people.map((p) => el("span", { class: "present " + p.state, text: `${p.name} is ${p.state}` })),
  );
}

function renderConversation(thread, notes, history, present) {
  // Re-rendering must never lose what someone is typing.
  const typing = {
    reply: $("#reply-body") ? $("#reply-body").value : "",
    note: $("#note-body") ? $("#note-body").value : "",
    focus: document.activeElement ? document.activeElement.id : "",
    same: state.renderedId === thread.id,
  };
  state.renderedId = thread.id;
  // The records already shown stay in place while they reload: nothing below them moves.
  const shownRecords = typing.same && $("#crm-sidebar .record-list") ? [...$("#crm-sidebar .record-list").childNodes] : null;
  const assign = el(
    "select",
    { id: "assignee", "aria-label": "Assignee", onchange: (event) => assignTo(event.target.value ? Number(event.target.value) : null) },
    el("option", { value: "", text: "Unassigned" }),
    ...[...state.team.values()]
      .filter((m) => m.active)
      .map((m) => el("option", { value: String(m.id), text: m.name, selected: m.id === thread.assignee_user_id })),
  );
  const actions = el(
    "div",
    { class: "actions" },
    el("label", { for: "assignee", class: "visually-hidden", text: "Assignee" }),
    assign,
    el("button", { type: "button", id: "assign-me", onclick: () => assignTo(myId) }, "Assign to me"),
    thread.status === "closed"
      ? el("button", { type: "button", id: "reopen", onclick: () => setStatus("open") }, "Reopen")
      : el("button", { type: "button", id: "close", onclick: () => setStatus("closed") }, "Close"),
    el("button", { type: "button", id: "snooze", onclick: () => snooze() }, "Snooze"),
  );
  const noteForm = el(
    "form",
    { id: "note-form", class: "note-form", onsubmit: addNote },
    el("label", { for: "note-body", text: "Internal note (@name mentions a colleague)" }),
    el("textarea", { id: "note-body", name: "body", rows: "3", maxlength: "20000", required: true }),
    el("button", { type: "submit" }, "Add note"),
  );
  const noteList = el(
    "ol",
    { class: "notes", "aria-label": "Notes" },
    ...notes.map((n) =>
      el("li", { class: "note" }, el("span", { class: "author", text: personName(n.author_user_id) }), el("p", { text: n.body })),
    ),
  );
  const last = thread.messages[thread.messages.length - 1];
  const replyForm = last
    ? el(
        "form",
        { id: "reply-form", class: "reply-form", onsubmit: (event) => sendReply(event, last.id, false) },
        el("label", { for: "reply-body", text: `Reply from ${accountName(last)} (your signature is added)` }),
        el("textarea", { id: "reply-body", rows: "5", maxlength: "100000", required: true, oninput: replying }),
        el(
          "div",
          { class: "actions" },
          el("label", { for: "reply-mode", class: "visually-hidden", text: "Reply mode" }),
          el(
            "select",
            { id: "reply-mode" },
            el("option", { value: "reply", text: "Reply" }),
            el("option", { value: "reply_all", text: "Reply all" }),
            el("option", { value: "forward", text: "Forward" }),
          ),
          el("label", { for: "reply-to", class: "visually-hidden", text: "Forward to" }),
          el("input", { id: "reply-to", type: "text", placeholder: "Forward to (address)", autocomplete: "off" }),
          el("button", { type: "submit" }, "Send"),
        ),
        el("p", { id: "reply-status", class: "reply-status", role: "status" }),
      )
    : null;
  const records = el("aside", { id: "crm-sidebar", class: "crm-sidebar", "aria-label": "Linked records" });
  const historyList = el(
    "details",
    { class: "history" },
    el("summary", { text: `History (${history.length})` }),
    el("ol", {}, ...history.map((h) => el("li", { text: describe(h) }))),
  );
  $("#conversation").replaceChildren(
    el(
      "header",
      { class: "conversation-head" },
      el("h2", { id: "conversation-subject", text: thread.subject || "(no subject)" }),
      el("span", { class: "status", id: "conversation-status", text: thread.status + (thread.snoozed_until ? ` until ${new Date(thread.snoozed_until).toLocaleString()}` : "") }),
    ),
    el("div", { id: "presence", class: "presence", "aria-live": "polite" }),
    actions,
    records,
    ...thread.messages.map((m) => renderMessage(m, thread.messages.length > 1)),
    replyForm,
    noteList,
    noteForm,
    historyList,
  );
  renderPresence(present);
  renderRecords(thread, shownRecords);
  if (typing.same) {
    if ($("#reply-body")) $("#reply-body").value = typing.reply;
    if ($("#note-body")) $("#note-body").value = typing.note;
    if (typing.focus && document.getElementById(typing.focus)) document.getElementById(typing.focus).focus();
  }
}

function accountName(message) {
  const where = message.locations && message.locations[0];
  return where ? state.accounts.get(where.account_id) || `account ${where.account_id}` : "the conversation's account";
}

const RECORD_PATH = { contact: "contacts", company: "companies", deal: "deals" };

function reasonWords(reason, detail) {
  switch (reason) {
    case "manual": return "linked by hand";
    case "forward": return detail ? `forwarded mail from ${detail}` : "forwarded mail";
    case "bcc": return detail ? `sent with the CRM in Bcc (${detail})` : "sent with the CRM in Bcc";
    case "address": return detail ? `${detail} is on the mail and is one of its addresses` : "one of its addresses is on the mail";
    case "deal_participant": return detail ? `${detail} takes part in the deal` : "a participant of the deal";
    case "thread": return "another message of this conversation is linked";
    case "domain": return detail ? `the domain ${detail} is the company's` : "the company's domain";
    default: return reason;
  }
}

function recordLabel(record, kind, id) {
  return record.full_name || record.name || record.title || `${kind} ${id}`;
}

async function renderRecords(thread, shownRecords = null) {
  // One entry per record, with the first message that carries it (its "why" and where an unlink
  // starts: an unlink applies to the whole conversation and stays).
  const seen = new Map();
  for (const message of thread.messages) {
    for (const link of message.links) {
      const key = `${link.record_kind}:${link.record_id}`;
      if (!seen.has(key)) seen.set(key, { link, messageId: message.id });
    }
  }
  const box = $("#crm-sidebar");
  if (!box) return;
  // The forms are there at once (a reader may open one while the records load); the list of
  // records fills in its own place.
  const list = el("div", { class: "record-list" });
  if (shownRecords && shownRecords.length) list.replaceChildren(...shownRecords);
  else list.append(el("p", { class: "muted", text: seen.size ? "Loading records…" : "Not linked to any contact, company or deal yet." }));
  box.replaceChildren(el("h3", { text: "On records" }), list, linkForm(thread), mergeForm(thread));
  if (!seen.size) return;
  const whys = new Map();
  await Promise.all(
    [...new Set([...seen.values()].map((v) => v.messageId))].map(async (messageId) => {
      try {
        for (const why of await api(`/api/messages/${messageId}/links`)) whys.set(`${messageId}:${why.record_kind}:${why.record_id}`, why);
      } catch { /* shown without the detail */ }
    }),
  );
  const items = await Promise.all(
    [...seen.values()].map(async ({ link, messageId }) => {
      const path = RECORD_PATH[link.record_kind];
      try {
        const record = await api(`/api/${path}/${link.record_id}`);
        const label = recordLabel(record, link.record_kind, link.record_id);
        const extra = link.record_kind === "deal" ? ` · ${record.stage}${record.amount === null ? "" : `, ${record.amount} ${record.currency}`}` : "";
        const why = whys.get(`${messageId}:${link.record_kind}:${link.record_id}`);
        return el(
          "li",
          { class: "record-link", "data-record": `${link.record_kind}:${link.record_id}` },
          el("a", { href: `/records/${path}/${link.record_id}`, text: label }),
          el("span", { class: "muted", text: ` (${link.record_kind}${extra})` }),
          el("span", { class: "why", text: `Why: ${reasonWords(link.reason, why ? why.detail : "")}` }),
          el("button", {
            type: "button", class: "unlink", "aria-label": `Unlink ${label}`,
            onclick: () => unlinkRecord(messageId, link.record_kind, link.record_id, label),
          }, "Unlink"),
        );
      } catch {
        return null;
      }
    }),
  );
  const linked = items.filter(Boolean);
  list.replaceChildren(
    linked.length ? el("ul", { class: "record-links" }, ...linked) : el("p", { class: "muted", text: "Not linked to any contact, company or deal yet." }),
  );
}

async function unlinkRecord(messageId, kind, id, label) {
  await api(`/api/messages/${messageId}/unlink`, { method: "POST", body: { record_kind: kind, record_id: id, whole_conversation: true } });
  notify(`Unlinked ${label} (it stays off this conversation)`);
  await openThread(state.openId);
}

function searchForm({ id, legend, kinds, search, action, actionLabel }) {
  // A small search-and-pick form: the results are buttons, so it works from the keyboard.
  const results = el("ul", { class: "pick-results", "aria-live": "polite" });
  const input = el("input", { id: `${id}-q`, type: "search", autocomplete: "off" });
  const kind = kinds
    ? el("select", { id: `${id}-kind` }, ...kinds.map((k) => el("option", { value: k, text: k })))
    : null;
  const form = el(
    "form",
    {
      id, class: "pick-form",
      onsubmit: async (event) => {
        event.preventDefault();
        const found = await search(input.value.trim(), kind ? kind.value : null);
        results.replaceChildren(
          ...(found.length
            ? found.map((item) => el("li", {}, el("button", { type: "button", onclick: () => action(item) }, `${actionLabel} ${item.label}`)))
            : [el("li", { class: "muted", text: "Nothing found." })]),
        );
      },
    },
    kind ? el("label", { for: `${id}-kind`, text: "Kind" }) : null,
    kind,
    el("label", { for: `${id}-q`, text: "Search" }),
    input,
    el("button", { type: "submit" }, "Find"),
  );
  return el("details", { class: "tool" }, el("summary", { text: legend }), form, results);
}

function linkForm(thread) {
  const last = thread.messages[thread.messages.length - 1];
  if (!last) return null;
  return searchForm({
    id: "link-form",
    legend: "Link to a record",
    kinds: ["contact", "company", "deal"],
    actionLabel: "Link",
    search: async (text, kind) => {
      const page = await api(`/api/${RECORD_PATH[kind]}?${new URLSearchParams({ q: text, limit: "10" })}`);
      return page.items.map((r) => ({ kind, id: r.id, label: recordLabel(r, kind, r.id) }));
    },
    action: async (item) => {
      await api(`/api/messages/${last.id}/links`, { method: "POST", body: { record_kind: item.kind, record_id: item.id, whole_conversation: true } });
      notify(`Linked to ${item.label}`);
      await openThread(state.openId);
    },
  });
}

function mergeForm(thread) {
  return searchForm({
    id: "merge-form",
    legend: "Merge another conversation into this one",
    kinds: null,
    actionLabel: "Merge",
    search: async (text) => {
      const page = await api(`/api/threads?${new URLSearchParams({ q: text, limit: "10" })}`);
      return page.items.filter((t) => t.id !== thread.id).map((t) => ({ id: t.id, label: `“${t.subject || "(no subject)"}” (${t.message_count})` }));
    },
    action: async (item) => {
      const change = await api(`/api/threads/${thread.id}/merge`, { method: "POST", body: { source_id: item.id } });
      notify("Conversations merged (kept together from now on)");
      await Promise.all([openThread(change.thread_id), refresh()]);
    },
  });
}

const EVIDENCE = {
  replies_to: "it replies to another message here",
  replied_by: "another message here replies to it",
  subject: "same subject among the same people within days (no reference)",
  merged_by_user: "someone merged it in",
  split_by_user: "someone split it off",
  starts: "it starts the conversation",
};

async function explainThreading(messageId, target) {
  const why = await api(`/api/messages/${messageId}/threading`);
  target.textContent = `In this conversation because ${why.evidence.map((e) => EVIDENCE[e.kind] || e.kind).join("; ") || "of its headers"}.`;
}

async function splitMessage(messageId) {
  const change = await api(`/api/messages/${messageId}/split`, { method: "POST" });
  notify("Message split into its own conversation (kept apart from now on)");
  await Promise.all([openThread(change.thread_id), refresh()]);
}

let replyingSent = 0;
function replying() {
  // Tell colleagues someone is writing (at most every 10 s): no one starts a second reply.
  if (state.openId === null || Date.now() - replyingSent < 10000) return;
  replyingSent = Date.now();
  api(`/api/threads/${state.openId}/presence`, { method: "POST", body: { state: "replying" } });
}

function escapeHtml(text) {
  const div = document.createElement("div");
  div.textContent = text;
  return div.innerHTML.replace(/\n/g, "<br>");
}

async function sendReply(event, messageId, confirm) {
  if (event) event.preventDefault();
  const status = $("#reply-status");
  const text = $("#reply-body").value.trim();
  if (!text) return;
  const mode = $("#reply-mode").value;
  const body = { html: `<p>${escapeHtml(text)}</p>`, mode, opened_at: state.openedAt, confirm, undo_seconds: 10 };
  if (mode === "forward") body.to = [$("#reply-to").value.trim()].filter(Boolean);
  try {
    const result = await api(`/api/messages/${messageId}/reply`, { method: "POST", body });
    if (result.held) {
      status.replaceChildren(
        el("span", { text: `${result.new_messages.length} new message(s) arrived since you opened this conversation. ` }),
        el("button", { type: "button", onclick: () => sendReply(null, messageId, true) }, "Send anyway"),
      );
      openThread(state.openId);
      return;
    }
    $("#reply-body").value = "";
    const mail = result.mail;
    status.replaceChildren(
      el("span", { text: "Sending in 10 s. " }),
      el("button", { type: "button", id: "undo-send", onclick: async () => {
        await api(`/api/outbound/${mail.id}/cancel`, { method: "POST" });
        status.textContent = "Not sent: the reply was recalled.";
      } }, "Undo"),
    );
  } catch (error) {
    status.textContent = error.message;
  }
}

function describe(entry) {
  const who = personName(entry.actor_user_id) || "crm-inbox";
  const when = new Date(entry.created_at).toLocaleString();
  switch (entry.kind) {
    case "assigned": return `${when}: ${who} assigned it to ${personName(entry.data.assignee)}`;
    case "unassigned": return `${when}: ${who} unassigned it`;
    case "status": return `${when}: ${who} set it ${entry.data.status}`;
    case "note": return `${when}: ${who} added a note`;
    case "mention": return `${when}: ${who} mentioned ${personName(entry.data.user_id)}`;
    default: return `${when}: ${who} ${entry.kind}`;
  }
}

async function assignTo(userId) {
  if (state.openId === null) return;
  await api(`/api/threads/${state.openId}/assign`, { method: "POST", body: { assignee_user_id: userId } });
  notify(userId ? `Assigned to ${personName(userId)}` : "Unassigned");
  await Promise.all([openThread(state.openId), refresh()]);
}

async function setStatus(status, snoozedUntil) {
  if (state.openId === null) return;
  const body = { status };
  if (snoozedUntil) body.snoozed_until = snoozedUntil;
  await api(`/api/threads/${state.openId}/status`, { method: "POST", body });
  notify(status === "snoozed" ? "Snoozed" : `Conversation ${status}`);
  await Promise.all([openThread(state.openId), refresh()]);
}

function snooze() {
  const tomorrow = new Date();
  tomorrow.setDate(tomorrow.getDate() + 1);
  tomorrow.setHours(8, 0, 0, 0);
  return setStatus("snoozed", tomorrow.toISOString());
}

async function addNote(event) {
  event.preventDefault();
  const body = $("#note-body").value.trim();
  if (!body || state.openId === null) return;
  await api(`/api/threads/${state.openId}/notes`, { method: "POST", body: { body } });
  $("#note-body").value = "";
  await openThread(state.openId);
}

// ---------------------------------------------------------------------------------------------
// Live events and keyboard

function listen() {
  const source = new EventSource("/api/events");
  let pending = null;
  let reopen = false;
  const later = (event) => {
    const data = JSON.parse(event.data);
    // Our own actions already re-rendered the conversation; a colleague's change or new mail
    // in the open conversation re-renders it (keeping what is being typed).
    if (data.thread_id === state.openId && data.actor !== myId) reopen = true;
    clearTimeout(pending);
    pending = setTimeout(() => {
      loadCounts();
      loadThreads();
      if (reopen && state.openId !== null) openThread(state.openId);
      reopen = false;
    }, 300);
  };
  for (const type of ["message.new", "conversation.assigned", "conversation.status", "note.new"]) {
    source.addEventListener(type, later);
  }
  source.addEventListener("mention", (event) => {
    const data = JSON.parse(event.data);
    notify(`${personName(data.actor)} mentioned you`);
    later(event);
  });
  source.addEventListener("presence", (event) => {
    const data = JSON.parse(event.data);
    if (data.thread_id === state.openId) renderPresence(data.people);
  });
  source.addEventListener("signed_out", () => window.location.assign("/login"));
}

function onKey(event) {
  const target = event.target;
  if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) {
    if (event.key === "Escape") target.blur();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const help = $("#help");
  const keys = {
    j: () => select(state.selected + 1, true),
    k: () => select(state.selected - 1, true),
    Enter: () => state.selected >= 0 && openThread(state.threads[state.selected].id),
    a: () => assignTo(myId),
    e: () => setStatus("closed"),
    o: () => setStatus("open"),
    s: () => snooze(),
    n: () => $("#note-body") && $("#note-body").focus(),
    r: () => $("#reply-body") && $("#reply-body").focus(),
    "/": () => $("#search-q").focus(),
    "?": () => { help.hidden = false; $("#help-close").focus(); },
    Escape: () => { help.hidden = true; },
  };
  const action = keys[event.key];
  if (action) {
    event.preventDefault();
    action();
  }
}

async function start() {
  const [team, accounts] = await Promise.all([api("/api/team"), api("/api/accounts")]);
  for (const member of team) state.team.set(member.id, member);
  for (const account of accounts) state.accounts.set(account.id, account.display_name || account.email);
  document.addEventListener("keydown", onKey);
  $("#search").addEventListener("submit", (event) => {
    event.preventDefault();
    state.text = $("#search-q").value.trim();
    refresh();
  });
  $("#more").addEventListener("click", () => loadThreads(true));
  $("#help-button").addEventListener("click", () => { $("#help").hidden = false; $("#help-close").focus(); });
  $("#help-close").addEventListener("click", () => { $("#help").hidden = true; });
  $("#nav-toggle").addEventListener("click", () => {
    const open = document.body.classList.toggle("nav-open");
    $("#nav-toggle").setAttribute("aria-expanded", open ? "true" : "false");
  });
  await refresh();
  listen();
  const linked = /^#thread-(\d+)$/.exec(window.location.hash);  // from a record's timeline
  if (linked) openThread(Number(linked[1]));
}

start();
