// Shared by the records and admin pages: the same rules as app.js (textContent only, CSRF
// header on changes, errors shown in words).
"use strict";

const crm = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  async function api(path, options = {}) {
    const method = options.method || "GET";
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = csrf;
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
    if (response.status === 401) { window.location.assign("/login"); throw new Error("signed out"); }
    if (response.status === 204) return null;
    const data = await response.json();
    if (!response.ok) {
      const problem = (data && data.error) || {};
      const error = new Error(problem.message || `Request failed (${response.status})`);
      error.code = problem.code;  // the stable code, for pages that offer a next step per cause
      throw error;
    }
    return data;
  }

  const when = (value) => (value ? new Date(value).toLocaleString() : "never");
  return { el, api, when };
})();
