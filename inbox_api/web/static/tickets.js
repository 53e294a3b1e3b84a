// Tickets (issue 13): the tickets of the conversations the reader sees, filtered by stage,
// priority and owner; stage, priority and owner edited in place (each change lands in the
// ticket's history, shown on demand); the subject links to the conversation.
"use strict";

(() => {
  const { el, api, when } = crm;
  const STAGES = [["new", "New"], ["waiting", "Waiting"], ["in_progress", "In progress"], ["closed", "Closed"]];
  const PRIORITIES = [["low", "Low"], ["medium", "Medium"], ["high", "High"], ["urgent", "Urgent"]];
  const team = new Map();
  const $ = (id) => document.getElementById(id);

  function say(text, isError = false) {
    $("tickets-status").textContent = text;
    $("tickets-status").classList.toggle("error", isError);
  }

  const label = (pairs, value) => (pairs.find(([v]) => v === value) || [value, value])[1];
  const personName = (id) => (id === null || id === undefined ? "nobody" : (team.get(id) || {}).name || `user ${id}`);

  function choice(pairs, value, attrs) {
    return el("select", attrs, ...pairs.map(([v, text]) => el("option", { value: v, text, selected: v === value })));
  }

  function ownerChoices(current) {
    const people = [...team.values()].filter((m) => m.active || m.id === current);
    return [["", "Nobody"], ...people.map((m) => [String(m.id), m.name || m.email])];
  }

  function describe(event) {
    const who = event.actor_user_id === null ? "crm-inbox" : personName(event.actor_user_id);
    const why = {
      new_conversation: "new conversation",
      conversation_closed: "conversation closed",
      conversation_reopened: "conversation reopened",
      new_mail: "the customer wrote again",
      conversations_merged: "conversations merged",
      edited: "edited",
    }[event.reason] || event.reason;
    const value = (v) => (event.change === "owner" ? personName(v === null ? null : Number(v))
      : event.change === "priority" ? label(PRIORITIES, v) : label(STAGES, v));
    const what = event.change === "opened" ? `opened as ${value(event.new_value)}`
      : event.change === "merged" ? `ticket ${event.old_value} merged into this one`
      : `${event.change} ${value(event.old_value)} → ${value(event.new_value)}`;
    return `${when(event.at)}: ${what} (${why}, by ${who})`;
  }

  function historyCell(ticket) {
    const list = el("ol", { "aria-label": `History of ticket #${ticket.number}` });
    const details = el("details", {}, el("summary", { text: "History" }), list);
    details.addEventListener("toggle", async () => {
      if (!details.open) return;
      try {
        const events = await api(`/api/tickets/${ticket.id}/history`);
        list.replaceChildren(...events.map((e) => el("li", { text: describe(e) })));
      } catch (error) { say(error.message, true); }
    });
    return el("td", {}, details);
  }

  async function edit(ticket, body, what) {
    try {
      const saved = await api(`/api/tickets/${ticket.id}`, { method: "PATCH", body });
      say(`Ticket #${saved.number}: ${what}.`);
      const row = document.querySelector(`#tickets tr[data-ticket="${saved.id}"]`);
      if (row) row.replaceWith(ticketRow(saved));
    } catch (error) {
      say(error.message, true);
      await load();  // back to what the server holds
    }
  }

  function ticketRow(t) {
    const n = t.number;
    const customer = t.customer_name
      ? el("td", { class: "customer" }, document.createTextNode(t.customer_name), el("small", { text: t.customer_email }))
      : el("td", { class: "customer", text: t.customer_email || "" });
    return el("tr", { "data-ticket": String(t.id), class: t.closed_at ? "closed" : "" },
      el("td", { class: "number", text: `#${n}` }),
      el("td", { class: "subject" }, el("a", { href: `/#thread-${t.thread_id}`, text: t.subject || "(no subject)" })),
      customer,
      el("td", {}, choice(STAGES, t.stage, {
        class: "stage", "aria-label": `Stage of ticket #${n}`,
        onchange: (e) => edit(t, { stage: e.target.value }, `stage ${label(STAGES, e.target.value)}`) })),
      el("td", {}, choice(PRIORITIES, t.priority, {
        class: "priority", "aria-label": `Priority of ticket #${n}`,
        onchange: (e) => edit(t, { priority: e.target.value }, `priority ${label(PRIORITIES, e.target.value)}`) })),
      el("td", {}, choice(ownerChoices(t.owner_user_id), t.owner_user_id === null ? "" : String(t.owner_user_id), {
        class: "owner", "aria-label": `Owner of ticket #${n}`,
        onchange: (e) => edit(t, e.target.value ? { owner_user_id: Number(e.target.value) } : { clear_owner: true },
          `owner ${e.target.value ? personName(Number(e.target.value)) : "nobody"}`) })),
      el("td", { text: when(t.opened_at) }),
      historyCell(t));
  }

  // Only the newest list request may render: filters changed in quick succession must not let
  // the answer for a filter the reader already left replace the list they chose after it.
  let loads = 0;

  async function load() {
    const ticket = ++loads;
    const params = new URLSearchParams({ limit: "200" });
    if ($("filter-stage").value) params.set("stage", $("filter-stage").value);
    if ($("filter-priority").value) params.set("priority", $("filter-priority").value);
    const owner = $("filter-owner").value;
    if (owner === "none") params.set("unowned", "true");
    else if (owner) params.set("owner_user_id", owner);
    const tickets = await api(`/api/tickets?${params}`);
    if (ticket !== loads) return;
    $("tickets").replaceChildren(...(tickets.length ? tickets.map(ticketRow)
      : [el("tr", {}, el("td", { colspan: "8", class: "muted", text: "No ticket matches." }))]));
  }

  async function start() {
    for (const member of await api("/api/team")) team.set(member.id, member);
    $("filter-owner").append(...[...team.values()].filter((m) => m.active)
      .map((m) => el("option", { value: String(m.id), text: m.name || m.email })));
    for (const id of ["filter-stage", "filter-priority", "filter-owner"]) {
      $(id).addEventListener("change", () => load().catch((e) => say(e.message, true)));
    }
    $("ticket-filters").addEventListener("submit", (e) => e.preventDefault());
    await load();
  }

  start().catch((error) => say(error.message, true));
})();
