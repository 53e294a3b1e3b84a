// Administration of the forwarding addresses (issue 13): create one; see the address to set as
// forwarding target; change its local part until it is activated; the team's own address and
// the ticket defaults; "send a test"; the providers' confirmation code and link (shown as text:
// they come from a mail); the custom sender of replies, used once the link mailed to it is
// followed. Kept apart from admin.js so each section of the page stays its own script.
"use strict";

(() => {
  const { el, api, when } = crm;
  const $ = (id) => document.getElementById(id);
  const STAGES = [["new", "New"], ["waiting", "Waiting"], ["in_progress", "In progress"], ["closed", "Closed"]];
  const PRIORITIES = [["low", "Low"], ["medium", "Medium"], ["high", "High"], ["urgent", "Urgent"]];
  let seq = 0;  // unique ids for the labels of each card's fields

  function say(text, isError = false) {
    $("forwarding-status").textContent = text;
    $("forwarding-status").classList.toggle("error", isError);
  }

  async function act(fn, done) {
    try { const result = await fn(); say(typeof done === "function" ? done(result) : done); await load(); }
    catch (error) { say(error.message, true); }
  }

  // A short visible label; the team inbox's name completes it for screen readers.
  function field(labelText, input, c) {
    const id = `fwd-field-${++seq}`;
    input.id = id;
    return [el("label", { for: id }, document.createTextNode(labelText), el("span", { class: "visually-hidden", text: ` of ${c.name}` })), input];
  }

  function form(onsubmit, ...children) {
    return el("form", { class: "inline-form", onsubmit: (e) => { e.preventDefault(); onsubmit(e.target); } }, ...children);
  }

  function select(pairs, value) {
    return el("select", {}, ...pairs.map(([v, text]) => el("option", { value: v, text, selected: v === value })));
  }

  function stateText(c) {
    const test = c.test_received_at ? `test received ${when(c.test_received_at)}`
      : c.test_sent_at ? `test sent ${when(c.test_sent_at)}, not back yet` : "no test sent yet";
    return `${c.activated ? `active since ${when(c.activated_at)}` : "not yet activated: the address can still change"}; ${test}`;
  }

  function addressPart(c) {
    const parts = [el("p", {}, document.createTextNode("Forwarding target: "), el("code", { class: "fwd-address", text: c.address }))];
    if (!c.activated) {
      const local = el("input", { value: c.local_part, maxlength: "64", required: true });
      parts.push(form(() => act(() => api(`/api/forwarding/${c.id}`, { method: "PATCH", body: { local_part: local.value } }),
        (saved) => `The address is now ${saved.address}.`),
        ...field("Local part", local, c),
        el("button", { type: "submit" }, "Change address"),
        el("button", { type: "button", onclick: () => act(() => api(`/api/forwarding/${c.id}/activate`, { method: "POST" }),
          `${c.address} is activated: it no longer changes.`) }, "Activate")));
    }
    return parts;
  }

  function settingsPart(c) {
    const original = el("input", { type: "email", value: c.original_address, maxlength: "320" });
    const tickets = el("input", { type: "checkbox", checked: c.create_tickets });
    const stage = select(STAGES, c.ticket_stage);
    const priority = select(PRIORITIES, c.ticket_priority);
    return form(() => act(() => api(`/api/forwarding/${c.id}`, { method: "PATCH", body: {
      original_address: original.value.trim(), create_tickets: tickets.checked,
      ticket_stage: stage.value, ticket_priority: priority.value } }), `${c.name}: settings saved.`),
    ...field("Team's own address", original, c),
    ...field("Tickets for new conversations", tickets, c),
    ...field("Default ticket stage", stage, c),
    ...field("Default ticket priority", priority, c),
    el("button", { type: "submit" }, "Save settings"),
    el("button", { type: "button", onclick: () => act(() => api(`/api/forwarding/${c.id}/test`, { method: "POST" }),
      (test) => `Test sent to ${test.to}: it should come back through the forward within minutes.`) }, "Send a test"));
  }

  function senderPart(c, waiting) {
    const line = el("p", { class: "fwd-sender", text: c.sender_verified
      ? `Replies are sent as ${c.sender_address} (verified).`
      : `Replies are sent as ${c.sender_address} (the forwarding address) until a custom sender is verified.` });
    const parts = [line];
    const latest = waiting[0];
    if (latest) {
      parts.push(el("p", { class: "muted fwd-pending" },
        document.createTextNode(`Waiting for the link mailed to ${latest.email} (sent ${when(latest.last_sent_at)}). `),
        el("button", { type: "button", onclick: () => act(() => api(`/api/sending/sender/${latest.id}/resend`, { method: "POST" }),
          `The link was mailed to ${latest.email} again.`) }, "Resend link")));
    }
    const email = el("input", { type: "email", maxlength: "320", required: true, placeholder: c.original_address || "team@example.com" });
    parts.push(form(() => act(() => api(`/api/forwarding/${c.id}/sender`, { method: "POST", body: { email: email.value.trim() } }),
      `A link was mailed to ${email.value.trim()}: replies are sent as it once the link is followed.`),
      ...field("Custom sender", email, c),
      el("button", { type: "submit" }, "Send verification link")));
    return parts;
  }

  function confirmationsPart(c, confirmations) {
    if (!confirmations.length) return el("p", { class: "muted", text: "No confirmation from a provider yet." });
    return el("ul", { class: "fwd-confirmations", "aria-label": `Provider confirmations of ${c.name}` },
      ...confirmations.map((x) => el("li", {},
        document.createTextNode(`${x.provider || "provider"} (${when(x.received_at)}${x.requested_by ? `, for ${x.requested_by}` : ""}): code `),
        el("code", { class: "fwd-code", text: x.code || "-" }),
        document.createTextNode(x.link ? ", link " : ""),
        x.link ? el("code", { class: "fwd-link", text: x.link }) : null)));
  }

  function card(c, confirmations, waiting) {
    const heading = `fwd-title-${c.id}`;
    return el("article", { class: "channel", "data-channel": String(c.id), "aria-labelledby": heading },
      el("h3", { id: heading, text: c.name }),
      ...addressPart(c),
      el("p", { class: "fwd-state", text: stateText(c) }),
      c.loop_warning ? el("p", { class: "error fwd-loop" }, document.createTextNode(`${c.loop_warning} `),
        el("button", { type: "button", onclick: () => act(() => api(`/api/forwarding/${c.id}/loop-warning`, { method: "DELETE" }),
          "Warning dismissed.") }, "Dismiss warning")) : null,
      settingsPart(c),
      ...senderPart(c, waiting),
      el("h4", { text: "Provider confirmations" }),
      confirmationsPart(c, confirmations));
  }

  // Only the newest load may render: the page's first load answering after the one that
  // followed a change (an address created, activated...) would show the cards from before it.
  let loads = 0;

  async function load() {
    const ticket = ++loads;
    const channels = await api("/api/forwarding");
    const extra = await Promise.all(channels.map((c) => Promise.all([
      api(`/api/forwarding/${c.id}/confirmations`), api(`/api/forwarding/${c.id}/sender`)])));
    if (ticket !== loads) return;
    $("forwarding").replaceChildren(...(channels.length
      ? channels.map((c, i) => card(c, extra[i][0], extra[i][1]))
      : [el("p", { class: "muted", text: "No forwarding address yet." })]));
  }

  $("forwarding-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const local = $("forwarding-local").value.trim();
    act(() => api("/api/forwarding", { method: "POST", body: {
      name: $("forwarding-name").value, local_part: local || null,
      original_address: $("forwarding-original").value.trim(), create_tickets: $("forwarding-tickets").checked } }),
    (created) => `Forwarding address created: ${created.address}.`);
  });
  load().catch((error) => say(error.message, true));
})();
