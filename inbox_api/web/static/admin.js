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
    el("td", { text: (a.active ? a.status : "deactivated") + oauthText(a) }),
    el("td", { text: when(a.last_success_at) }),
    el("td", { class: a.last_error ? "error" : "", text: a.last_error || "" }),
    el("td", { text: a.folders.map((f) => `${f.name}: ${when(f.last_success_at)}${f.last_error ? " (" + f.last_error + ")" : ""}`).join("; ") }),
    el("td", {}, ...oauthActions(a), a.active
      ? el("button", { type: "button", onclick: () => act(() => api(`/api/accounts/${a.id}/active`, { method: "POST", body: { active: false } }), `${a.email} deactivated; its mail is kept.`) }, "Deactivate")
      : el("button", { type: "button", onclick: () => act(() => api(`/api/accounts/${a.id}/active`, { method: "POST", body: { active: true } }), `${a.email} reactivated.`) }, "Reactivate")))));
  document.getElementById("users").replaceChildren(...users.map((u) => el("tr", {},
    el("td", { text: `${`${u.first_name} ${u.last_name}`.trim() || u.email} <${u.email}>` }),
    el("td", { text: u.is_admin ? "admin" : "member" }),
    el("td", { text: u.active ? "yes" : "no" }),
    el("td", {}, el("button", { type: "button", onclick: () => act(() => api(`/api/users/${u.id}/active`, { method: "POST", body: { active: !u.active } }), u.active ? `${u.email} deactivated: their sessions end now.` : `${u.email} reactivated.`) }, u.active ? "Deactivate" : "Reactivate")))));
  document.getElementById("grant-user").replaceChildren(...users.filter((u) => u.active).map((u) => el("option", { value: String(u.id), text: u.email })));
  document.getElementById("grant-account").replaceChildren(...accounts.map((a) => el("option", { value: String(a.id), text: a.email })));
  const grants = await Promise.all(accounts.map((a) => api(`/api/accounts/${a.id}/grants`).then((g) => [a, g])));
  document.getElementById("grants").replaceChildren(...grants.map(([a, g]) => el("li", { text: `${a.email}: ${g.map((x) => x.email).join(", ") || "nobody yet"}` })));
}

// OAuth2 mailboxes (Google, Microsoft 365...): connect by consent, reconnect, disconnect.
function oauthText(a) {
  if (!a.oauth) return "";
  const o = a.oauth;
  const refreshed = o.refreshed_at ? `, token refreshed ${when(o.refreshed_at)}` : "";
  return ` · ${o.provider} OAuth, ${o.state === "connected" ? "connected" : "needs to be reconnected"}` +
    ` (scopes: ${o.scopes.join(" ")}${refreshed})`;
}

async function startConsent(provider, accountId = null) {
  const started = await api("/api/oauth/start", { method: "POST", body: { provider, account_id: accountId } });
  window.location.assign(started.authorization_url);
}

function oauthActions(a) {
  if (!a.oauth) return [];
  return [
    el("button", { type: "button", onclick: () => startConsent(a.oauth.provider, a.id).catch((e) => say(e.message, true)) }, "Reconnect"),
    el("button", { type: "button", onclick: () => act(() => api(`/api/accounts/${a.id}/oauth/disconnect`, { method: "POST" }), `${a.email} disconnected; its mail is kept.`) }, "Disconnect"),
  ];
}

async function loadProviders() {
  const providers = await api("/api/oauth/providers");
  document.getElementById("oauth-connect").replaceChildren(...providers.map((p) =>
    el("button", { type: "button", "data-provider": p.name, onclick: () => startConsent(p.name).catch((e) => say(e.message, true)) }, `Connect ${p.label} account`)));
}

function oauthOutcome() {
  const params = new URLSearchParams(window.location.search);
  if (params.has("oauth_connected")) say(`Mailbox connected (account ${params.get("oauth_connected")}).`);
  if (params.has("oauth_error")) say(`Connecting the mailbox failed (${params.get("oauth_error")}). Nothing was saved; try again.`, true);
}

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
oauthOutcome();
load().catch((error) => say(error.message, true));
loadProviders().catch(() => {});
