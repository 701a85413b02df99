// ATB console: WebAuthn ceremonies and live updates. No inline script anywhere (CSP script-src 'self').
"use strict";

function b64urlToBytes(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
  const raw = atob(b64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out.buffer;
}

function bytesToB64url(buffer) {
  const bytes = new Uint8Array(buffer);
  let raw = "";
  for (let i = 0; i < bytes.length; i++) raw += String.fromCharCode(bytes[i]);
  return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function creationOptions(json) {
  const o = Object.assign({}, json);
  o.challenge = b64urlToBytes(json.challenge);
  o.user = Object.assign({}, json.user, { id: b64urlToBytes(json.user.id) });
  o.excludeCredentials = (json.excludeCredentials || []).map((c) => Object.assign({}, c, { id: b64urlToBytes(c.id) }));
  return o;
}

function requestOptions(json) {
  const o = Object.assign({}, json);
  o.challenge = b64urlToBytes(json.challenge);
  o.allowCredentials = (json.allowCredentials || []).map((c) => Object.assign({}, c, { id: b64urlToBytes(c.id) }));
  return o;
}

function registrationJson(cred) {
  return {
    id: cred.id,
    rawId: bytesToB64url(cred.rawId),
    type: cred.type,
    response: {
      clientDataJSON: bytesToB64url(cred.response.clientDataJSON),
      attestationObject: bytesToB64url(cred.response.attestationObject),
      transports: cred.response.getTransports ? cred.response.getTransports() : [],
    },
    clientExtensionResults: cred.getClientExtensionResults(),
  };
}

function assertionJson(cred) {
  return {
    id: cred.id,
    rawId: bytesToB64url(cred.rawId),
    type: cred.type,
    response: {
      clientDataJSON: bytesToB64url(cred.response.clientDataJSON),
      authenticatorData: bytesToB64url(cred.response.authenticatorData),
      signature: bytesToB64url(cred.response.signature),
      userHandle: cred.response.userHandle ? bytesToB64url(cred.response.userHandle) : null,
    },
    clientExtensionResults: cred.getClientExtensionResults(),
  };
}

function say(text) {
  const el = document.getElementById("status");
  if (el) el.textContent = text;
}

async function postJson(url, body, csrf) {
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  if (csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(url, { method: "POST", headers, body: JSON.stringify(body || {}), credentials: "same-origin" });
  const data = await response.json();
  if (!response.ok || data.ok === false) throw new Error(data.message || "refused");
  return data;
}

async function enroll() {
  const token = document.body.dataset.token;
  try {
    const options = await postJson("/enroll/" + token + "/options", {});
    const cred = await navigator.credentials.create({ publicKey: creationOptions(options.publicKey) });
    await postJson("/enroll/" + token + "/finish", { nonce: options.nonce, credential: registrationJson(cred) });
    say("Passkey enrolled. You can now sign in.");
    document.getElementById("enroll").disabled = true;
  } catch (err) {
    say("Enrollment failed: " + err.message);
  }
}

async function signIn() {
  try {
    const options = await postJson("/signin/options", {});
    const cred = await navigator.credentials.get({ publicKey: requestOptions(options.publicKey) });
    const result = await postJson("/signin/finish", { nonce: options.nonce, credential: assertionJson(cred) });
    window.location.assign(result.next);
  } catch (err) {
    say("Sign-in failed: " + err.message);
  }
}

// A vote under way (the passkey ceremony, then the form's POST): a live update must not reload the
// page under it, or the vote is lost with the page.
let voting = false;

// Ask the console for a challenge (`optionsUrl`, `ask`), have the passkey sign it, and post the form with the
// assertion (and its nonce) in its `assertion` field.
async function signAndSubmit(form, optionsUrl, ask) {
  const options = await postJson(optionsUrl, ask, document.body.dataset.csrf);
  say("Confirm with your passkey...");
  const cred = await navigator.credentials.get({ publicKey: requestOptions(options.publicKey) });
  const assertion = assertionJson(cred);
  assertion.nonce = options.nonce;
  form.elements.assertion.value = JSON.stringify(assertion);
  form.submit();
}

async function approveWithPasskey(event) {
  const form = event.target;
  voting = true;
  if (form.dataset.stepUp !== "yes" || form.elements.assertion.value) return;
  event.preventDefault();
  const ask = { choice: "approve" };
  if (form.dataset.onBehalf) ask.on_behalf = form.dataset.onBehalf;
  try {
    await signAndSubmit(form, "/requests/" + encodeURIComponent(document.body.dataset.requestId) + "/options", ask);
  } catch (err) {
    voting = false;
    say("Approval not sent: " + err.message);
  }
}

async function delegateWithPasskey(event) {
  const form = event.target;
  if (form.elements.assertion.value) return;
  event.preventDefault();
  const ask = {
    delegate: form.elements.delegate.value,
    until: form.elements.until.value,
    tiers: Array.from(form.querySelectorAll("input[name=tier]:checked")).map((el) => el.value),
    reason: form.elements.reason.value,
  };
  try {
    await signAndSubmit(form, "/delegations/options", ask);
  } catch (err) {
    say("Delegation not granted: " + err.message);
  }
}

function countdowns() {
  document.querySelectorAll(".countdown").forEach((el) => {
    const left = Math.max(0, Math.round((Date.parse(el.dataset.deadline) - Date.now()) / 1000));
    el.textContent = left + " s";
  });
}

// The page is being left (a link, the address bar): a live update must not reload it and cancel that.
let leaving = false;

function live() {
  const version = document.body.dataset.version;
  if (version === undefined || !window.EventSource) return;
  const source = new EventSource("/updates?since=" + version);
  window.addEventListener("beforeunload", () => { leaving = true; source.close(); });
  source.addEventListener("changed", () => {
    source.close();
    const live = document.getElementById("live");
    if (live) live.textContent = "Updated.";
    if (!voting && !leaving && !document.querySelector("#deny-form input[name=reason]:focus")) window.location.reload();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "enroll") document.getElementById("enroll").addEventListener("click", enroll);
  if (page === "signin") document.getElementById("signin").addEventListener("click", signIn);
  if (page === "request") {
    const form = document.getElementById("approve-form");
    if (form) form.addEventListener("submit", approveWithPasskey);
    document.querySelectorAll(".on-behalf-form").forEach((el) => el.addEventListener("submit", approveWithPasskey));
    const deny = document.getElementById("deny-form");
    if (deny) deny.addEventListener("submit", () => { voting = true; });
  }
  if (page === "delegations") document.getElementById("delegate-form").addEventListener("submit", delegateWithPasskey);
  if (page === "inbox" || page === "request") {
    countdowns();
    setInterval(countdowns, 1000);
    live();
  }
});
