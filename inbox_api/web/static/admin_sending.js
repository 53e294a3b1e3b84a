// Outbound settings on the admin page (issue 10): an account's SMTP (saved by the server only
// after its test mail was accepted; a refusal comes back in words) and the tenant's notification
// mail: sending mode, branded sender with its verification and resend, on/off, template wording
// with a preview in a sandboxed frame. Wrapped in a function: admin.js declares the same names.
"use strict";

(() => {
  const { el, api, when } = crm;
  const $ = (id) => document.getElementById(id);
  const PORTS = { starttls: 587, tls: 465, plain: 25 };

  function show(id, text, isError = false) {
    const node = $(id);
    node.textContent = text;
    node.classList.toggle("error", isError);
  }

  // -------------------------------------------------------------------------------------------
  // SMTP of an account

  let accounts = [];

  function describeAccount() {
    const account = accounts.find((a) => String(a.id) === $("smtp-account").value);
    $("smtp-current").textContent = account
      ? `Current SMTP of ${account.email}: ${account.smtp || "not set"}.`
      : "";
  }

  async function loadAccounts() {
    accounts = (await api("/api/accounts")).filter((a) => a.active);
    const options = () => accounts.map((a) => el("option", { value: String(a.id), text: a.email }));
    const chosen = $("smtp-account").value;
    $("smtp-account").replaceChildren(...options());
    if (chosen) $("smtp-account").value = chosen;
    const own = $("sending-account").value;
    $("sending-account").replaceChildren(...accounts.filter((a) => a.smtp).map((a) => el("option", { value: String(a.id), text: a.email })));
    if (own) $("sending-account").value = own;
    describeAccount();
  }

  $("smtp-account").addEventListener("change", describeAccount);
  $("smtp-security").addEventListener("change", () => {
    $("smtp-port").placeholder = String(PORTS[$("smtp-security").value]);
  });

  $("smtp-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const port = $("smtp-port").value.trim();
    const password = $("smtp-password").value;
    const body = {
      host: $("smtp-host").value.trim(),
      security: $("smtp-security").value,
      port: port ? Number(port) : null,
      username: $("smtp-username").value.trim() || null,
      password: password || null,
      test_to: $("smtp-test-to").value.trim(),
    };
    $("smtp-submit").disabled = true;
    show("smtp-result", "Sending the test mail…");
    try {
      const saved = await api(`/api/accounts/${$("smtp-account").value}/smtp`, { method: "PUT", body });
      show("smtp-result", `Saved: ${saved.host}:${saved.port} (${saved.security}) as ${saved.username}. ${saved.message}`);
      $("smtp-password").value = "";  // write-only: never kept in the page
      await loadAccounts();
      await loadSending();
    } catch (error) {
      show("smtp-result", error.message, true);
    } finally {
      $("smtp-submit").disabled = false;
    }
  });

  // -------------------------------------------------------------------------------------------
  // Sending mode, branded sender, on/off

  // The reader's choices in the form since it was last filled or saved: a reload that was
  // already under way (the page's first, or one after an SMTP save or a resend) shows the
  // server's state but must not undo what the reader chose meanwhile.
  let sendingEdited = false;
  $("sending-form").addEventListener("change", () => { sendingEdited = true; });

  async function loadSending() {
    const [sending, pending] = await Promise.all([api("/api/sending"), api("/api/sending/sender")]);
    const via = sending.via === "account" ? "the account's SMTP" : "the deployment's SMTP";
    $("sending-current").textContent =
      `Notification mail now goes from ${sending.effective_name} <${sending.effective_from}> through ${via}` +
      (sending.notifications_enabled ? "." : "; notification mail is off.");
    if (!sendingEdited) {
      for (const radio of document.querySelectorAll('input[name="sending-mode"]')) radio.checked = radio.value === sending.mode;
      if (sending.own_account_id) $("sending-account").value = String(sending.own_account_id);
      $("sending-enabled").checked = sending.notifications_enabled;
    }
    $("sender-verified").textContent = sending.from_email
      ? `Verified: ${sending.from_email}.`
      : "No verified address yet.";
    $("sender-pending").replaceChildren(...pending.map((p) => el("li", { "data-verification": String(p.id) },
      `${p.email}: waiting for its link to be opened (sent ${p.sends} times, expires ${when(p.expires_at)}) `,
      el("button", {
        type: "button",
        disabled: p.next_resend_at === null,
        onclick: () => resend(p),
      }, p.next_resend_at === null ? "No resend left" : "Resend the link"))));
  }

  async function resend(pending) {
    try {
      const again = await api(`/api/sending/sender/${pending.id}/resend`, { method: "POST" });
      show("sending-result", `The link was mailed to ${again.email} again.`);
      await loadSending();
    } catch (error) {
      show("sending-result", error.message, true);
    }
  }

  $("sending-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const mode = document.querySelector('input[name="sending-mode"]:checked');
    const body = { notifications_enabled: $("sending-enabled").checked };
    if (mode) body.mode = mode.value;
    if (mode && mode.value === "own") body.own_account_id = Number($("sending-account").value) || null;
    sendingEdited = false;  // sent as it is now: the saved state may fill the form again
    try {
      await api("/api/sending", { method: "PUT", body });
      show("sending-result", "Notification mail settings saved.");
      await loadSending();
    } catch (error) {
      sendingEdited = true;  // not saved: what the reader chose stays in the form
      show("sending-result", error.message, true);
    }
  });

  $("sender-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const started = await api("/api/sending/sender", { method: "POST", body: { email: $("sender-email").value.trim() } });
      show("sending-result", `A verification link was mailed to ${started.email}; the current sender stays until it is opened.`);
      $("sender-email").value = "";
      await loadSending();
    } catch (error) {
      show("sending-result", error.message, true);
    }
  });

  // -------------------------------------------------------------------------------------------
  // Templates

  let templates = [];

  function fillTemplate() {
    const t = templates.find((x) => x.event === $("template-event").value);
    if (!t) return;
    $("template-subject").value = t.subject;
    $("template-text").value = t.text;
    $("template-html").value = t.html;
    $("template-state").textContent = t.customized ? "Your wording." : "The built-in wording.";
    $("template-tags").replaceChildren(...t.merge_tags.map((tag) => el("code", { text: `{{ ${tag} }} ` })));
  }

  async function loadTemplates() {
    templates = await api("/api/notification-templates");
    const chosen = $("template-event").value;
    $("template-event").replaceChildren(...templates.map((t) => el("option", { value: t.event, text: t.event.replaceAll("_", " ") })));
    if (chosen) $("template-event").value = chosen;
    fillTemplate();
  }

  const wording = () => ({ subject: $("template-subject").value, text: $("template-text").value, html: $("template-html").value });

  async function preview() {
    try {
      const shown = await api(`/api/notification-templates/${$("template-event").value}/preview`, { method: "POST", body: wording() });
      $("template-preview-subject").textContent = `Subject: ${shown.subject}`;
      $("template-preview-text").textContent = shown.text;
      // Sanitized on the server, shown in a sandboxed frame (no scripts) under the page's CSP.
      $("template-preview").srcdoc = shown.html;
      show("template-result", "Preview with sample values.");
    } catch (error) {
      show("template-result", error.message, true);
    }
  }

  $("template-event").addEventListener("change", fillTemplate);
  $("template-preview-button").addEventListener("click", preview);
  $("template-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api(`/api/notification-templates/${$("template-event").value}`, { method: "PUT", body: wording() });
      await loadTemplates();
      show("template-result", "Wording saved.");
    } catch (error) {
      show("template-result", error.message, true);
    }
  });
  $("template-reset").addEventListener("click", async () => {
    try {
      await api(`/api/notification-templates/${$("template-event").value}`, { method: "DELETE" });
      await loadTemplates();
      show("template-result", "Back to the built-in wording.");
    } catch (error) {
      show("template-result", error.message, true);
    }
  });

  (async () => {
    await loadAccounts();
    await Promise.all([loadSending(), loadTemplates()]);
  })().catch((error) => show("sending-result", error.message, true));
})();
