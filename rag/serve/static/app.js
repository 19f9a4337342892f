// Shvayambhu's page: chat with streamed answers and their evidence, memories, search, ingest. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
const KINDS = ["exemplar", "memory", "reflection", "turn", "self"];
const state = { key: localStorage.getItem("shvayambhu.key") || "", history: {}, busy: false };

function el(tag, attrs = {}, ...children) {
  // Every piece of data becomes text, never HTML: retrieved and stored text is data.
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") node.setAttribute("style", v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

function headers(extra = {}) {
  const h = { ...extra, "X-Shvayambhu-Session": currentSession() };
  if (state.key) h.Authorization = "Bearer " + state.key;
  return h;
}

async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (res.status === 401) { $("keybar").hidden = false; $("key").focus(); }
  return res;
}

async function errorText(res) {
  try {
    const body = await res.json();
    return typeof body.error === "string" ? body.error : body.error?.message || res.statusText;
  } catch { return res.status + " " + res.statusText; }
}

// ---- sessions and models ---------------------------------------------------------------------------------
function currentSession() { return $("session").value || "default"; }

function knownSessions() { return JSON.parse(localStorage.getItem("shvayambhu.sessions") || "[]"); }

async function loadSessions(select) {
  const names = new Set(knownSessions());
  let fallback = "default";
  try {
    const res = await api("/v1/sessions");
    if (res.ok) { const d = await res.json(); d.sessions.forEach((s) => names.add(s)); fallback = d.default; }
  } catch { /* offline: keep the local list */ }
  names.add(fallback);
  const want = select || localStorage.getItem("shvayambhu.session") || fallback;
  names.add(want);
  $("session").replaceChildren(...[...names].sort().map((s) => el("option", { value: s }, s)));
  $("session").value = want;
}

async function loadModels() {
  try {
    const res = await api("/v1/models");
    if (!res.ok) return;
    const d = await res.json();
    $("model").replaceChildren(...d.data.map((m) => el("option", { value: m.id }, m.id)));
    $("model").value = localStorage.getItem("shvayambhu.model") || d.data[0].id;
    if (!$("model").value) $("model").value = d.data[0].id;
  } catch { /* the key bar asks */ }
}

function switchSession(name) {
  localStorage.setItem("shvayambhu.session", name);
  $("messages").replaceChildren($("empty") || el("div"));
  showEmpty(true);
  loadMemories();
}

function showEmpty(on) { const e = $("empty"); if (e) e.hidden = !on; }

// ---- chat ------------------------------------------------------------------------------------------------
function addUser(text) {
  showEmpty(false);
  $("messages").append(el("div", { class: "msg user" }, el("div", { class: "who" }, "You"),
    el("div", { class: "text" }, text)));
}

function addAssistant() {
  const text = el("div", { class: "text cursor" });
  const card = el("div", { class: "card" }, text);
  const msg = el("div", { class: "msg assistant" }, el("div", { class: "who" }, "Shvayambhu"), card);
  $("messages").append(msg);
  return { text, card };
}

function scrollDown() { const m = $("messages"); m.scrollTop = m.scrollHeight; }

async function send(question) {
  if (state.busy || !question.trim()) return;
  state.busy = true; $("send").disabled = true;
  const session = currentSession();
  const history = state.history[session] || (state.history[session] = []);
  addUser(question);
  const out = addAssistant();
  scrollDown();
  let answer = "";
  try {
    const res = await api("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: $("model").value || "shvayambhu", stream: true, user: session,
        messages: [...history, { role: "user", content: question }] }),
    });
    if (!res.ok) throw new Error(await errorText(res));
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
        const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (!data || data === "[DONE]") continue;
        const obj = JSON.parse(data);
        if (obj.error) throw new Error(obj.error.message || "the answer failed");
        const piece = obj.choices?.[0]?.delta?.content;
        if (piece) { answer += piece; out.text.textContent = answer; scrollDown(); }
        if (obj.shvayambhu) out.card.append(evidence(obj.shvayambhu));
      }
    }
    history.push({ role: "user", content: question }, { role: "assistant", content: answer });
    loadMemories();
  } catch (e) {
    out.text.append(el("div", { class: "error" }, "⚠ " + e.message));
  } finally {
    out.text.classList.remove("cursor");
    state.busy = false; $("send").disabled = false; $("input").focus(); scrollDown();
  }
}

function evidence(ev) {
  const box = el("div", { class: "evidence" });
  box.append(meter(ev.confidence, ev.low_confidence, ev));
  if (ev.sources?.length) {
    box.append(el("div", {}, el("div", { class: "section-title" }, `Sources (${ev.sources.length})`),
      ...ev.sources.map(source)));
  }
  const ws = ev.workspace || {};
  if ((ws.winners || []).length + (ws.losers || []).length) box.append(chart(ws));
  (ev.warnings || []).forEach((w) => box.append(el("div", { class: "muted" }, "Note: " + w)));
  return box;
}

function meter(value, low, ev) {
  const pct = Math.round((value || 0) * 100);
  const color = low ? "var(--bad)" : value >= 0.7 ? "var(--good)" : "var(--mid)";
  return el("div", { class: "meter", title: "How well the evidence supports this answer" },
    el("span", {}, "Confidence"),
    el("div", { class: "track", role: "meter", "aria-valuenow": String(pct), "aria-valuemin": "0",
      "aria-valuemax": "100", "aria-label": "Confidence" },
      el("div", { class: "fill", style: `width:${pct}%;background:${color}` })),
    el("strong", {}, pct + "%"),
    el("span", { class: "badge " + (low || !ev.grounded ? "low" : "ok") },
      low ? "low confidence" : ev.grounded ? "grounded" : "not grounded"),
    el("span", { class: "muted" }, `${ev.backend} · ${ev.model}`));
}

function source(s) {
  const tags = [];
  if (s.retriever) tags.push("found by " + s.retriever);
  if (s.retrievers) tags.push("found by " + [].concat(s.retrievers).join(" + "));
  if (s.scores) tags.push(Object.entries(s.scores).map(([k, v]) => `${k} ${Number(v).toFixed(3)}`).join(", "));
  if (s.category) tags.push(s.category);
  const where = sourcePlace(s);
  return el("details", { class: "source" },
    el("summary", {}, el("span", { class: "num" }, `[${s.number}]`),
      where ? el("span", { class: "where", title: s.file || "" }, where) : null,
      el("span", { class: "q" }, s.quote ? `\u201c${s.quote}\u201d` : s.start != null && s.response ? s.response : s.prompt),
      s.used ? el("span", { class: "used" }, "cited") : null,
      el("span", { class: "score" }, Number(s.score).toFixed(3))),
    el("div", { class: "body" }, s.response || ""),
    tags.length ? el("div", { class: "tags" }, tags.join(" · ")) : null);
}

// "ferry_manual.pdf, page 2: Fares": the file's name, its page and heading path (the full path is the tooltip).
function sourcePlace(s) {
  if (!s.file) return s.heading || "";
  const name = s.file.split(/[\\/]/).pop() + (s.page ? `, page ${s.page}` : "");
  return s.heading ? `${name}: ${s.heading}` : name;
}

function kindColor(kind) { return KINDS.includes(kind) ? `var(--${kind})` : "var(--other)"; }

function chart(ws) {
  // Pinned candidates (the self-model's facts) always win: one row per kind; the contest is the rest.
  const pinned = {};
  const rows = [];
  for (const [list, won] of [[ws.winners || [], true], [ws.losers || [], false]]) {
    for (const c of list) {
      if (c.pinned) (pinned[c.kind] = pinned[c.kind] || []).push(c);
      else rows.push({ ...c, won });
    }
  }
  const shown = rows.slice(0, 10);
  const max = Math.max(...shown.map((r) => r.salience), 0.0001);
  const used = ws.budget ? ` · ${ws.used} of ${ws.budget} ${ws.unit}` : "";
  const kinds = [...new Set(shown.map((r) => r.kind))];
  const fixed = Object.entries(pinned).map(([k, list]) => `${list.length} ${k} fact${list.length > 1 ? "s" : ""}`);
  return el("div", {},
    el("div", { class: "section-title" },
      `Workspace: ${(ws.winners || []).length} won, ${(ws.losers || []).length} lost${used}`),
    el("div", { class: "chart", role: "img", "aria-label": "Salience of workspace candidates" },
      ...shown.map((r) => el("div", { class: "row " + (r.won ? "winner" : "loser"),
        title: `${r.kind} ${r.won ? "won" : "lost"}${r.reason ? " (" + r.reason + ")" : ""}: ${r.text}` },
        el("span", { class: "label" }, el("i", { class: "dot", style: `background:${kindColor(r.kind)}` }), r.text),
        el("div", { class: "barwrap" }, el("div", { class: "bar",
          style: `width:${Math.max(2, (100 * r.salience) / max)}%;background:${kindColor(r.kind)}` })),
        el("span", { class: "val" }, Number(r.salience).toFixed(2))))),
    el("div", { class: "legend" },
      ...kinds.map((k) => el("span", {}, el("i", { style: `background:${kindColor(k)}` }), k)),
      el("span", {}, el("i", { class: "faded" }), "lost"),
      fixed.length ? el("span", {}, "always in: " + fixed.join(", ")) : null,
      rows.length > shown.length ? el("span", {}, `+${rows.length - shown.length} more`) : null));
}

// ---- memory ----------------------------------------------------------------------------------------------
async function loadMemories() {
  const session = currentSession();
  $("memory-title").textContent = `Memories of “${session}”`;
  const res = await api(`/v1/sessions/${encodeURIComponent(session)}/memories?limit=100`);
  if (!res.ok) { $("memory-list").replaceChildren(el("li", { class: "error" }, await errorText(res))); return; }
  const d = await res.json();
  if (!d.memories.length) { $("memory-list").replaceChildren(el("li", { class: "muted" }, "Nothing remembered yet.")); return; }
  $("memory-list").replaceChildren(...d.memories.map((m) => el("li", {},
    el("div", { class: "meta" }, el("span", {}, m.kind), el("span", { class: "grow" }, new Date(m.created * 1000).toLocaleString()),
      el("button", { class: "ghost small danger", title: "Forget this memory",
        onclick: () => forget(m.id) }, "Forget")),
    el("div", { class: "body" }, m.text))));
}

async function forget(id) {
  const s = encodeURIComponent(currentSession());
  await api(`/v1/sessions/${s}/memories/${encodeURIComponent(id)}`, { method: "DELETE" });
  loadMemories();
}

// ---- search and ingest -----------------------------------------------------------------------------------
async function search(query) {
  const res = await api("/v1/search", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ query, k: 8 }) });
  if (!res.ok) { $("search-results").replaceChildren(el("li", { class: "error" }, await errorText(res))); return; }
  const hits = await res.json();
  $("search-results").replaceChildren(...(hits.length ? hits.map((h) => el("li", {},
    el("div", { class: "meta" }, el("span", { class: "grow" }, h.metadata?.category || ""),
      el("span", {}, Number(h.score).toFixed(3))),
    el("div", {}, el("strong", {}, h.prompt)), el("div", { class: "body" }, h.response))) :
    [el("li", { class: "muted" }, "No hits.")]));
}

async function ingest(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("file", f, f.name);
  $("ingest-result").replaceChildren(el("p", { class: "muted" }, `Ingesting ${files.length} file(s)…`));
  const res = await api("/v1/ingest", { method: "POST", body: form });
  if (!res.ok) { $("ingest-result").replaceChildren(el("p", { class: "error" }, await errorText(res))); return; }
  const d = await res.json();
  $("ingest-result").replaceChildren(
    el("p", { class: "summary" }, `Added ${d.added}, updated ${d.updated}, unchanged ${d.unchanged}, ` +
      `rejected ${d.rejected} in ${d.seconds} s.`),
    el("ul", { class: "list rejections" }, ...d.rejections.map((r) =>
      el("li", {}, el("div", { class: "meta" }, `${r.file}:${r.line}`), el("div", {}, r.reason)))));
}

// ---- wiring ----------------------------------------------------------------------------------------------
function selectTab(name) {
  document.querySelectorAll(".tabs button").forEach((b) => b.setAttribute("aria-selected", String(b.dataset.tab === name)));
  for (const t of ["memory", "search", "ingest"]) $("tab-" + t).hidden = t !== name;
}

function grow() { const t = $("input"); t.style.height = "auto"; t.style.height = Math.min(t.scrollHeight, 192) + "px"; }

function init() {
  const narrow = window.matchMedia("(max-width: 760px)");
  const fit = (small) => {
    $("side").hidden = small;
    $("toggle-side").textContent = "Panels";
    $("input").placeholder = small ? "Ask a question…" : "Ask a question…  (Enter sends, Shift+Enter for a new line)";
  };
  fit(narrow.matches);
  narrow.addEventListener("change", (e) => fit(e.matches));
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault(); const q = $("input").value; $("input").value = ""; grow(); send(q);
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  $("input").addEventListener("input", grow);
  $("session").addEventListener("change", () => switchSession(currentSession()));
  $("model").addEventListener("change", () => localStorage.setItem("shvayambhu.model", $("model").value));
  $("new-session").addEventListener("click", async () => {
    const name = (prompt("Name of the new session:", "session-" + new Date().toISOString().slice(0, 10)) || "").trim();
    if (!name) return;
    localStorage.setItem("shvayambhu.sessions", JSON.stringify([...new Set([...knownSessions(), name])]));
    await loadSessions(name); switchSession(name);
  });
  $("toggle-side").addEventListener("click", () => {
    const side = $("side"); side.hidden = !side.hidden;
    $("toggle-side").setAttribute("aria-expanded", String(!side.hidden));
    $("toggle-side").textContent = side.hidden ? "Panels" : "Chat";
  });
  document.querySelectorAll(".tabs button").forEach((b) => b.addEventListener("click", () => selectTab(b.dataset.tab)));
  $("memory-refresh").addEventListener("click", loadMemories);
  $("memory-clear").addEventListener("click", async () => {
    if (!confirm(`Forget every memory of “${currentSession()}”?`)) return;
    await api(`/v1/sessions/${encodeURIComponent(currentSession())}/memories`, { method: "DELETE" });
    loadMemories();
  });
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); search($("search-q").value); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); ingest([...e.dataTransfer.files]); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
  $("file").addEventListener("change", () => { ingest([...$("file").files]); $("file").value = ""; });
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault(); state.key = $("key").value.trim(); localStorage.setItem("shvayambhu.key", state.key);
    $("keybar").hidden = true; boot();
  });
  boot();
}

async function boot() { await loadModels(); await loadSessions(); loadMemories(); }

init();
