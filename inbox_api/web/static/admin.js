// Administration: accounts with their sync health (the last error in words), users, access.
"use strict";

const { el, api, when } = crm;

function say(text, isError = false) {
  const status = document.getElementById("admin-status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

async function act(fn, done) {
  try { await fn(); say(done); await load(); } catch (error) { say(error.message, true); }
}

async function load() {
  const [tenant, accounts, users] = await Promise.all([api("/api/tenant"), api("/api/accounts"), api("/api/users")]);
  document.getElementById("quota").textContent =
    `${tenant.name}: ${tenant.active_accounts} of ${tenant.account_quota} mail accounts in use.`;
  document.getElementById("accounts").replaceChildren(...accounts.map((a) => el("tr", { "data-account": String(a.id) },
    el("td", { text: a.display_name ? `${a.display_name} <${a.email}>` : a.email }),
    el("td", { text: a.active ? a.status : "deactivated" }),
    el("td", { text: when(a.last_success_at) }),
    el("td", { class: a.last_error ? "error" : "", text: a.last_error || "" }),
    el("td", { text: a.folders.map((f) => `${f.name}: ${when(f.last_success_at)}${f.last_error ? " (" + f.last_error + ")" : ""}`).join("; ") }),
    el("td", {}, a.active
      ? el("button", { type: "button", onclick: () => act(() => api(`/api/accounts/${a.id}/active`, { method: "POST", body: { active: false } }), `${a.email} deactivated; its mail is kept.`) }, "Deactivate")
      : el("button", { type: "button", onclick: () => act(() => api(`/api/accounts/${a.id}/active`, { method: "POST", body: { active: true } }), `${a.email} reactivated.`) }, "Reactivate")))));
  document.getElementById("users").replaceChildren(...users.map((u) => el("tr", {},
    el("td", { text: `${`${u.first_name} ${u.last_name}`.trim() || u.email} <${u.email}>` }),
    el("td", { text: u.is_admin ? "admin" : "member" }),
    el("td", { text: u.active ? "yes" : "no" }),
    el("td", {}, el("button", { type: "button", onclick: () => act(() => api(`/api/users/${u.id}/active`, { method: "POST", body: { active: !u.active } }), u.active ? `${u.email} deactivated: their sessions end now.` : `${u.email} reactivated.`) }, u.active ? "Deactivate" : "Reactivate")))));
  document.getElementById("grant-user").replaceChildren(...users.filter((u) => u.active).map((u) => el("option", { value: String(u.id), text: u.email })));
  document.getElementById("grant-account").replaceChildren(...accounts.map((a) => el("option", { value: String(a.id), text: a.email })));
  await loadForwarding();
  const grants = await Promise.all(accounts.map((a) => api(`/api/accounts/${a.id}/grants`).then((g) => [a, g])));
  document.getElementById("grants").replaceChildren(...grants.map(([a, g]) => el("li", { text: `${a.email}: ${g.map((x) => x.email).join(", ") || "nobody yet"}` })));
}

// Forwarding addresses (issue 13): the address to set as forwarding target, its warnings, and the
// provider's confirmation code and link (shown as text: it comes from a mail).
async function loadForwarding() {
  const channels = await api("/api/forwarding");
  const confirmations = await Promise.all(channels.map((c) => api(`/api/forwarding/${c.id}/confirmations`)));
  document.getElementById("forwarding").replaceChildren(...channels.map((c, i) => {
    const latest = confirmations[i][0];
    const state = [c.activated ? "active" : "not yet activated",
      c.test_received_at ? "test received" : (c.test_sent_at ? "test sent, not back yet" : "")].filter(Boolean).join("; ");
    return el("tr", { "data-channel": String(c.id) },
      el("td", { text: c.name }),
      el("td", { text: c.address }),
      el("td", { class: c.loop_warning ? "error" : "", text: c.loop_warning || state }),
      el("td", { text: latest ? `${latest.provider}: code ${latest.code || "-"} ${latest.link || ""}` : "none yet" }));
  }));
}

document.getElementById("forwarding-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const local = document.getElementById("forwarding-local").value.trim();
  act(() => api("/api/forwarding", { method: "POST", body: {
    name: document.getElementById("forwarding-name").value, local_part: local || null } }), "Forwarding address created.");
});
document.getElementById("user-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const [first, ...last] = document.getElementById("user-name").value.trim().split(" ");
  act(() => api("/api/users", { method: "POST", body: {
    email: document.getElementById("user-email").value, first_name: first || "", last_name: last.join(" "),
    is_admin: document.getElementById("user-admin").checked } }), "User added.");
});
document.getElementById("grant-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const account = document.getElementById("grant-account").value;
  act(() => api(`/api/accounts/${account}/grants`, { method: "POST", body: { user_id: Number(document.getElementById("grant-user").value) } }), "Access granted.");
});
load().catch((error) => say(error.message, true));
