// Contacts, companies and deals: a searchable list, and one record with its mail timeline
// (what the sharing level of each mailbox lets the reader see).
"use strict";

const kind = document.querySelector('meta[name="record-kind"]').content;
const recordId = document.querySelector('meta[name="record-id"]').content;
const { el, api, when } = crm;

const COLUMNS = {
  contacts: [["Name", (r) => r.full_name], ["E-mail", (r) => r.emails.join(", ")], ["Phone", (r) => r.phone]],
  companies: [["Name", (r) => r.name], ["Domains", (r) => r.domains.join(", ")]],
  deals: [["Title", (r) => r.title], ["Stage", (r) => r.stage], ["Status", (r) => r.status],
          ["Amount", (r) => (r.amount === null ? "" : `${r.amount.toLocaleString()} ${r.currency}`)]],
};

let after = 0;
// Only the newest list request may render: the first page's answer arriving after a search's
// must not replace the search's results (nor a stale page be appended to them).
let listRequests = 0;

async function loadList(append) {
  const ticket = ++listRequests;
  const q = document.getElementById("record-q").value.trim();
  const params = new URLSearchParams({ limit: "50" });
  if (q) params.set("q", q);
  if (append && after) params.set("after", String(after));
  const page = await api(`/api/${kind}?${params}`);
  if (ticket !== listRequests) return;
  const body = document.getElementById("grid-body");
  const rows = page.items.map((record) => el("tr", {},
    ...COLUMNS[kind].map(([, cell], i) => el("td", {},
      i === 0 ? el("a", { href: `/records/${kind}/${record.id}`, text: cell(record) || "(no name)" }) : document.createTextNode(cell(record) || "")))));
  if (append) body.append(...rows); else body.replaceChildren(...rows);
  after = page.next_cursor || 0;
  document.getElementById("grid-more").hidden = !page.next_cursor;
}

function describe(record) {
  if (kind === "contacts") return [record.full_name, record.emails.join(", "), record.phone].filter(Boolean);
  if (kind === "companies") return [record.name, record.domains.join(", ")];
  return [record.title, `${record.stage} · ${record.status}`, record.amount === null ? "" : `${record.amount} ${record.currency}`];
}

let cursor = null;

async function loadTimeline(append) {
  const params = new URLSearchParams({ limit: "50" });
  if (append && cursor) params.set("cursor", cursor);
  const page = await api(`/api/${kind}/${recordId}/timeline?${params}`);
  const items = page.items.map((item) => {
    const who = item.sender ? (item.sender.name || item.sender.email) : "";
    const head = el("div", { class: "timeline-head" },
      el("time", { text: when(item.date) }), el("span", { class: "who", text: who }),
      el("span", { class: "level", text: item.level === "full" ? "" : `(${item.level} only)` }));
    const subject = item.subject === null ? null
      : item.thread_id ? el("a", { href: `/#thread-${item.thread_id}`, text: item.subject || "(no subject)" })
      : el("span", { text: item.subject || "(no subject)" });
    return el("li", { class: `timeline-item ${item.direction}` }, head, subject, item.snippet ? el("p", { text: item.snippet }) : null);
  });
  const list = document.getElementById("timeline");
  if (append) list.append(...items); else list.replaceChildren(...items);
  if (!list.children.length) list.append(el("li", { class: "empty", text: "No mail on this record yet." }));
  cursor = page.next_cursor;
  document.getElementById("timeline-more").hidden = !page.next_cursor;
}

async function start() {
  if (recordId) {
    const record = await api(`/api/${kind}/${recordId}`);
    const [title, ...rest] = describe(record);
    document.getElementById("record").replaceChildren(el("h1", { text: title || "(no name)" }), ...rest.filter(Boolean).map((t) => el("p", { text: t })));
    document.getElementById("timeline-more").addEventListener("click", () => loadTimeline(true));
    await loadTimeline(false);
    return;
  }
  document.getElementById("grid-head").replaceChildren(...COLUMNS[kind].map(([label]) => el("th", { text: label })));
  document.getElementById("record-search").addEventListener("submit", (event) => { event.preventDefault(); loadList(false); });
  document.getElementById("grid-more").addEventListener("click", () => loadList(true));
  await loadList(false);
}

start().catch((error) => { document.querySelector("main").append(el("p", { class: "error", role: "alert", text: error.message })); });
