// triage board: plain JavaScript, no build step. Progressive: every page is complete HTML from the
// server; this adds moving cards (drag, or the keyboard-reachable Move menu), the action forms
// (sent as JSON to /board/api/...), and live updates (server-sent events -> re-read the page).
"use strict";

const STATUS_NAMES = {
  new: "New", on_you: "On You", in_progress: "In Progress", on_hold: "On Hold", closed: "Closed",
};

function flash(text, ok) {
  const el = document.getElementById("flash");
  if (!el) return;
  el.textContent = text;
  el.className = ok ? "ok" : "error";
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { el.textContent = ""; el.className = ""; }, 6000);
}

function note(text) {
  const el = document.getElementById("live-note");
  if (el) el.textContent = text;
}

async function api(url, body) {
  const resp = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const e = (data && data.error) || {};
    throw new Error(e.message || ("HTTP " + resp.status));
  }
  return data;
}

// ---- re-reading the page (after our own change, or a change someone else made) ----

let refreshing = false, again = false, pending = null, drag = null;
// Someone is in the middle of something (a menu, a drag, the On Hold dialog): re-read afterwards.
function busy() {
  const menu = document.getElementById("move-menu");
  const dialog = document.getElementById("hold-dialog");
  return drag !== null || (menu && !menu.hidden) || (dialog && dialog.open);
}

async function refresh() {
  if (busy()) { clearTimeout(pending); pending = setTimeout(refresh, 400); return; }
  if (refreshing) { again = true; return; }
  refreshing = true;
  try {
    const resp = await fetch(location.href, { credentials: "same-origin", headers: { accept: "text/html" } });
    if (resp.status === 404 && document.body.dataset.live !== "board") { location.href = "/board"; return; }
    if (!resp.ok) return;
    const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
    const fresh = doc.getElementById("main");
    const main = document.getElementById("main");
    if (!fresh || !main) return;
    const focused = document.activeElement && document.activeElement.id;
    const open = [...main.querySelectorAll("details[open]")].map((d) => d.closest("[id]") && d.closest("[id]").id);
    main.innerHTML = fresh.innerHTML;
    open.forEach((id) => { const d = id && document.getElementById(id); const det = d && d.querySelector("details"); if (det) det.open = true; });
    if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
    document.title = doc.title;
    wire();
  } finally {
    refreshing = false;
    if (again) { again = false; setTimeout(refresh, 50); }
  }
}

function refreshSoon() {
  clearTimeout(pending);
  pending = setTimeout(refresh, 150);
}

// ---- moving a card ----

async function moveCard(id, status) {
  const body = { status };
  if (status === "on_hold") {
    const url = await askIssueUrl();
    if (!url) return;
    body.linked_issue = { url };
  }
  try {
    await api("/board/api/conversations/" + encodeURIComponent(id), body);
    note("Moved to " + STATUS_NAMES[status]);
    await refresh();
    const card = document.querySelector('.card[data-id="' + CSS.escape(id) + '"] .move');
    if (card) card.focus();
  } catch (e) {
    flash("Could not move: " + e.message);
  }
}

function askIssueUrl() {
  const dialog = document.getElementById("hold-dialog");
  const input = document.getElementById("hold-url");
  if (!dialog || !dialog.showModal) {
    return Promise.resolve(window.prompt("On Hold needs the linked issue's URL:") || null);
  }
  input.value = "";
  dialog.showModal();
  input.focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok" && input.value ? input.value : null);
    }, { once: true });
  });
}

// The Move menu: one shared element, filled for the card whose button opened it. Arrow keys move
// between items, Escape closes and returns focus.
function openMenu(button) {
  const menu = document.getElementById("move-menu");
  const card = button.closest(".card");
  if (!menu || !card) return;
  menu.innerHTML = "";
  for (const [status, name] of Object.entries(STATUS_NAMES)) {
    if (status === card.dataset.status) continue;
    const item = document.createElement("button");
    item.type = "button";
    item.setAttribute("role", "menuitem");
    item.dataset.status = status;
    item.textContent = "Move to " + name;
    item.addEventListener("click", () => { closeMenu(false); moveCard(card.dataset.id, status); });
    menu.appendChild(item);
  }
  const r = button.getBoundingClientRect();
  menu.style.top = (window.scrollY + r.bottom + 4) + "px";
  menu.style.left = Math.max(8, Math.min(window.scrollX + r.left, window.scrollX + document.documentElement.clientWidth - 200)) + "px";
  menu.hidden = false;
  menu.dataset.for = card.dataset.id;
  button.setAttribute("aria-expanded", "true");
  menu.opener = button;
  menu.querySelector("button").focus();
}

function closeMenu(refocus) {
  const menu = document.getElementById("move-menu");
  if (!menu || menu.hidden) return;
  menu.hidden = true;
  if (menu.opener) {
    menu.opener.setAttribute("aria-expanded", "false");
    if (refocus) menu.opener.focus();
  }
}

document.addEventListener("keydown", (ev) => {
  const menu = document.getElementById("move-menu");
  if (!menu || menu.hidden) return;
  const items = [...menu.querySelectorAll("button")];
  const i = items.indexOf(document.activeElement);
  if (ev.key === "Escape") { ev.preventDefault(); closeMenu(true); }
  else if (ev.key === "ArrowDown") { ev.preventDefault(); items[(i + 1) % items.length].focus(); }
  else if (ev.key === "ArrowUp") { ev.preventDefault(); items[(i - 1 + items.length) % items.length].focus(); }
  else if (ev.key === "Tab") { closeMenu(false); }
});
document.addEventListener("click", (ev) => {
  const menu = document.getElementById("move-menu");
  if (menu && !menu.hidden && !menu.contains(ev.target) && !ev.target.closest("[data-move]")) closeMenu(false);
});

// Dragging with pointer events (mouse, pen and touch alike): a card follows the pointer once it
// moved a few pixels; dropped over another column, it moves there.
function onPointerDown(ev) {
  const card = ev.target.closest(".card");
  // The title link drags too (a click that did not move still opens it).
  if (!card || ev.button !== 0 || ev.target.closest("button, input, select, textarea")) return;
  drag = { card, x: ev.clientX, y: ev.clientY, started: false, ghost: null, pointer: ev.pointerId };
}
function onPointerMove(ev) {
  if (!drag) return;
  const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
  if (!drag.started) {
    if (Math.abs(dx) + Math.abs(dy) < 6) return;
    drag.started = true;
    const r = drag.card.getBoundingClientRect();
    drag.ghost = drag.card.cloneNode(true);
    drag.ghost.classList.add("ghost");
    drag.ghost.style.width = r.width + "px";
    drag.offset = { x: drag.x - r.left, y: drag.y - r.top };
    document.body.appendChild(drag.ghost);
    drag.card.classList.add("dragging");
  }
  ev.preventDefault();
  drag.ghost.style.left = (ev.clientX - drag.offset.x) + "px";
  drag.ghost.style.top = (ev.clientY - drag.offset.y) + "px";
  document.querySelectorAll(".column.drop").forEach((c) => c.classList.remove("drop"));
  const col = columnAt(ev.clientX, ev.clientY);
  if (col) col.classList.add("drop");
}
function columnAt(x, y) {
  const under = document.elementsFromPoint(x, y).find((el) => el.closest && el.closest(".column") && !el.closest(".ghost"));
  return under ? under.closest(".column") : null;
}
function onPointerUp(ev) {
  if (!drag) return;
  const d = drag;
  drag = null;
  if (!d.started) return;
  // The click that ends a drag must not follow the title link.
  const swallow = (e) => { e.preventDefault(); e.stopPropagation(); };
  document.addEventListener("click", swallow, { capture: true, once: true });
  setTimeout(() => document.removeEventListener("click", swallow, { capture: true }), 0);
  d.ghost.remove();
  d.card.classList.remove("dragging");
  document.querySelectorAll(".column.drop").forEach((c) => c.classList.remove("drop"));
  const col = columnAt(ev.clientX, ev.clientY);
  if (col && col.dataset.column !== d.card.dataset.status) moveCard(d.card.dataset.id, col.dataset.column);
}

// ---- the action forms (conversation view, accounts) ----

function formBody(form, submitter) {
  const f = new FormData(form);
  const v = (k) => { const x = f.get(k); return x === null ? null : String(x).trim(); };
  switch (form.dataset.kind) {
    case "status": {
      const body = { status: v("status") };
      if (v("issue_url")) body.linked_issue = { url: v("issue_url") };
      return body;
    }
    case "owner": return { owner: v("owner") || null };
    case "account-owner": return { owner: v("owner") || null };
    case "priority": return { priority: v("priority") };
    case "title": return { title: v("title") };
    case "issue":
      if (submitter && submitter.name === "unlink") return { linked_issue: null };
      return { linked_issue: v("url") ? { url: v("url") } : null };
    case "merge": return { into: v("into") };
    case "note": return { text: v("text") };
    case "move": return { conversation_id: v("conversation_id") || null };
    default: return {};
  }
}

async function onSubmit(ev) {
  const form = ev.target.closest("form.action");
  if (!form) return;
  ev.preventDefault();
  const body = formBody(form, ev.submitter);
  try {
    const result = await api(form.dataset.action, body);
    flash("Saved.", true);
    if (form.dataset.kind === "note") form.reset();
    if (form.dataset.kind === "merge" && result.conversation) {
      location.href = "/board/c/" + encodeURIComponent(result.conversation.id);
      return;
    }
    await refresh();
  } catch (e) {
    flash(e.message);
  }
}

// ---- live updates ----

function follow() {
  const live = document.body.dataset.live;
  if (!live || !window.EventSource) return;
  const mine = live.startsWith("conversation:") ? live.slice("conversation:".length) : null;
  let opened = 0;
  const source = new EventSource("/board/events");
  source.addEventListener("hello", () => {
    // A reconnect may have missed changes: re-read once.
    if (opened++ > 0) refreshSoon();
    document.body.dataset.connected = "true";
  });
  source.addEventListener("reload", refreshSoon);
  source.addEventListener("change", (ev) => {
    let c;
    try { c = JSON.parse(ev.data); } catch (_) { return; }
    if (!mine) { refreshSoon(); return; }
    if (c.type === "merged" && c.from === mine) { location.href = "/board/c/" + encodeURIComponent(c.into); return; }
    if ((c.conversations || []).includes(mine)) refreshSoon();
  });
}

// One delegated listener for every card's Move button (thousands of cards, no per-card work).
function wire() {}
document.addEventListener("click", (ev) => {
  const b = ev.target.closest && ev.target.closest("[data-move]");
  if (b) openMenu(b);
});

document.addEventListener("DOMContentLoaded", () => {
  document.addEventListener("pointerdown", onPointerDown);
  document.addEventListener("pointermove", onPointerMove);
  document.addEventListener("pointerup", onPointerUp);
  document.addEventListener("pointercancel", () => { if (drag && drag.ghost) drag.ghost.remove(); drag = null; });
  document.addEventListener("submit", onSubmit);
  wire();
  follow();
  document.body.dataset.ready = "true";
});
