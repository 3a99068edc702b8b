// bpm web: the live dashboard. It loads the records once, then follows the
// server's event stream; it never polls. No framework: rows are kept by id
// and only the cells that changed are written.
"use strict";

const LIVE = ["pending", "starting", "running", "paused", "stopping", "unreachable"];
const SLOT = ["starting", "running", "paused", "stopping"];
const STATES = LIVE.concat(["completed", "failed", "timed_out", "cancelled", "lost"]);
const SCROLLBACK = 5000;

const S = {
  rows: new Map(),        // id -> record row (JSON from the server)
  usage: new Map(),       // id -> {cpu_percent, rss_bytes, listening_ports, processes}
  trs: new Map(),         // id -> <tr>
  collapsed: new Set(),
  selected: new Set(),
  order: [],              // ids in the order shown
  depth: new Map(),       // id -> depth in the tree, for the rows shown
  kids: new Map(),        // id -> its children shown
  sort: { key: "created", dir: -1 },
  status: null,
  readOnly: false,
  detail: null,           // the open record's id
  tail: null,             // the open output stream
  focus: null,            // the focused row's id
  renders: 0,
  loadedAt: null,         // ms after navigation start when the first full table was drawn
};
window.bpm = S; // for tests and benchmarks: S.renders counts renders.

const $ = (sel) => document.querySelector(sel);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}

// ---- talking to the server ------------------------------------------------

// Answers and events can cross: a record's newer version always wins.
function upsert(row) {
  const have = S.rows.get(row.id);
  if (!have || have.version <= row.version) S.rows.set(row.id, row);
}

async function api(path, options) {
  const r = await fetch(path, Object.assign({
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
  }, options || {}));
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}

function toast(text, bad) {
  const t = $("#toast");
  t.textContent = text;
  t.classList.toggle("bad", !!bad);
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, bad ? 6000 : 2500);
}

async function loadAll() {
  const [status, rows] = await Promise.all([api("/api/status"), api("/api/processes")]);
  S.status = status;
  S.readOnly = !!status.read_only;
  document.body.classList.toggle("readonly", S.readOnly);
  const old = S.rows;
  S.rows = new Map();
  for (const r of rows) {
    const have = old.get(r.id);
    S.rows.set(r.id, have && have.version > r.version ? have : r);
  }
  for (const id of [...S.selected]) if (!S.rows.has(id)) S.selected.delete(id);
  schedule();
}

let source = null;
let wasDown = false;
function connect() {
  source = new EventSource("/api/live");
  source.onopen = () => {
    $("#banner").hidden = true;
    if (wasDown) { wasDown = false; loadAll().catch((e) => toast(e.message, true)); }
  };
  source.onerror = () => {
    $("#banner").hidden = false;
    wasDown = true;
    // EventSource reconnects by itself; if the server closed for good, start again.
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  };
  source.addEventListener("change", (m) => {
    const { event, record } = JSON.parse(m.data);
    if (record) upsert(record);
    else { S.rows.delete(event.id); S.selected.delete(event.id); }
    if (S.detail === event.id) detailEvent(event, record);
    if (!renderChanged([event.id])) schedule();
  });
  source.addEventListener("usage", (m) => {
    const had = S.usage;
    S.usage = new Map(JSON.parse(m.data).map((u) => [u.id, u]));
    // Usage moves rows only when the table is sorted by it.
    if (!renderChanged(new Set([...had.keys(), ...S.usage.keys()]))) schedule();
  });
  source.addEventListener("resync", () => loadAll().catch((e) => toast(e.message, true)));
}

// ---- formatting ----------------------------------------------------------

function ms(t) { return t ? Date.parse(t) : null; }
function span(msec) {
  if (msec === null || msec === undefined || msec < 0) return "";
  const s = Math.floor(msec / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}
function bytes(n) {
  if (n === null || n === undefined) return "";
  if (n < 1 << 20) return `${Math.round(n / 1024)} KiB`;
  if (n < 1 << 30) return `${(n / (1 << 20)).toFixed(n < 10 << 20 ? 1 : 0)} MiB`;
  return `${(n / (1 << 30)).toFixed(1)} GiB`;
}
function cpu(p) { return p === undefined || p === null ? "" : `${p < 10 ? p.toFixed(1) : Math.round(p)}%`; }
function elapsed(r, now) {
  const start = ms(r.started_at);
  if (!start) return null;
  return (ms(r.ended_at) || now) - start;
}
function exitText(r) {
  if (r.exit_code !== null && r.exit_code !== undefined) return String(r.exit_code);
  if (r.signal) return `signal ${r.signal}`;
  return "";
}
// A project's service (`bpm up`) carries its project in a label.
function projectOf(r) { return (r.labels || {})["bpm.project"] || ""; }
function displayName(r) { return r.name || r.command_line || "(tracked operation)"; }
function isLive(r) { return LIVE.includes(r.state); }

// ---- filtering, sorting, the tree ----------------------------------------

function filters() {
  return {
    text: $("#search").value.trim().toLowerCase(),
    state: $("#f-state").value,
    group: $("#f-group").value,
    kind: $("#f-kind").value,
    session: $("#f-session").value,
    project: $("#f-project").value,
    node: $("#f-node").value,
    label: $("#f-label").value.trim(),
  };
}

function matches(r, f) {
  if (f.state === "live" ? !isLive(r) : f.state && r.state !== f.state) return false;
  if (f.group && r.group !== f.group) return false;
  if (f.kind && r.kind !== f.kind) return false;
  if (f.session && r.session !== f.session) return false;
  if (f.project && projectOf(r) !== f.project) return false;
  if (f.node && r.node !== f.node) return false;
  if (f.label) {
    const [k, v] = f.label.split("=");
    const have = (r.labels || {})[k];
    if (have === undefined || (v !== undefined && v !== "" && have !== v)) return false;
  }
  if (f.text) {
    const hay = `${r.name || ""} ${r.command_line || ""} ${r.id}`.toLowerCase();
    if (!hay.includes(f.text)) return false;
  }
  return true;
}

function sortValue(r, key, now) {
  const u = S.usage.get(r.id);
  switch (key) {
    case "name": return displayName(r).toLowerCase();
    case "state": return STATES.indexOf(r.state);
    case "kind": return r.kind || "";
    case "group": return r.group || "";
    case "node": return r.node || "";
    case "pid": return r.pid || 0;
    case "time": return elapsed(r, now) || 0;
    case "restarts": return r.restarts || 0;
    case "exit": return exitText(r);
    case "progress": return r.progress ? r.progress.percent : -1;
    case "cpu": return u ? u.cpu_percent : -1;
    case "rss": return u ? u.rss_bytes : -1;
    default: return r.created_at || "";
  }
}

// The ids to show, parents before their children, each level sorted.
function visibleOrder() {
  const f = filters();
  const now = Date.now();
  const shown = new Set();
  for (const r of S.rows.values()) if (matches(r, f)) shown.add(r.id);
  const kids = new Map();
  const roots = [];
  for (const id of shown) {
    const r = S.rows.get(id);
    if (r.parent && shown.has(r.parent)) {
      if (!kids.has(r.parent)) kids.set(r.parent, []);
      kids.get(r.parent).push(r);
    } else roots.push(r);
  }
  const { key, dir } = S.sort;
  // A project's services stay together, projects first, by name.
  const cmp = (a, b) => {
    const pa = projectOf(a), pb = projectOf(b);
    if (pa !== pb) return pa === "" ? 1 : pb === "" ? -1 : pa < pb ? -1 : 1;
    const x = sortValue(a, key, now), y = sortValue(b, key, now);
    if (x < y) return -dir;
    if (x > y) return dir;
    return a.id < b.id ? -dir : a.id > b.id ? dir : 0;
  };
  const out = [];
  const depth = new Map();
  const walk = (r, d) => {
    out.push(r.id);
    depth.set(r.id, d);
    const k = kids.get(r.id);
    if (!k || S.collapsed.has(r.id)) return;
    k.sort(cmp);
    for (const c of k) walk(c, d + 1);
  };
  roots.sort(cmp);
  for (const r of roots) walk(r, 0);
  return { ids: out, depth, kids };
}

// ---- rendering -----------------------------------------------------------

// The whole table is drawn once per frame, however many changes asked.
let pending = false;
function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => { pending = false; render(); });
}

function setText(cell, text) { if (cell.textContent !== text) cell.textContent = text; }

function makeRow(id) {
  const tr = el("tr", { "data-id": id, tabindex: "-1" });
  const cells = ["c-sel act", "c-name", "c-state", "c-kind", "c-group", "c-node", "c-pid num",
    "c-time num", "c-restarts num", "c-exit", "c-progress", "c-cpu num", "c-rss num", "c-ports", "c-actions act"];
  for (const c of cells) tr.append(el("td", { class: c }));
  const box = el("input", { type: "checkbox", "aria-label": "Select" });
  box.addEventListener("click", (e) => { e.stopPropagation(); toggleSelect(id); });
  tr.cells[0].append(box);
  tr.addEventListener("click", () => { S.focus = id; openDetail(id); });
  tr.addEventListener("focus", () => { S.focus = id; });
  return tr;
}

function actionButtons(r, small) {
  const b = (label, action, title) => el("button", {
    type: "button", text: label, title, "data-action": action,
    onclick: (e) => { e.stopPropagation(); act([r.id], action); },
  });
  const out = [];
  const label = (short, long) => (small ? short : long);
  if (SLOT.includes(r.state) || r.state === "pending") {
    out.push(b(label("stop", "Stop"), "stop", "Stop: TERM, the grace period, then KILL (s)"));
    out.push(b(label("kill", "Force stop"), "force", "Stop with KILL at once"));
  }
  if (r.state === "running" && (r.pid || r.schedule)) out.push(b(label("pause", "Pause"), "pause", "Pause (p)"));
  if (r.state === "paused") out.push(b(label("resume", "Resume"), "resume", "Resume (r)"));
  if (r.command_line) out.push(b(label("restart", "Restart"), "restart", "Restart (R)"));
  if (!isLive(r)) out.push(b(label("rm", "Remove"), "remove", "Remove the record and its output (Del)"));
  return out;
}

// A project's service scales from its detail: a copy more, a copy fewer
// (`bpm scale`); web.2, web.3 are copies of web.
function serviceOf(r) {
  const s = (r.labels || {})["bpm.service"] || "";
  const m = /^(.+)\.([0-9]+)$/.exec(s);
  return m && Number(m[2]) >= 2 ? m[1] : s;
}

function copiesOf(r) {
  const project = projectOf(r), service = serviceOf(r);
  let copies = 0;
  for (const o of S.rows.values()) {
    if (isLive(o) && projectOf(o) === project && serviceOf(o) === service) copies++;
  }
  return copies;
}

function scaleControls(r) {
  const project = projectOf(r), service = serviceOf(r);
  if (!project || !service || !isLive(r)) return [];
  const copies = copiesOf(r);
  const to = (n) => async (e) => {
    e.stopPropagation();
    try {
      await api(`/api/projects/${encodeURIComponent(project)}/services/${encodeURIComponent(service)}/scale`,
        { method: "POST", body: JSON.stringify({ replicas: n }) });
      toast(`${project}/${service}: ${n} running`);
    } catch (err) { toast(err.message, true); }
  };
  return [
    el("span", { class: "copies", text: `copies ${copies}`, title: `copies of ${service} running` }),
    el("button", { type: "button", text: "−", title: "One copy fewer", "data-action": "scale-down", onclick: to(copies - 1) }),
    el("button", { type: "button", text: "+", title: "One copy more", "data-action": "scale-up", onclick: to(copies + 1) }),
  ];
}

function fillRow(tr, r, depth, hasKids, now) {
  const c = tr.cells;
  const key = [r.version, r.state, depth, hasKids, S.collapsed.has(r.id), S.selected.has(r.id)].join("|");
  tr.classList.toggle("selected", S.selected.has(r.id));
  tr.classList.toggle("open", S.detail === r.id);
  tr.dataset.state = r.state;
  if (tr.dataset.key !== key) {
    tr.dataset.key = key;
    c[0].firstChild.checked = S.selected.has(r.id);
    const name = c[1];
    name.textContent = "";
    name.append(el("span", { class: "indent" }));
    name.firstChild.style.width = `${depth * 16}px`;
    if (hasKids) {
      name.append(el("button", {
        class: "twist", type: "button", text: S.collapsed.has(r.id) ? "▸" : "▾",
        "aria-label": S.collapsed.has(r.id) ? "Expand children" : "Collapse children",
        onclick: (e) => { e.stopPropagation(); toggleCollapse(r.id); },
      }));
    } else name.append(el("span", { class: "twist" }));
    name.append(el("span", { class: "nm", text: displayName(r) }));
    if (r.name && r.command_line) name.append(el("span", { class: "cmd", text: r.command_line }));
    name.title = `${displayName(r)}\n${r.id}`;
    c[2].textContent = "";
    c[2].append(el("span", { class: `badge ${r.state}`, text: r.state.replace("_", " ") }));
    if (r.schedule && r.state === "running") {
      // A schedule: no process of its own; its runs are rows of their own.
      const due = new Date(ms(r.schedule.next_due));
      c[2].firstChild.textContent = "scheduled";
      c[2].append(el("span", {
        class: "next", text: ` next ${due.toLocaleTimeString()}`,
        title: `${r.schedule.runs} runs started, ${r.schedule.skipped || 0} skipped, ${r.schedule.missed || 0} missed`,
      }));
    }
    if (r.health && isLive(r)) {
      const h = r.health;
      c[2].append(el("span", {
        class: `health ${h.healthy ? "healthy" : "unhealthy"}`,
        text: h.healthy ? "healthy" : "unhealthy",
        title: h.last_failure || "",
      }));
    }
    setText(c[3], r.kind || "");
    setText(c[4], r.group || "");
    setText(c[5], r.node || "");
    setText(c[6], r.pid ? String(r.pid) : "");
    setText(c[8], r.restarts ? String(r.restarts) : "");
    setText(c[9], exitText(r));
    c[10].textContent = "";
    if (r.progress) {
      const p = r.progress;
      const bar = el("span", { class: "bar", title: `${p.percent}%` }, el("span"));
      bar.firstChild.style.width = `${Math.max(0, Math.min(100, p.percent))}%`;
      const left = p.eta && isLive(r) ? ms(p.eta) - now : -1;
      const eta = left > 0 ? ` · ETA ${span(left)}` : "";
      c[10].append(el("span", { class: "prog" }, bar, el("span", { text: `${Math.round(p.percent)}%` }),
        el("span", { class: "msg", text: `${p.message || ""}${eta}`, title: p.message || "" })));
    }
    c[14].textContent = "";
    for (const b of actionButtons(r, true)) c[14].append(b);
  }
  const t = elapsed(r, now);
  setText(c[7], t === null ? "" : span(t));
  const u = isLive(r) ? S.usage.get(r.id) : null;
  setText(c[11], u ? cpu(u.cpu_percent) : "");
  setText(c[12], u ? bytes(u.rss_bytes) : "");
  setText(c[13], u && u.listening_ports.length ? u.listening_ports.join(", ") : "");
}

// Sorted by one of these, a record's change cannot move its row.
const FIXED_SORT = ["created", "name", "kind", "group"];

// Draws only the rows of records that changed, when none of them can
// appear, leave or move; false when the whole table must be drawn. Such a
// draw costs a row, not the table, so it is made at once, without waiting
// for a frame: the next paint shows it.
function renderChanged(ids) {
  if (!FIXED_SORT.includes(S.sort.key)) return false;
  const f = filters();
  for (const id of ids) {
    const r = S.rows.get(id);
    if (!r || !S.trs.has(id) || matches(r, f) !== S.depth.has(id)) return false;
  }
  S.renders++;
  const now = Date.now();
  for (const id of ids) {
    if (S.depth.has(id)) fillRow(S.trs.get(id), S.rows.get(id), S.depth.get(id), S.kids.has(id), now);
  }
  renderStrip(now);
  if (S.detail) renderDetailHead();
  return true;
}

function render() {
  S.renders++;
  const now = Date.now();
  updateFilters();
  const { ids, depth, kids } = visibleOrder();
  const body = $("#rows");
  for (const [id, tr] of S.trs) {
    if (!S.rows.has(id)) { tr.remove(); S.trs.delete(id); }
  }
  const same = ids.length === S.order.length && ids.every((id, i) => id === S.order[i]);
  if (!same) {
    // Rows already in their place stay put: a row taken out and put back is
    // styled and laid out again, so moving all 1,000 rows for one new row
    // held the page in frames of hundreds of ms, and events waited behind them.
    for (const [id, tr] of S.trs) if (!depth.has(id) && tr.parentNode) tr.remove();
    let at = body.firstChild;
    for (const id of ids) {
      let tr = S.trs.get(id);
      if (!tr) { tr = makeRow(id); S.trs.set(id, tr); }
      if (tr === at) at = at.nextSibling;
      else body.insertBefore(tr, at);
    }
    S.order = ids;
  }
  S.depth = depth;
  S.kids = kids;
  for (const id of ids) fillRow(S.trs.get(id), S.rows.get(id), depth.get(id), kids.has(id), now);
  $("#empty").hidden = ids.length > 0;
  for (const th of document.querySelectorAll("thead th[data-sort]")) {
    th.classList.toggle("sorted-asc", th.dataset.sort === S.sort.key && S.sort.dir > 0);
    th.classList.toggle("sorted-desc", th.dataset.sort === S.sort.key && S.sort.dir < 0);
  }
  $("#select-all").checked = ids.length > 0 && ids.every((id) => S.selected.has(id));
  $("#selbar").hidden = S.selected.size === 0;
  $("#selcount").textContent = `${S.selected.size} selected`;
  renderStrip(now);
  if (S.detail) renderDetailHead();
  if (S.loadedAt === null && S.status) S.loadedAt = performance.now();
}

// The filter menus offer what the records have.
function updateFilters() {
  const fill = (sel, values) => {
    const box = $(sel);
    const want = [...values].filter(Boolean).sort();
    const have = [...box.options].slice(sel === "#f-state" ? 2 : 1).map((o) => o.value);
    if (want.join("\n") === have.join("\n")) return;
    const keep = box.value;
    while (box.options.length > (sel === "#f-state" ? 2 : 1)) box.remove(box.options.length - 1);
    for (const v of want) box.append(el("option", { value: v, text: v.replace("_", " ") }));
    box.value = want.includes(keep) ? keep : "";
  };
  const rows = [...S.rows.values()];
  document.body.classList.toggle("one-node", new Set(rows.map((r) => r.node)).size <= 1);
  fill("#f-state", STATES);
  fill("#f-group", new Set(rows.map((r) => r.group)));
  fill("#f-kind", new Set(rows.map((r) => r.kind)));
  fill("#f-session", new Set(rows.map((r) => r.session)));
  fill("#f-project", new Set(rows.map(projectOf)));
  fill("#f-node", new Set(rows.map((r) => r.node)));
}

function renderStrip(now) {
  const d = S.status && S.status.daemon;
  const daemon = $("#daemon");
  if (d) {
    const up = d.started_at ? span(now - ms(d.started_at)) : "?";
    const text = `${d.version} · up ${up} · store ${d.store} · node ${d.node}`;
    if (daemon.textContent !== text) {
      daemon.textContent = "";
      daemon.append(el("b", { text: d.version }), ` · up ${up} · store `, el("b", { text: d.store }), " · node ", el("b", { text: d.node }));
    }
  }
  const counts = new Map();
  const groups = new Map();
  let slots = 0;
  for (const r of S.rows.values()) {
    counts.set(r.state, (counts.get(r.state) || 0) + 1);
    if (SLOT.includes(r.state) && r.command_line) {
      slots++;
      if (r.group) groups.set(r.group, (groups.get(r.group) || 0) + 1);
    }
  }
  const c = $("#counts");
  const ctext = STATES.filter((s) => counts.get(s)).map((s) => `${s}:${counts.get(s)}`).join(" ");
  if (c.dataset.text !== ctext) {
    c.dataset.text = ctext;
    c.textContent = "";
    for (const s of STATES) {
      if (!counts.get(s)) continue;
      c.append(el("button", {
        class: "count", type: "button", title: `Show only ${s.replace("_", " ")}`,
        onclick: () => { $("#f-state").value = $("#f-state").value === s ? "" : s; schedule(); },
      }, el("span", { class: `badge ${s}`, text: s.replace("_", " ") }), el("span", { text: String(counts.get(s)) })));
    }
  }
  const limits = d && d.limits;
  const slotsBox = $("#slots");
  const meter = (label, used, max) => {
    const bar = el("span", { class: "bar" }, el("span"));
    bar.firstChild.style.width = max ? `${Math.min(100, (used / max) * 100)}%` : "0";
    return el("span", { class: "meter", title: `${label}: ${used} of ${max || "∞"} slots in use` },
      el("span", { text: label }), bar, el("b", { text: `${used}/${max || "∞"}` }));
  };
  const stext = `${slots}|${[...groups].join()}|${JSON.stringify(limits)}`;
  if (slotsBox.dataset.text !== stext) {
    slotsBox.dataset.text = stext;
    slotsBox.textContent = "";
    slotsBox.append(meter("slots", slots, limits ? limits.max_running : 0));
    const named = new Set([...groups.keys(), ...Object.keys((limits && limits.group_limits) || {})]);
    for (const g of [...named].sort()) {
      const max = limits ? (limits.group_limits[g] !== undefined ? limits.group_limits[g] : limits.default_group_limit) : null;
      slotsBox.append(meter(g, groups.get(g) || 0, max));
    }
  }
}

// ---- selection, collapse, sorting ----------------------------------------

function toggleSelect(id) {
  if (S.selected.has(id)) S.selected.delete(id); else S.selected.add(id);
  schedule();
}
function toggleCollapse(id) {
  if (S.collapsed.has(id)) S.collapsed.delete(id); else S.collapsed.add(id);
  schedule();
}

// ---- actions -------------------------------------------------------------

const VERB = { stop: "Stop", force: "Force stop (KILL at once)", pause: "Pause", resume: "Resume", restart: "Restart", remove: "Remove" };

function confirmDialog(text) {
  return new Promise((resolve) => {
    const d = $("#confirm");
    $("#confirm-text").textContent = text;
    d.returnValue = "no";
    d.addEventListener("close", () => resolve(d.returnValue === "yes"), { once: true });
    d.showModal();
    d.querySelector('button[value="no"]').focus();
  });
}

async function act(ids, action) {
  if (S.readOnly || !ids.length) return;
  const names = ids.map((id) => { const r = S.rows.get(id); return r ? displayName(r) : id; });
  const what = ids.length === 1 ? `“${names[0]}”` : `${ids.length} processes`;
  const tree = action === "stop" || action === "force" ? " and every process of its tree" : "";
  if (!(await confirmDialog(`${VERB[action]} ${what}${tree}?`))) return;
  const results = await Promise.allSettled(ids.map((id) => {
    if (action === "remove") return api(`/api/processes/${id}`, { method: "DELETE" }).then(() => {
      S.rows.delete(id); S.selected.delete(id);
      if (S.detail === id) closeDetail();
    });
    const path = action === "force" ? "stop" : action;
    const body = action === "force" ? { force: true } : action === "stop" ? { force: false } : {};
    return api(`/api/processes/${id}/${path}`, { method: "POST", body: JSON.stringify(body) }).then((row) => {
      upsert(row);
      if (action === "restart") toast(`Restarted as ${row.id.slice(0, 8)}`);
    });
  }));
  const failed = results.filter((r) => r.status === "rejected");
  if (failed.length) toast(failed.map((f) => f.reason.message).join("; "), true);
  else if (action !== "restart") toast(`${VERB[action]}: done`);
  schedule();
}

// ---- the detail pane -----------------------------------------------------

function openDetail(id) {
  const r = S.rows.get(id);
  if (!r) return;
  if (S.detail !== id) {
    S.detail = id;
    $("#detail").hidden = false;
    document.body.classList.add("has-detail");
    $("#timeline").textContent = "";
    $("#record").textContent = "";
    api(`/api/processes/${id}`).then((d) => {
      if (S.detail !== id) return;
      $("#record").textContent = JSON.stringify(d.record, null, 2);
      for (const e of d.events) addTimeline(e);
    }).catch((e) => toast(e.message, true));
    startTail();
  }
  schedule();
}

function closeDetail() {
  S.detail = null;
  stopTail();
  $("#detail").hidden = true;
  document.body.classList.remove("has-detail");
  schedule();
  const tr = S.focus && S.trs.get(S.focus);
  if (tr) tr.focus();
}

function renderDetailHead() {
  const r = S.rows.get(S.detail);
  if (!r) return;
  setText($("#d-name"), displayName(r));
  const sub = $("#d-sub");
  const key = `${r.id}|${r.version}|${$("#o-stream").value}|${projectOf(r) ? copiesOf(r) : ""}`;
  if (sub.dataset.key !== key) {
    sub.dataset.key = key;
    sub.textContent = "";
    sub.append(el("span", { class: `badge ${r.state}`, text: r.state.replace("_", " ") }), ` ${r.id}`,
      r.command_line ? ` · ${r.command_line}` : "", r.pid ? ` · pid ${r.pid}` : "",
      exitText(r) ? ` · exit ${exitText(r)}` : "", r.error ? ` · ${r.error}` : "");
    const a = $("#d-actions");
    a.textContent = "";
    for (const b of actionButtons(r, false)) a.append(b);
    for (const c of scaleControls(r)) a.append(c);
    $("#o-download").href = `/api/processes/${r.id}/output.txt?stream=${$("#o-stream").value}`;
  }
}

function addTimeline(e) {
  const why = [e.error, e.exit ? `exit ${JSON.stringify(e.exit)}` : null,
    e.progress ? `${e.progress.percent}% ${e.progress.message || ""}` : null].filter(Boolean).join(" · ");
  $("#timeline").append(el("li", {},
    el("time", { datetime: e.at, text: new Date(e.at).toLocaleTimeString() }),
    el("b", { text: e.kind.replace("_", " ") }), ` → ${e.state.replace("_", " ")}`,
    why ? el("span", { class: "why", text: ` (${why})` }) : null));
}

function detailEvent(event, record) {
  addTimeline(event);
  if (record) $("#record").textContent = JSON.stringify(record, null, 2);
}

// ---- the output tail -----------------------------------------------------

// Lines of the open tail. Rendering is incremental: only lines from
// `from` on are drawn again (the open last line grows); a search redraws all.
const T = { lines: [], open: null, follow: true, divs: [], from: 0, trim: 0, full: true, st: {} };

function stopTail() {
  if (S.tail) { S.tail.close(); S.tail = null; }
}

function resetTail() {
  Object.assign(T, { lines: [], open: null, divs: [], from: 0, trim: 0, full: true, st: {} });
  $("#out").textContent = "";
  $("#o-info").textContent = "";
}

async function startTail() {
  stopTail();
  const id = S.detail;
  const stream = $("#o-stream").value;
  resetTail();
  let next = 0;
  try {
    // The last lines first, then live from where they end: nothing is sent twice.
    const first = await api(`/api/processes/${id}/output?tail_lines=${SCROLLBACK}&stream=${stream}`);
    if (S.detail !== id) return;
    addPieces(first.pieces);
    next = first.next;
  } catch (e) { toast(e.message, true); return; }
  const es = new EventSource(`/api/processes/${id}/output/live?stream=${stream}&cursor=${next}`);
  S.tail = es;
  es.addEventListener("output", (m) => {
    const chunk = JSON.parse(m.data);
    if (chunk.skipped) note(`(${chunk.skipped} bytes dropped by the output cap)`);
    addPieces(chunk.pieces);
  });
  es.addEventListener("end", (m) => {
    const d = JSON.parse(m.data);
    $("#o-info").textContent = d.state ? `ended: ${d.state.replace("_", " ")}` : "removed";
    es.close();
    if (S.tail === es) S.tail = null;
  });
}

function pushLine(line) {
  T.lines.push(line);
  return line;
}

function note(text) {
  pushLine({ stream: "note", text });
  T.open = null;
  drawOutput();
}

// Adds written text as lines: a piece without a final newline stays open
// for the next piece of the same stream.
function addPieces(pieces) {
  let from = T.lines.length;
  if (T.open) from = Math.min(from, T.lines.lastIndexOf(T.open));
  for (const p of pieces) {
    const parts = p.text.split("\n");
    for (let i = 0; i < parts.length; i++) {
      const last = i === parts.length - 1;
      if (i === 0 && T.open && T.open.stream === p.stream) {
        T.open.text += parts[i];
        from = Math.min(from, T.lines.lastIndexOf(T.open));
      } else if (last && parts[i] === "") {
        T.open = null;
        continue;
      } else {
        T.open = pushLine({ stream: p.stream, text: parts[i] });
      }
      // A newline follows every part but the last: that line is complete.
      if (!last) T.open = null;
    }
  }
  if (T.lines.length > SCROLLBACK) {
    const cut = T.lines.length - SCROLLBACK;
    T.lines.splice(0, cut);
    T.trim += cut;
    from = Math.max(0, from - cut);
  }
  T.from = Math.min(T.from, from);
  drawOutput();
}

function lineDiv(line, query) {
  // `\r` rewrites a line in a terminal: show what the last one left.
  const cr = line.text.lastIndexOf("\r", line.text.length - 2);
  const text = cr >= 0 ? line.text.slice(cr + 1) : line.text;
  if (!line.start) line.start = Object.assign({}, T.st[line.stream] || {});
  const st = Object.assign({}, line.start);
  const div = el("div", { class: `line ${line.stream}` });
  ansi(text, st, div, query);
  T.st[line.stream] = st;
  return { div, text };
}

let drawPending = false;
function drawOutput() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    const out = $("#out");
    const q = $("#o-search").value.toLowerCase();
    if (q || T.full) {
      out.textContent = "";
      T.divs = [];
      T.st = {};
      for (const line of T.lines) line.start = null;
      const frag = document.createDocumentFragment();
      for (const line of T.lines) {
        const { div, text } = lineDiv(line, q);
        T.divs.push(div);
        if (!q || stripAnsi(text).toLowerCase().includes(q)) frag.append(div);
      }
      out.append(frag);
      T.full = !!q;
    } else {
      for (const div of T.divs.splice(0, T.trim)) div.remove();
      for (const div of T.divs.splice(T.from)) div.remove();
      const frag = document.createDocumentFragment();
      for (let i = T.from; i < T.lines.length; i++) {
        const { div } = lineDiv(T.lines[i], "");
        T.divs.push(div);
        frag.append(div);
      }
      out.append(frag);
    }
    T.trim = 0;
    T.from = T.lines.length;
    out.dataset.lines = String(T.lines.length);
    if (T.follow) out.scrollTop = out.scrollHeight;
  });
}

function stripAnsi(s) { return s.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, ""); }

// Renders SGR colour codes as classes (16 colours follow the theme) or
// inline colours (256 and true colour); every other escape is dropped.
function ansi(text, st, into, query) {
  const re = /\x1b\[([0-9;?]*)([ -/]*[@-~])/g;
  let last = 0, m;
  const put = (s) => {
    if (!s) return;
    const span = document.createElement("span");
    const cls = [];
    if (st.b) cls.push("ansi-b");
    if (st.d) cls.push("ansi-d");
    if (st.i) cls.push("ansi-i");
    if (st.u) cls.push("ansi-u");
    if (typeof st.fg === "number") cls.push(`fg${st.fg}`);
    if (typeof st.bg === "number") cls.push(`bg${st.bg}`);
    if (cls.length) span.className = cls.join(" ");
    if (typeof st.fg === "string") span.style.color = st.fg;
    if (typeof st.bg === "string") span.style.background = st.bg;
    if (query) {
      const low = s.toLowerCase();
      let at = 0, i;
      while ((i = low.indexOf(query, at)) >= 0) {
        span.append(s.slice(at, i), el("mark", { text: s.slice(i, i + query.length) }));
        at = i + query.length;
      }
      span.append(s.slice(at));
    } else span.textContent = s;
    into.append(span);
  };
  while ((m = re.exec(text))) {
    put(text.slice(last, m.index));
    last = re.lastIndex;
    if (m[2] !== "m") continue;
    const codes = m[1] === "" ? [0] : m[1].split(";").map((n) => parseInt(n, 10) || 0);
    for (let k = 0; k < codes.length; k++) {
      const c = codes[k];
      if (c === 0) { for (const key of Object.keys(st)) delete st[key]; }
      else if (c === 1) st.b = true;
      else if (c === 2) st.d = true;
      else if (c === 3) st.i = true;
      else if (c === 4) st.u = true;
      else if (c === 22) { st.b = false; st.d = false; }
      else if (c === 23) st.i = false;
      else if (c === 24) st.u = false;
      else if (c >= 30 && c <= 37) st.fg = c - 30;
      else if (c >= 90 && c <= 97) st.fg = c - 90 + 8;
      else if (c === 39) delete st.fg;
      else if (c >= 40 && c <= 47) st.bg = c - 40;
      else if (c >= 100 && c <= 107) st.bg = c - 100 + 8;
      else if (c === 49) delete st.bg;
      else if ((c === 38 || c === 48) && codes[k + 1] === 5) {
        const n = codes[k + 2];
        st[c === 38 ? "fg" : "bg"] = n < 16 ? n : xterm(n);
        k += 2;
      } else if ((c === 38 || c === 48) && codes[k + 1] === 2) {
        st[c === 38 ? "fg" : "bg"] = `rgb(${codes[k + 2] || 0},${codes[k + 3] || 0},${codes[k + 4] || 0})`;
        k += 4;
      }
    }
  }
  put(text.slice(last));
}

function xterm(n) {
  if (n >= 232) { const v = 8 + (n - 232) * 10; return `rgb(${v},${v},${v})`; }
  const i = n - 16, steps = [0, 95, 135, 175, 215, 255];
  return `rgb(${steps[Math.floor(i / 36) % 6]},${steps[Math.floor(i / 6) % 6]},${steps[i % 6]})`;
}

function setFollow(on) {
  T.follow = on;
  const b = $("#o-follow");
  b.setAttribute("aria-pressed", String(on));
  b.textContent = on ? "Following" : "Paused: resume following";
  if (on) { const out = $("#out"); out.scrollTop = out.scrollHeight; }
}

// ---- the start form ------------------------------------------------------

function openStart() {
  if (S.readOnly) return;
  $("#start-error").textContent = "";
  $("#start").showModal();
  $("#start-form").elements.command.focus();
}

async function submitStart(e) {
  e.preventDefault();
  const f = e.target.elements;
  const body = {
    command: f.command.value, shell: f.shell.checked, cwd: f.cwd.value, name: f.name.value,
    group: f.group.value, env: f.env.value, timeout: f.timeout.value, restart: f.restart.value,
    ready_pattern: f.ready_pattern.value,
    ready_port: f.ready_port.value ? Number(f.ready_port.value) : null,
  };
  try {
    const row = await api("/api/processes", { method: "POST", body: JSON.stringify(body) });
    upsert(row);
    $("#start").close();
    e.target.reset();
    toast(`Started ${displayName(row)}`);
    openDetail(row.id);
  } catch (err) {
    $("#start-error").textContent = err.message;
  }
}

// ---- keyboard ------------------------------------------------------------

function moveFocus(step) {
  const ids = S.order;
  if (!ids.length) return;
  let i = ids.indexOf(S.focus);
  i = i < 0 ? 0 : Math.max(0, Math.min(ids.length - 1, i + step));
  S.focus = ids[i];
  const tr = S.trs.get(S.focus);
  tr.focus();
  tr.scrollIntoView({ block: "nearest" });
}

function targets() {
  if (S.selected.size) return [...S.selected];
  const id = S.detail || S.focus;
  return id ? [id] : [];
}

function onKey(e) {
  if (document.querySelector("dialog[open]")) return;
  const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName);
  if (e.key === "Escape") {
    if (typing) { e.target.blur(); return; }
    if (S.detail) closeDetail();
    return;
  }
  if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
  const keys = {
    "/": () => $("#search").focus(),
    j: () => moveFocus(1), ArrowDown: () => moveFocus(1),
    k: () => moveFocus(-1), ArrowUp: () => moveFocus(-1),
    Enter: () => S.focus && openDetail(S.focus),
    " ": () => S.focus && toggleSelect(S.focus),
    s: () => act(targets(), "stop"),
    p: () => act(targets(), "pause"),
    r: () => act(targets(), "resume"),
    R: () => act(targets(), "restart"),
    Delete: () => act(targets(), "remove"),
    n: () => openStart(),
    f: () => S.detail && setFollow(!T.follow),
  };
  const run = keys[e.key];
  if (run) { e.preventDefault(); run(); }
}

// ---- start ---------------------------------------------------------------

function wire() {
  for (const id of ["#search", "#f-state", "#f-group", "#f-kind", "#f-session", "#f-project", "#f-node", "#f-label"]) {
    $(id).addEventListener("input", schedule);
  }
  for (const th of document.querySelectorAll("thead th[data-sort]")) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      S.sort = { key, dir: S.sort.key === key ? -S.sort.dir : 1 };
      schedule();
    });
  }
  $("#select-all").addEventListener("click", (e) => {
    for (const id of S.order) if (e.target.checked) S.selected.add(id); else S.selected.delete(id);
    schedule();
  });
  for (const b of document.querySelectorAll("[data-bulk]")) {
    b.addEventListener("click", () => {
      if (b.dataset.bulk === "clear") { S.selected.clear(); schedule(); return; }
      act([...S.selected], b.dataset.bulk);
    });
  }
  $("#new").addEventListener("click", openStart);
  $("#start-form").addEventListener("submit", submitStart);
  $("#start-cancel").addEventListener("click", () => $("#start").close());
  $("#d-close").addEventListener("click", closeDetail);
  for (const tab of document.querySelectorAll("[data-tab]")) {
    tab.addEventListener("click", () => {
      for (const t of document.querySelectorAll("[data-tab]")) {
        t.setAttribute("aria-selected", String(t === tab));
        $(`#tab-${t.dataset.tab}`).hidden = t !== tab;
      }
    });
  }
  $("#o-stream").addEventListener("change", () => { if (S.detail) { startTail(); renderDetailHead(); } });
  $("#o-follow").addEventListener("click", () => setFollow(!T.follow));
  $("#o-search").addEventListener("input", () => { T.full = true; drawOutput(); });
  $("#out").addEventListener("wheel", (e) => { if (e.deltaY < 0 && T.follow) setFollow(false); });
  document.addEventListener("keydown", onKey);
  // Durations of live processes move on by themselves; nothing is fetched.
  // Live rows' times tick; a draw of those rows, or of the table when the
  // sort is by time.
  setInterval(() => {
    const live = [...S.rows.values()].filter(isLive).map((r) => r.id);
    if (live.length && !renderChanged(live)) schedule();
  }, 1000);
}

wire();
loadAll().then(connect).catch((e) => {
  $("#banner").hidden = false;
  $("#banner").textContent = `Cannot load processes: ${e.message}`;
});
