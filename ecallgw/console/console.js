// The operator console (docs/console.md). Plain ES module, no build step.
// Every value from a vehicle or an operator reaches the page through textContent or a DOM
// property, never through innerHTML: notes, call ids and VINs are text, whatever they contain.
// The caller's side (links sent by SMS, breakdown assistance) is in caller.js.

import * as caller from "./caller.js";

const LANGS = ["en", "fr", "nl"];
const LEVELS = { critical: 0, high: 1, medium: 2, low: 3 };
const ACTIVE = new Set(["open", "updated"]);
const STORE = { lang: "ecallgw.console.lang", muted: "ecallgw.console.muted" };
const COMPASS = ["N", "NE", "E", "SE", "S", "SW", "W", "NW"];

const state = {
  lang: "en",
  catalog: {},
  english: {},
  csrf: "",
  operator: "",
  config: { tile_url: "", tile_attribution: "" },
  wmi: {},
  areas: [],
  incidents: new Map(),
  serverCounters: null,
  nextCursor: null,
  selected: null,
  detail: null,
  fresh: new Map(),
  muted: localStorage.getItem(STORE.muted) === "1",
  map: null,
  source: null,
  links: null, // the selected incident's caller links (null: the gateway has none)
};

const $ = (id) => document.getElementById(id);

// --- DOM building: text only ------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = String(v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("aria-") || k === "role") node.setAttribute(k, String(v));
    else node[k] = v;
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// --- languages ---------------------------------------------------------------------------------

function t(key, vars = {}) {
  let s = state.catalog[key] ?? state.english[key] ?? key;
  for (const [k, v] of Object.entries(vars)) s = s.split(`{${k}}`).join(String(v));
  return s;
}

function pickLang() {
  const stored = localStorage.getItem(STORE.lang);
  if (LANGS.includes(stored)) return stored;
  for (const l of navigator.languages || [navigator.language || "en"]) {
    const base = String(l).slice(0, 2).toLowerCase();
    if (LANGS.includes(base)) return base;
  }
  return "en";
}

async function loadLang(lang) {
  const [catalog, english] = await Promise.all([
    getJson(`i18n/${lang}.json`),
    lang === "en" ? null : getJson("i18n/en.json"),
  ]);
  state.lang = lang;
  state.catalog = catalog;
  state.english = english || catalog;
  document.documentElement.lang = lang;
  $("lang").value = lang;
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]"))
    node.placeholder = t(node.dataset.i18nPlaceholder);
  document.title = t("app.title");
  renderSound();
  renderLive(state.source && state.source.readyState === 1);
  if (state.operator) $("who").textContent = t("header.signed_in_as", { name: state.operator });
  renderQueue();
  if (state.detail) renderDetail();
  if (state.operator) caller.relabel();
}

function locale() {
  // The browser's own variant of the chosen language (en-GB, fr-BE, nl-BE) for dates and numbers.
  const own = (navigator.languages || []).find((l) => String(l).slice(0, 2).toLowerCase() === state.lang);
  return own || state.lang;
}

function fmtTime(value) {
  if (value === null || value === undefined || value === "") return "";
  const d = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return new Intl.DateTimeFormat(locale(), { dateStyle: "short", timeStyle: "medium" }).format(d);
}

function fmtShort(value) {
  // The queue: the time of day, the date too when it is not today.
  if (!value) return "";
  const d = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  const today = new Date().toDateString() === d.toDateString();
  const opts = today ? { timeStyle: "medium" } : { dateStyle: "short", timeStyle: "short" };
  return new Intl.DateTimeFormat(locale(), opts).format(d);
}

function fmtDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, "0")}`;
}

// --- talking to the daemon -------------------------------------------------------------------

async function getJson(path) {
  const resp = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (resp.status === 401 && state.operator && !path.includes("/console/session")) sessionEnded();
  if (!resp.ok) {
    const err = new Error(`${resp.status}`);
    err.status = resp.status;
    try {
      err.message = (await resp.json()).error || err.message;
    } catch (_) {
      /* not JSON */
    }
    throw err;
  }
  return resp.json();
}

async function send(method, path, body) {
  const resp = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": state.csrf },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = {};
  try {
    data = await resp.json();
  } catch (_) {
    /* empty */
  }
  return { ok: resp.ok, status: resp.status, data };
}

// --- incidents: one shape from the list, the detail or an event's document -------------------

function normalize(src) {
  if (!src || typeof src !== "object" || !src.incident_id) return null;
  const call = src.call || {};
  const severity = src.severity || {};
  const pick = (...vals) => vals.find((v) => v !== undefined);
  return {
    incident_id: src.incident_id,
    revision: src.revision,
    status: src.status,
    level: pick(src.level, severity.level),
    score: pick(src.score, severity.score),
    tps: pick(src.tps, call.tps),
    vehicle: pick(src.vehicle, call.vehicle),
    call_id: pick(src.call_id, call.call_id),
    automatic: pick(src.automatic, call.automatic),
    test: pick(src.test, call.test),
    callback: pick(src.callback, call.callback),
    lang: pick(src.lang, call.lang),
    position: src.position,
    direction_deg: src.direction_deg,
    passengers: src.passengers,
    reasons: pick(severity.reasons, src.reasons),
    claimed_by: src.claimed_by,
    acked: src.acked,
    escalation_due_at: src.escalation_due_at,
    at_psap: src.at_psap,
    members: Array.isArray(src.members) ? src.members : undefined,
    triage_reasons: Array.isArray(src.reasons) ? src.reasons : undefined,
    received_at: src.received_at,
    updated_at: src.updated_at,
  };
}

// --- provider storms (issue 12): one aggregate standing for many incidents of one provider ------

const STORM_PREFIX = "storm-";
const STORM_CODES = ["provider_storm", "storm_confirmed", "storm_dismissed"];

function isStorm(inc) {
  return !!inc && String(inc.incident_id || "").startsWith(STORM_PREFIX);
}

function stormOf(id) {
  // The storm aggregate this console knows that lists incident ``id`` among its members.
  let found = null;
  for (const inc of state.incidents.values()) {
    if (isStorm(inc) && Array.isArray(inc.members) && inc.members.includes(id)) {
      if (!found || String(inc.received_at || "") > String(found.received_at || "")) found = inc;
    }
  }
  return found;
}

function stormWindowS(reasons) {
  // The counting window the storm detector names in its reason ("... in 600 s ..."), if any.
  for (const r of reasons || []) {
    const m = r && r.code === "provider_storm" && /\bin (\d+(?:\.\d+)?) s\b/.exec(r.text || "");
    if (m) return Number(m[1]);
  }
  return null;
}

function merge(item) {
  const old = state.incidents.get(item.incident_id);
  if (old && old.revision !== undefined && item.revision !== undefined && item.revision < old.revision) {
    return old; // an older revision arriving late (a resumed stream) changes nothing
  }
  const merged = { ...(old || {}) };
  for (const [k, v] of Object.entries(item)) if (v !== undefined) merged[k] = v;
  if (isStorm(merged) && !merged.tps && Array.isArray(merged.members)) {
    // A storm's document has no call: its provider is its members' (the queue's row names it too).
    const known = merged.members.map((id) => state.incidents.get(id)).find((m) => m && m.tps);
    if (known) merged.tps = known.tps;
  }
  state.incidents.set(item.incident_id, merged);
  return merged;
}

function kindOf(inc) {
  if (isStorm(inc)) return "storm";
  if (inc.test) return "test";
  if (inc.automatic === true) return "automatic";
  if (inc.automatic === false) return "manual";
  return "";
}

function rank(a, b) {
  // What needs a human first: still open, then severity, then not yet acknowledged, then oldest.
  const act = (i) => (ACTIVE.has(i.status) ? 0 : 1);
  // An open storm holds calls that wait for an operator: above every incident.
  const lvl = (i) => (isStorm(i) && ACTIVE.has(i.status) ? -1 : LEVELS[i.level] ?? 9);
  const ack = (i) => (i.acked ? 1 : 0);
  return (
    act(a) - act(b) ||
    lvl(a) - lvl(b) ||
    ack(a) - ack(b) ||
    String(a.received_at || "").localeCompare(String(b.received_at || ""))
  );
}

// The PSAP area of a position, as triage routes (first area wins, even-odd rule, holes excluded).
function inRing(lon, lat, ring) {
  let inside = false;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
    const [xi, yi] = ring[i];
    const [xj, yj] = ring[j];
    if (yi > lat !== yj > lat && lon < ((xj - xi) * (lat - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

function areaOf(inc) {
  const p = inc.position;
  if (!p || typeof p.lat !== "number" || !state.areas.length) return "";
  for (const area of state.areas) {
    for (const poly of area.polygons) {
      if (inRing(p.lon, p.lat, poly.outer) && !poly.holes.some((h) => inRing(p.lon, p.lat, h))) return area.name;
    }
  }
  return "-";
}

function filters() {
  return {
    status: $("f-status").value,
    level: $("f-level").value,
    tps: $("f-tps").value,
    kind: $("f-kind").value,
    area: $("f-area").value,
    q: $("f-q").value.trim(),
  };
}

function matches(inc, f) {
  if (f.status === "active" && !ACTIVE.has(inc.status)) return false;
  if (f.status && f.status !== "active" && inc.status !== f.status) return false;
  if (f.level && inc.level !== f.level) return false;
  if (f.tps && inc.tps !== f.tps) return false;
  if (f.kind && kindOf(inc) !== f.kind) return false;
  if (f.area && areaOf(inc) !== f.area) return false;
  if (f.q) {
    const q = f.q.toLowerCase();
    const hay = [inc.incident_id, inc.call_id].map((v) => String(v || "").toLowerCase());
    if (!hay.some((h) => h.includes(q))) return false;
  }
  return true;
}

// --- the queue -------------------------------------------------------------------------------

async function loadQueue(append = false) {
  const f = filters();
  const params = new URLSearchParams({ limit: "200" });
  if (f.status && f.status !== "active") params.set("status", f.status);
  for (const k of ["level", "tps", "kind", "q"]) if (f[k]) params.set(k, f[k]);
  if (append && state.nextCursor) params.set("cursor", state.nextCursor);
  const data = await getJson(`/v1/incidents?${params}`);
  for (const row of data.incidents || []) {
    const inc = normalize(row);
    if (inc) merge(inc);
  }
  state.nextCursor = data.next_cursor || null;
  state.serverCounters = data.counters || null;
  renderQueue();
}

let countersTimer = null;
function refreshCountersSoon() {
  if (countersTimer) return;
  countersTimer = setTimeout(async () => {
    countersTimer = null;
    try {
      const data = await getJson("/v1/incidents?limit=1");
      state.serverCounters = data.counters || null;
      renderCounters();
    } catch (_) {
      /* the next event tries again */
    }
  }, 1500);
}

function renderCounters() {
  let c = state.serverCounters;
  if (!c) {
    // An API without counters: count what this page holds.
    const all = [...state.incidents.values()];
    const active = all.filter((i) => ACTIVE.has(i.status));
    c = {
      open: active.length,
      unacknowledged: active.filter((i) => !i.acked).length,
      waiting_escalation: active.filter((i) => i.escalation_due_at && !i.at_psap).length,
      at_psap: all.filter((i) => i.at_psap).length,
    };
  }
  for (const k of ["open", "unacknowledged", "waiting_escalation", "at_psap"]) {
    $(`c-${k}`).textContent = String(c[k] ?? 0);
  }
}

function renderProviders() {
  const select = $("f-tps");
  const known = new Set([...select.options].map((o) => o.value));
  for (const inc of state.incidents.values()) {
    if (inc.tps && !known.has(inc.tps)) {
      select.append(el("option", { value: inc.tps, text: inc.tps }));
      known.add(inc.tps);
    }
  }
}

function badge(level) {
  return el("span", { class: `badge level-${LEVELS[level] !== undefined ? level : "none"}`, text: t(`level.${level}`) });
}

function stormBadge(inc) {
  const count = Array.isArray(inc.members) ? inc.members.length : 0;
  return el("span", { class: "badge storm", text: t("storm.badge", { provider: inc.tps || "?", count }) });
}

function stormRow(inc, fresh) {
  // A storm is no vehicle: the badge names the provider and how many incidents it stands for.
  const count = Array.isArray(inc.members) ? inc.members.length : 0;
  const tr = el(
    "tr",
    {
      class: [
        "storm",
        inc.incident_id === state.selected ? "selected" : "",
        fresh ? "fresh" : "",
        ACTIVE.has(inc.status) ? "" : "closed",
      ].join(" "),
      dataset: { id: inc.incident_id },
      tabIndex: 0,
    },
    el("td", {}, stormBadge(inc)),
    el(
      "td",
      {},
      el("code", { class: "id", text: inc.incident_id }),
      el("br"),
      el("small", { text: t(`status.${inc.status}`) }),
    ),
    el("td", { text: t("kind.storm") }),
    el("td", {}, inc.tps || "", el("small", { class: "members", text: ` ${t("storm.members_count", { count })}` })),
    el("td", { text: fmtShort(inc.received_at) }),
    el("td", { text: "—" }),
    el("td", { class: "claimed", text: inc.claimed_by || "" }),
  );
  tr.addEventListener("click", () => select(inc.incident_id));
  tr.addEventListener("keydown", (e) => {
    if (e.key === "Enter") select(inc.incident_id);
  });
  return tr;
}

function renderQueue() {
  const body = $("queue-body");
  if (!body) return;
  renderProviders();
  renderCounters();
  const f = filters();
  const rows = [...state.incidents.values()].filter((i) => matches(i, f)).sort(rank);
  const now = Date.now();
  body.replaceChildren(
    ...rows.map((inc) => {
      const pos = inc.position;
      const kind = kindOf(inc);
      const fresh = (state.fresh.get(inc.incident_id) || 0) > now;
      if (isStorm(inc)) return stormRow(inc, fresh);
      const tr = el(
        "tr",
        {
          class: [
            inc.incident_id === state.selected ? "selected" : "",
            fresh ? "fresh" : "",
            ACTIVE.has(inc.status) ? "" : "closed",
          ].join(" "),
          dataset: { id: inc.incident_id },
          tabIndex: 0,
        },
        el("td", {}, badge(inc.level), inc.score !== undefined ? el("small", { text: ` ${inc.score}` }) : null),
        el(
          "td",
          {},
          el("code", { class: "id", text: inc.incident_id }),
          el("br"),
          el("small", { text: [t(`status.${inc.status}`), inc.acked ? t("queue.acked") : ""].filter(Boolean).join(" · ") }),
        ),
        el("td", { text: kind ? t(`kind.${kind}`) : "" }),
        el("td", {}, inc.tps || "", inc.call_id ? el("small", { class: "call", text: ` ${inc.call_id}` }) : null),
        el("td", { text: fmtShort(inc.received_at) }),
        el("td", {
          class: pos && pos.trusted === false ? "untrusted" : "",
          text: pos ? `${Number(pos.lat).toFixed(5)}, ${Number(pos.lon).toFixed(5)}` : "—",
        }),
        el("td", { class: "claimed", text: inc.claimed_by || "" }),
      );
      tr.addEventListener("click", () => select(inc.incident_id));
      tr.addEventListener("keydown", (e) => {
        if (e.key === "Enter") select(inc.incident_id);
      });
      return tr;
    }),
  );
  $("queue-empty").hidden = rows.length > 0;
  $("more").hidden = !state.nextCursor;
}

// --- live updates ----------------------------------------------------------------------------

let audio = null;
function beep(level) {
  if (state.muted) return;
  try {
    audio = audio || new AudioContext();
    if (audio.state === "suspended") audio.resume();
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.type = "sine";
    osc.frequency.value = level === "critical" ? 880 : 660;
    gain.gain.setValueAtTime(0.0001, audio.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.3, audio.currentTime + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, audio.currentTime + 0.35);
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.4);
  } catch (_) {
    /* no audio device: the highlight still shows */
  }
}

function announce(inc) {
  state.fresh.set(inc.incident_id, Date.now() + 15000);
  if (isStorm(inc)) {
    // Its calls wait for an operator: said like a high incident, with what it stands for.
    const count = Array.isArray(inc.members) ? inc.members.length : 0;
    $("announce").textContent = t("storm.new_alert", { provider: inc.tps || "?", count, id: inc.incident_id });
    beep("high");
    setTimeout(renderQueue, 15100);
    return;
  }
  $("announce").textContent = t("queue.new_alert", { level: t(`level.${inc.level}`), id: inc.incident_id });
  beep(inc.level);
  setTimeout(renderQueue, 15100);
}

let renderPending = false;
function renderSoon() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    renderQueue();
  });
}

let detailTimer = null;
function refreshDetailSoon(id) {
  if (id !== state.selected) return;
  clearTimeout(detailTimer);
  detailTimer = setTimeout(() => loadDetail(id, { keepMap: true }), 250);
}

function onIncidentEvent(event) {
  let data;
  try {
    data = JSON.parse(event.data);
  } catch (_) {
    return;
  }
  const inc = normalize(data);
  if (!inc) return;
  const known = state.incidents.has(inc.incident_id);
  const merged = merge(inc);
  const received = Date.parse(merged.received_at || "");
  const recent = Number.isNaN(received) || Date.now() - received < 120000;
  const urgent = merged.level === "critical" || merged.level === "high" || isStorm(merged);
  if (!known && recent && ACTIVE.has(merged.status) && urgent) {
    announce(merged);
  }
  renderSoon();
  refreshCountersSoon();
  refreshDetailSoon(inc.incident_id);
  relatedChanged(merged);
}

let relatedPending = false;
function relatedChanged(inc) {
  // The selected storm shows its members' level and status; a selected member links to its storm.
  const shown = state.detail && state.incidents.get(state.detail.incident_id);
  if (!shown || shown.incident_id === inc.incident_id) return;
  const related =
    (isStorm(shown) && Array.isArray(shown.members) && shown.members.includes(inc.incident_id)) ||
    (isStorm(inc) && Array.isArray(inc.members) && inc.members.includes(shown.incident_id));
  if (!related || relatedPending) return;
  relatedPending = true;
  requestAnimationFrame(() => {
    relatedPending = false;
    if (state.detail) renderDetail(true);
  });
}

function onDeskEvent(event) {
  // Claims, releases, acknowledgements and notes: only what the change is about is applied.
  let data;
  try {
    data = JSON.parse(event.data);
  } catch (_) {
    return;
  }
  if (!data || !data.incident_id || !state.incidents.has(data.incident_id)) {
    refreshCountersSoon();
    return;
  }
  const change = { incident_id: data.incident_id };
  const kind = data.kind || event.type;
  if ((kind === "claim" || kind === "release") && data.claimed_by !== undefined) change.claimed_by = data.claimed_by;
  if (kind === "ack" && data.acked !== undefined) change.acked = data.acked;
  merge(change);
  renderSoon();
  refreshCountersSoon();
  refreshDetailSoon(data.incident_id);
}

function renderLive(on) {
  const live = $("live");
  live.className = on ? "live on" : "live off";
  live.textContent = on ? t("header.live") : t("header.offline");
}

function connect() {
  const source = new EventSource("/v1/incidents/events", { withCredentials: true });
  state.source = source;
  source.onopen = () => renderLive(true);
  source.onerror = () => {
    renderLive(false);
    // A stream refused for good (the session expired or was signed out elsewhere) is not retried
    // by the browser: ask whether the session still stands.
    if (source.readyState === 2) checkSession();
  };
  source.addEventListener("revision", onIncidentEvent);
  source.addEventListener("desk", onDeskEvent);
  for (const kind of ["claim", "note", "action"]) source.addEventListener(kind, onDeskEvent);
  source.addEventListener("reset", () => {
    // The gateway cannot replay what was missed: start again from its list.
    state.incidents.clear();
    loadQueue().catch(() => {});
  });
}

// --- the incident ------------------------------------------------------------------------------

async function select(id) {
  state.selected = id;
  renderQueue();
  await loadDetail(id, { keepMap: false });
}

async function loadDetail(id, { keepMap }) {
  try {
    const [data, links] = await Promise.all([
      getJson(`/v1/incidents/${encodeURIComponent(id)}`),
      caller.loadIncidentLinks(id),
    ]);
    if (id !== state.selected) return;
    if (String(id).startsWith(STORM_PREFIX)) await loadStormMembers(data);
    if (id !== state.selected) return;
    state.detail = data;
    state.links = links;
    const inc = normalize(latestDocument(data) || {});
    const fromRow = normalize(data);
    if (inc) merge(inc);
    if (fromRow) merge(fromRow);
    renderDetail(keepMap);
    renderSoon();
  } catch (err) {
    if (id !== state.selected) return;
    state.detail = null;
    $("detail").hidden = false;
    $("detail-placeholder").hidden = true;
    $("detail").replaceChildren(el("p", { class: "error", text: t("detail.load_failed", { error: err.message }) }));
  }
}

function latestDocument(data) {
  const history = Array.isArray(data.history) ? data.history : [];
  for (let i = history.length - 1; i >= 0; i--) {
    const doc = history[i] && history[i].document;
    if (doc && !doc.error) return doc;
  }
  return null;
}

function msdStructure(doc) {
  const m = doc && doc.msd;
  if (!m) return null;
  return (m.msd && m.msd.msdStructure) || m.msdStructure || null;
}

function additionalData(doc) {
  const m = doc && doc.msd;
  const oad = m && ((m.msd && m.msd.optionalAdditionalData) || m.optionalAdditionalData);
  return oad && oad.decoded ? oad.decoded : null;
}

function field(label, ...value) {
  return el("div", { class: "field" }, el("dt", { text: label }), el("dd", {}, ...value));
}

function section(titleKey, ...content) {
  return el("section", { class: "card" }, el("h3", { text: t(titleKey) }), ...content);
}

function reasonText(r) {
  if (state.lang !== "en" && state.catalog[`reason.${r.code}`]) return state.catalog[`reason.${r.code}`];
  return r.text || state.catalog[`reason.${r.code}`] || r.code;
}

function vinOf(msd) {
  const v = msd && msd.vehicleIdentificationNumber;
  if (!v) return "";
  return [v.isowmi, v.isovds, v.isovisModelyear, v.isovisSeqPlant].filter(Boolean).join("");
}

function renderDetail(keepMap = false) {
  const data = state.detail;
  if (!data) return;
  const doc = latestDocument(data) || {};
  const inc = state.incidents.get(data.incident_id) || normalize(data);
  if (isStorm(inc)) {
    renderStormDetail(data, doc, inc, keepMap);
    return;
  }
  const msd = msdStructure(doc);
  const control = (msd && msd.control) || {};
  const kind = kindOf(inc);
  const root = $("detail");
  $("detail-placeholder").hidden = true;
  root.hidden = false;

  // Head: id, severity, who has it, the escalation countdown.
  const head = el(
    "header",
    { class: "detail-head" },
    el("h2", {}, badge(inc.level), " ", el("code", { text: inc.incident_id })),
    el("p", {}, t(`status.${inc.status}`), " · ", t("detail.score", { score: inc.score ?? "?" }), kind ? ` · ${t(`kind.${kind}`)}` : ""),
    el("p", { id: "claim", class: inc.claimed_by ? "claimed" : "unclaimed", text: inc.claimed_by ? t("detail.claimed_by", { name: inc.claimed_by }) : t("detail.unclaimed") }),
    el("p", { id: "countdown", class: "countdown" }),
  );

  // Call.
  const call = section(
    "detail.call",
    el(
      "dl",
      {},
      field(t("detail.call_id"), inc.call_id || ""),
      field(t("detail.provider"), inc.tps || ""),
      field(t("detail.vehicle_key"), inc.vehicle || ""),
      field(t("detail.activation"), kind ? t(`kind.${kind}`) : t("unknown")),
      field(t("detail.callback"), inc.callback ? el("a", { href: `tel:${inc.callback}`, text: inc.callback }) : t("unknown")),
      field(t("detail.lang"), inc.lang || t("unknown")),
      state.areas.length ? field(t("filters.area"), areaOf(inc) === "-" ? t("filters.area_none") : areaOf(inc) || t("unknown")) : null,
      field(t("detail.received"), fmtTime(inc.received_at)),
      field(t("detail.updated"), fmtTime(inc.updated_at)),
    ),
  );

  // Vehicle from the decoded MSD, in words.
  const vin = vinOf(msd);
  const wmi = vin.slice(0, 3);
  const props = (msd && msd.vehiclePropulsionStorageType) || {};
  const propulsion = Object.entries(props).filter(([, v]) => v === true).map(([k]) => t(`prop.${k}`));
  const direction = msd && typeof msd.vehicleDirection === "number" && msd.vehicleDirection <= 179 ? msd.vehicleDirection * 2 : inc.direction_deg;
  const passengers = msd && msd.numberOfPassengers !== undefined ? msd.numberOfPassengers : inc.passengers;
  const pos = doc.position || inc.position;
  const vehicle = section(
    "detail.vehicle",
    el(
      "dl",
      {},
      field(t("detail.vehicle_type"), control.vehicleType ? t(`vt.${control.vehicleType}`) : t("unknown")),
      field(t("detail.propulsion"), propulsion.length ? propulsion.join(", ") : t("prop.none")),
      field(t("detail.vin"), el("code", { text: vin || t("unknown") })),
      field(t("detail.manufacturer"), wmi ? state.wmi[wmi] || t("detail.unknown_manufacturer") : t("unknown")),
      field(t("detail.passengers"), passengers ?? t("unknown")),
      field(
        t("detail.direction"),
        typeof direction === "number" ? t("detail.direction_value", { deg: direction, compass: COMPASS[Math.round(direction / 45) % 8] }) : t("unknown"),
      ),
      field(
        t("detail.position"),
        pos ? positionText(pos) : t("detail.no_position"),
      ),
    ),
  );

  // Optional additional data (crash severity, crash type) when the vehicle sent some.
  const extra = additionalData(doc);
  let additional = null;
  if (extra && typeof extra === "object") {
    const items = [];
    if (extra.crashSeverity !== undefined) items.push(field(t("detail.crash_severity"), String(extra.crashSeverity)));
    const crash = extra.crashInfo || {};
    const types = Object.entries(crash).filter(([, v]) => v === true).map(([k]) => t(`crash.${k}`));
    if (types.length) items.push(field(t("detail.crash_type"), types.join(", ")));
    for (const [k, v] of Object.entries(extra)) {
      if (k === "crashSeverity" || k === "crashInfo" || v === null || typeof v === "object") continue;
      items.push(field(k, String(v)));
    }
    if (items.length) additional = section("detail.additional", el("dl", {}, ...items));
  }

  // Severity with each reason in plain words.
  const reasons = Array.isArray(inc.reasons) ? inc.reasons : [];
  const severity = section(
    "detail.severity",
    el("p", {}, badge(inc.level), " ", t("detail.score", { score: inc.score ?? "?" })),
    el("h4", { text: t("detail.reasons") }),
    el("ul", { class: "reasons" }, ...reasons.map((r) => el("li", { title: r.text || "", text: reasonText(r) }))),
  );

  // Map and trail.
  const trail = trailOf(data, doc);
  const mapBox = el("div", { id: "map", class: state.config.tile_url ? "map" : "map blank" });
  const mapSection = section(
    "detail.map",
    state.config.tile_url ? null : el("p", { class: "hint", text: t("detail.no_tiles") }),
    mapBox,
    el("h4", { text: t("detail.trail") }),
    el(
      "ol",
      { id: "trail", class: "trail" },
      ...trail.map((p) => el("li", { text: `${p.lat.toFixed(5)}, ${p.lon.toFixed(5)}${p.source ? ` (${caller.sourceText(p.source)})` : ""}${p.at ? ` — ${fmtTime(p.at)}` : ""}` })),
    ),
  );

  const actions = renderActions(inc);
  const phoneNode = $("link-phone");
  const typedPhone = keepMap && phoneNode && root.contains(phoneNode) ? phoneNode.value : undefined;
  const links = caller.incidentLinksCard(inc, state.links, typedPhone);
  const notes = renderNotes(data);
  const timeline = renderTimeline(data);
  const deliveries = renderDeliveries(data);
  const linked = section(
    "detail.linked",
    Array.isArray(data.linked) && data.linked.length
      ? el("ul", {}, ...data.linked.map((id) => {
          const a = el("a", { href: "#", text: id });
          a.addEventListener("click", (e) => {
            e.preventDefault();
            select(id);
          });
          return el("li", {}, a);
        }))
      : el("p", { class: "hint", text: t("detail.none") }),
  );

  // Keep what the operator is typing across a live refresh of the view.
  const typed = {};
  for (const id of ["note-text", "cancel-note", "cancel-reason", "assignee"]) {
    const node = $(id);
    if (node && root.contains(node) && keepMap) typed[id] = node.value;
  }
  const cancelOpen = keepMap && !!root.querySelector("details[open]");
  if (state.map) state.map.remove();
  state.map = null;
  root.replaceChildren(
    head,
    stormMembership(data, doc, inc),
    actions,
    el("div", { class: "columns" }, el("div", {}, call, vehicle, additional, severity), el("div", {}, mapSection, links, linked)),
    notes,
    timeline,
    deliveries,
  );
  for (const [id, value] of Object.entries(typed)) $(id).value = value;
  const details = root.querySelector("details");
  if (details && cancelOpen) details.open = true;
  drawMap(mapBox, trail, pos);
  tickCountdown();
}

// --- a storm's view --------------------------------------------------------------------------------

async function loadStormMembers(data) {
  // The members' level, status and kind come from the queue this page holds; when some are not in
  // it, one request for the provider's incidents since the storm's window began fetches them (never
  // one request per member).
  const doc = latestDocument(data) || {};
  const members = Array.isArray(data.members) && data.members.length ? data.members : doc.members || [];
  if (!members.some((id) => !state.incidents.has(id))) return;
  const provider = data.tps || (doc.call && doc.call.tps) || "";
  const start = Date.parse(data.received_at || doc.received_at || "");
  const windowS = stormWindowS(doc.reasons) ?? 3600;
  const params = new URLSearchParams({ limit: "1000" });
  if (provider) params.set("tps", provider);
  if (!Number.isNaN(start)) params.set("since", String(Math.floor(start / 1000 - windowS - 1)));
  try {
    const page = await getJson(`/v1/incidents?${params}`);
    for (const row of page.incidents || []) {
      const inc = normalize(row);
      if (inc && members.includes(inc.incident_id)) merge(inc);
    }
  } catch (_) {
    /* ids only, then */
  }
}

function stormMembers(inc, doc) {
  if (Array.isArray(inc.members) && inc.members.length) return inc.members;
  return Array.isArray(doc.members) ? doc.members : [];
}

function memberItem(id) {
  const m = state.incidents.get(id);
  const a = el("a", { href: "#", class: "member-link", text: id, dataset: { id } });
  a.addEventListener("click", (e) => {
    e.preventDefault();
    select(id);
  });
  if (!m) return el("li", { dataset: { id } }, a);
  const kind = kindOf(m);
  // Where the call stands: at its PSAP, on its escalation timer, or held for an operator.
  // Its latest revision's flags say which (a list row's escalation time may be older than them).
  const codes = new Set((m.triage_reasons || []).map((r) => r && r.code));
  let where = "";
  if (m.at_psap) where = t("detail.at_psap");
  else if (!ACTIVE.has(m.status)) where = "";
  else if (codes.has("escalation_held")) where = t("storm.member_held");
  else if (codes.has("escalation_pending"))
    where = m.escalation_due_at ? t("storm.member_due", { time: fmtShort(m.escalation_due_at) }) : t("storm.member_timer");
  const facts = [t(`status.${m.status}`), kind ? t(`kind.${kind}`) : "", where];
  return el(
    "li",
    { dataset: { id, status: m.status || "" }, class: ACTIVE.has(m.status) ? "" : "closed" },
    m.level ? badge(m.level) : null,
    " ",
    a,
    " ",
    el("small", { class: "member-facts", text: facts.filter(Boolean).join(" · ") }),
  );
}

function renderStormDetail(data, doc, inc, keepMap) {
  const root = $("detail");
  $("detail-placeholder").hidden = true;
  root.hidden = false;
  if (state.map) state.map.remove();
  state.map = null;
  const members = stormMembers(inc, doc);
  const count = members.length;
  // Every revision's reasons: the storm's own (provider_storm, with its counts) stay in words after
  // an operator confirmed or dismissed it.
  const history = Array.isArray(data.history) ? data.history : [];
  const reasons = [
    ...(Array.isArray(doc.reasons) ? doc.reasons : []),
    ...history.flatMap((rev) => (rev && Array.isArray(rev.reasons) ? rev.reasons : [])),
    ...(Array.isArray(inc.triage_reasons) ? inc.triage_reasons : []),
  ];
  const windowS = stormWindowS(reasons);
  // The window: from the earliest member this page knows (hindsight members opened before the
  // storm was recognised) to the latest revision of the aggregate.
  let first = Date.parse(inc.received_at || "");
  for (const id of members) {
    const at = Date.parse((state.incidents.get(id) || {}).received_at || "");
    if (!Number.isNaN(at) && (Number.isNaN(first) || at < first)) first = at;
  }
  const head = el(
    "header",
    { class: "detail-head storm-head" },
    el("h2", {}, stormBadge(inc), " ", el("code", { text: inc.incident_id })),
    el("p", { id: "storm-status" }, t(`status.${inc.status}`), " · ", t("kind.storm")),
  );
  const seen = new Set();
  const words = reasons
    .filter((r) => r && STORM_CODES.includes(r.code))
    .filter((r) => !seen.has(r.code) && seen.add(r.code));
  const summary = section(
    "storm.title",
    el(
      "dl",
      { id: "storm-summary" },
      field(t("detail.provider"), el("span", { id: "storm-provider", text: inc.tps || t("unknown") })),
      field(
        t("storm.window"),
        el("span", {
          id: "storm-window",
          text: `${Number.isNaN(first) ? "?" : fmtTime(first / 1000)} – ${fmtTime(inc.updated_at)}${
            windowS !== null ? ` (${t("storm.counted_over", { time: fmtDuration(windowS) })})` : ""
          }`,
        }),
      ),
      field(t("storm.member_count"), el("span", { id: "storm-count", text: String(count) })),
      field(t("detail.reasons"), el("ul", { class: "reasons", id: "storm-reasons" }, ...words.map((r) => el("li", { title: r.text || "", text: reasonText(r) })))),
    ),
    el("p", { class: "hint", text: t("storm.explain") }),
  );
  const list = section(
    "storm.members",
    count
      ? el("ul", { id: "storm-members", class: "members" }, ...members.map(memberItem))
      : el("p", { class: "hint", text: t("detail.none") }),
  );
  const typedNote = keepMap && $("storm-note") && root.contains($("storm-note")) ? $("storm-note").value : "";
  root.replaceChildren(head, stormActions(inc, typedNote), el("div", { class: "columns" }, el("div", {}, summary), el("div", {}, list)), renderTimeline(data));
}

function stormActions(inc, typedNote) {
  // Two buttons, each asking once more before it acts: confirming cancels held calls for good.
  const said = state.said && state.said.id === inc.incident_id ? state.said.text : "";
  const status = el("p", { id: "action-status", role: "status", text: said });
  const active = ACTIVE.has(inc.status);
  if (!active) {
    return el("section", { class: "card actions" }, el("h3", { text: t("actions.title") }), el("p", { class: "hint", text: t(inc.status === "resolved" ? "storm.confirmed" : "storm.dismissed") }), status);
  }
  const pending = state.stormAsk && state.stormAsk.id === inc.incident_id ? state.stormAsk.action : null;
  const ask = (action) => {
    state.stormAsk = { id: inc.incident_id, action };
    renderDetail(true);
    const back = $("storm-no");
    if (back) back.focus(); // the safe answer first, for a keyboard
  };
  const confirmButton = el("button", { type: "button", id: "storm-confirm", class: "danger", text: t("storm.confirm"), dataset: { action: "confirm_storm" } });
  confirmButton.addEventListener("click", () => ask("confirm_storm"));
  const dismissButton = el("button", { type: "button", id: "storm-dismiss", text: t("storm.dismiss"), dataset: { action: "dismiss_storm" } });
  dismissButton.addEventListener("click", () => ask("dismiss_storm"));
  let step = null;
  if (pending) {
    const note = el("textarea", { id: "storm-note", rows: 2, maxLength: 2000, value: typedNote });
    const yes = el("button", { type: "button", id: "storm-yes", class: pending === "confirm_storm" ? "danger" : "", text: t(pending === "confirm_storm" ? "storm.confirm_yes" : "storm.dismiss_yes") });
    const no = el("button", { type: "button", id: "storm-no", text: t("storm.back") });
    yes.addEventListener("click", async () => {
      state.stormAsk = null;
      const text = note.value.trim();
      await act(inc.incident_id, text ? { action: pending, note: text } : { action: pending });
    });
    no.addEventListener("click", () => {
      state.stormAsk = null;
      renderDetail(true);
    });
    const count = Array.isArray(inc.members) ? inc.members.length : 0;
    step = el(
      "div",
      { id: "storm-step", class: "confirm-step", role: "alertdialog" },
      el("p", { text: t(pending === "confirm_storm" ? "storm.confirm_ask" : "storm.dismiss_ask", { provider: inc.tps || "?", count }) }),
      el("label", { class: "note-box" }, t("actions.note_label"), note),
      el("div", { class: "buttons" }, yes, no),
    );
  }
  return el(
    "section",
    { class: "card actions" },
    el("h3", { text: t("actions.title") }),
    el("div", { class: "buttons" }, confirmButton, dismissButton),
    step,
    status,
  );
}

function stormMembership(data, doc, inc) {
  // A member incident says it belongs to a storm (its reasons do) and links back to the aggregate.
  const all = [
    ...(Array.isArray(data.reasons) ? data.reasons : []),
    ...(Array.isArray(doc.reasons) ? doc.reasons : []),
    ...(Array.isArray(inc.triage_reasons) ? inc.triage_reasons : []),
  ];
  const codes = new Set(all.map((r) => r && r.code));
  const code = codes.has("storm_confirmed") ? "storm_confirmed" : codes.has("storm_dismissed") ? "storm_dismissed" : codes.has("provider_storm") ? "provider_storm" : null;
  const storm = stormOf(inc.incident_id);
  if (!code && !storm) return null;
  // An automatic member is at its PSAP whatever the storm (the safety invariant): it is not held.
  const which = (code || "provider_storm") === "provider_storm" && inc.automatic === true ? "automatic" : code || "provider_storm";
  const text = t(`storm.member_${which}`, { provider: inc.tps || (storm && storm.tps) || "?" });
  let link = null;
  if (storm) {
    link = el("a", { href: "#", id: "storm-link", text: t("storm.open", { id: storm.incident_id }), dataset: { id: storm.incident_id } });
    link.addEventListener("click", (e) => {
      e.preventDefault();
      select(storm.incident_id);
    });
  }
  return el("section", { class: "card storm-member", id: "storm-member" }, el("p", {}, el("span", { class: "badge storm", text: t("storm.short") }), " ", text, link ? " " : null, link));
}

function positionText(pos) {
  const where = `${Number(pos.lat).toFixed(5)}, ${Number(pos.lon).toFixed(5)}`;
  if (pos.source === "caller_link") {
    // Shared by the caller's browser from a location link: its stated accuracy, not the MSD's flag.
    const acc = Number(pos.accuracy_m) > 0 ? ` ${t("detail.accuracy", { m: Math.round(pos.accuracy_m) })}` : "";
    return el("span", { id: "position-source", class: "caller", text: `${where} — ${caller.sourceText(pos.source)}${acc}` });
  }
  return el("span", { class: pos.trusted === false ? "untrusted" : "trusted", text: `${where} — ${pos.trusted === false ? t("detail.untrusted") : t("detail.trusted")}` });
}

function trailOf(data, doc) {
  const points = [];
  const add = (p, source, at) => {
    if (!p || typeof p.lat !== "number" || typeof p.lon !== "number") return;
    const last = points[points.length - 1];
    if (last && last.lat === p.lat && last.lon === p.lon) return;
    points.push({ lat: p.lat, lon: p.lon, source: p.source || source || "", at: p.at || at || "" });
  };
  if (Array.isArray(data.trail) && data.trail.length) {
    for (const p of data.trail) add(p, p.source, p.at);
    return points;
  }
  // An API without a trail: the positions of the incident's revisions, in order.
  for (const rev of Array.isArray(data.history) ? data.history : []) {
    const d = rev && rev.document;
    if (d && d.position) add(d.position, d.position.source, d.position.at);
  }
  if (!points.length && doc && doc.position) add(doc.position);
  return points;
}

function drawMap(box, trail, pos) {
  const L = window.L;
  if (!L || !trail.length) return;
  const map = L.map(box, { attributionControl: true, zoomControl: true });
  state.map = map;
  if (state.config.tile_url) {
    // Leaflet writes the attribution as HTML: hand it text only.
    const text = state.config.tile_attribution.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
    L.tileLayer(state.config.tile_url, { attribution: text, maxZoom: 19 }).addTo(map);
  }
  L.control.scale({ imperial: false }).addTo(map);
  const latlngs = trail.map((p) => [p.lat, p.lon]);
  if (latlngs.length > 1) L.polyline(latlngs, { color: "#1565c0", weight: 3 }).addTo(map);
  trail.forEach((p, i) => {
    const last = i === trail.length - 1;
    L.circleMarker([p.lat, p.lon], {
      radius: last ? 9 : 5,
      color: last && pos && pos.trusted === false ? "#b71c1c" : "#0d47a1",
      fillOpacity: last ? 0.7 : 0.4,
    }).addTo(map);
  });
  // A caller's phone states how far off its position may be: the circle shows it.
  const circle = caller.accuracyCircle(L, map, pos);
  if (latlngs.length > 1) map.fitBounds(latlngs, { padding: [24, 24], maxZoom: 17 });
  else if (circle) map.fitBounds(circle.getBounds(), { padding: [24, 24], maxZoom: 17 });
  else map.setView(latlngs[0], 15);
}

function renderNotes(data) {
  const notes = Array.isArray(data.notes) ? data.notes : [];
  return section(
    "detail.notes",
    notes.length
      ? el("ul", { class: "notes" }, ...notes.map((n) => el("li", {}, el("small", { text: `${fmtTime(n.at)} — ${n.operator || ""}` }), el("p", { class: "note-text", text: n.text || "" }))))
      : el("p", { class: "hint", text: t("detail.none") }),
  );
}

function timelineEntries(data) {
  if (Array.isArray(data.timeline) && data.timeline.length) return data.timeline;
  // An API without a timeline: revisions, deliveries and audited actions, by time.
  const out = [];
  for (const rev of Array.isArray(data.history) ? data.history : []) {
    const d = rev.document || {};
    out.push({ at: d.updated_at, kind: "revision", revision: d.revision, outcome: rev.outcome, reasons: rev.reasons });
  }
  for (const a of Array.isArray(data.audit) ? data.audit : []) {
    if (a.action === "view") continue;
    out.push({ at: a.at, kind: a.action === "note" ? "note" : "action", action: a.action, operator: a.actor, note: a.note, outcome: a.outcome });
  }
  const when = (e) => (typeof e.at === "number" ? e.at * 1000 : Date.parse(e.at || "") || 0);
  return out.sort((a, b) => when(a) - when(b));
}

function describe(entry) {
  const parts = [];
  for (const [k, v] of Object.entries(entry)) {
    if (k === "at" || k === "kind" || k === "incident_id" || v === null || v === undefined || v === "") continue;
    if (k === "reasons" && Array.isArray(v)) {
      if (v.length) parts.push(v.map((r) => (Array.isArray(r) ? reasonText({ code: r[0], text: r[1] }) : reasonText(r))).join("; "));
      continue;
    }
    if (typeof v === "object") continue;
    const label = state.catalog[`tl.${k}`] ?? k;
    let value = v;
    if (typeof v === "boolean") value = t(v ? "yes" : "no");
    else if (k.endsWith("_at")) value = fmtTime(v);
    else if (k === "level" || k === "status") value = t(`${k}.${v}`);
    else if (k === "state" || k === "outcome") value = state.catalog[`outcome.${v}`] ?? v;
    parts.push(`${label}: ${value}`);
  }
  return parts.join(" · ");
}

function renderTimeline(data) {
  const entries = timelineEntries(data);
  return section(
    "detail.timeline",
    el(
      "ol",
      { class: "timeline" },
      ...entries.map((e) =>
        el(
          "li",
          { class: `tl-${e.kind}` },
          el("small", { text: fmtTime(e.at) }),
          " ",
          el("b", { text: t(`timeline.${e.kind}`) }),
          " ",
          el("span", { class: "tl-text", text: describe(e) }),
        ),
      ),
    ),
  );
}

function renderDeliveries(data) {
  if (Array.isArray(data.receivers) && data.receivers.length) {
    // Per receiver: revisions confirmed of those routed, attempts, the last error, when confirmed.
    const table = el(
      "table",
      { class: "deliveries" },
      el("thead", {}, el("tr", {}, ...["detail.receiver", "detail.revision", "detail.attempts", "detail.last_error", "detail.confirmed"].map((k) => el("th", { text: t(k) })))),
      el(
        "tbody",
        {},
        ...data.receivers.map((r) =>
          el(
            "tr",
            { dataset: { receiver: r.receiver } },
            el("td", { text: r.receiver }),
            el("td", { text: `${r.confirmed ?? 0}/${r.revisions ?? 0}` }),
            el("td", { text: r.attempts ?? "" }),
            el("td", { class: "error", text: r.last_error || "" }),
            el("td", { text: r.confirmed_at ? fmtTime(r.confirmed_at) : t("detail.pending") }),
          ),
        ),
      ),
    );
    return section("detail.deliveries", table);
  }
  const rows = Array.isArray(data.deliveries) ? data.deliveries : [];
  const byReceiver = new Map();
  for (const d of rows) {
    const list = byReceiver.get(d.receiver) || [];
    list.push(d);
    byReceiver.set(d.receiver, list);
  }
  const table = el(
    "table",
    { class: "deliveries" },
    el("thead", {}, el("tr", {}, ...["detail.receiver", "detail.revision", "detail.attempts", "detail.last_error", "detail.confirmed"].map((k) => el("th", { text: t(k) })))),
    el(
      "tbody",
      {},
      ...[...byReceiver.entries()].flatMap(([receiver, list]) =>
        list.map((d) =>
          el(
            "tr",
            {},
            el("td", { text: receiver }),
            el("td", { text: d.revision ?? "" }),
            el("td", { text: d.attempts ?? "" }),
            el("td", { class: "error", text: d.last_error || d.dead_letter_reason || "" }),
            el("td", { text: d.delivered_at || d.confirmed_at ? fmtTime(d.confirmed_at || d.delivered_at) : t("detail.pending") }),
          ),
        ),
      ),
    ),
  );
  return section("detail.deliveries", rows.length ? table : el("p", { class: "hint", text: t("detail.none") }));
}

// --- workflow ------------------------------------------------------------------------------------

function renderActions(inc) {
  // The last action's answer survives the view's live refreshes (an event may redraw it any time).
  const said = state.said && state.said.id === inc.incident_id ? state.said.text : "";
  const status = el("p", { id: "action-status", role: "status", text: said });
  const button = (action, key, extra = {}) => {
    const b = el("button", { type: "button", text: t(key), dataset: { action } });
    b.addEventListener("click", () => act(inc.incident_id, { action, ...extra }));
    return b;
  };
  const mine = inc.claimed_by && inc.claimed_by === state.operator;
  const noteBox = el("textarea", { id: "note-text", rows: 2, maxLength: 2000 });
  const noteButton = el("button", { type: "button", id: "note-add", text: t("actions.note") });
  noteButton.addEventListener("click", async () => {
    const text = noteBox.value.trim();
    if (!text) return;
    if (await act(inc.incident_id, { action: "note", note: text })) noteBox.value = "";
  });
  const reason = el(
    "select",
    { id: "cancel-reason", required: true },
    el("option", { value: "", text: "—" }),
    ...["false_trigger", "test", "duplicate", "no_help_needed", "other"].map((r) => el("option", { value: r, text: t(`cancel.${r}`) })),
  );
  const cancelNote = el("textarea", { id: "cancel-note", rows: 2, maxLength: 2000, required: true });
  const cancelForm = el(
    "form",
    { id: "cancel-form", class: "cancel-form", noValidate: true },
    el("label", {}, t("actions.reason_label"), reason),
    el("label", {}, t("actions.note_label"), cancelNote),
    el("button", { type: "submit", text: t("actions.cancel_submit") }),
  );
  cancelForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!reason.value || !cancelNote.value.trim()) {
      say(inc.incident_id, t("actions.cancel_needs"));
      return;
    }
    await act(inc.incident_id, { action: "cancel", reason: reason.value, note: cancelNote.value.trim() });
  });
  const active = ACTIVE.has(inc.status);
  return el(
    "section",
    { class: "card actions" },
    el("h3", { text: t("actions.title") }),
    el(
      "div",
      { class: "buttons" },
      mine ? button("release", "actions.release") : button("claim", "actions.claim", { assignee: state.operator }),
      active ? button("ack", "actions.ack") : null,
      active ? button("escalate", "actions.escalate") : null,
      active ? button("resolve", "actions.resolve") : null,
    ),
    assignBox(inc),
    el("label", { class: "note-box" }, t("actions.note_label"), noteBox),
    noteButton,
    active ? el("details", {}, el("summary", { text: t("actions.cancel") }), cancelForm) : null,
    status,
  );
}

function assignBox(inc) {
  // Hand the incident to another operator (a claim in their name).
  const who = el("input", { id: "assignee", type: "text", maxLength: 64, placeholder: t("actions.assignee") });
  const go = el("button", { type: "button", id: "assign", text: t("actions.assign") });
  go.addEventListener("click", () => {
    const name = who.value.trim();
    if (name) act(inc.incident_id, { action: "claim", assignee: name });
  });
  return el("div", { class: "assign" }, who, go);
}

function say(id, text) {
  state.said = { id, text };
  const node = $("action-status");
  if (node) node.textContent = text;
}

async function act(id, body) {
  const { ok, status: code, data } = await send("POST", `/v1/incidents/${encodeURIComponent(id)}/actions`, body);
  if (code === 401) return sessionEnded();
  const outcome = state.catalog[`outcome.${data.outcome}`] ?? data.outcome ?? "ok";
  say(id, ok ? t("actions.done", { outcome }) : t("actions.failed", { error: data.error || data.outcome || "?" }));
  if (ok) {
    // What was sent is done: the view's refresh must not bring the text back.
    if (body.action === "note" && $("note-text")) $("note-text").value = "";
    if (body.action === "cancel" && $("cancel-note")) $("cancel-note").value = "";
    if (body.assignee && $("assignee")) $("assignee").value = "";
    if (data.claimed_by !== undefined) merge({ incident_id: id, claimed_by: data.claimed_by });
    await loadDetail(id, { keepMap: true });
  }
  return ok;
}

function tickCountdown() {
  const box = $("countdown");
  if (!box || !state.detail) return;
  const inc = state.incidents.get(state.detail.incident_id) || {};
  if (inc.at_psap) {
    box.textContent = t("detail.at_psap");
    return;
  }
  const due = Date.parse(inc.escalation_due_at || "");
  if (Number.isNaN(due) || !ACTIVE.has(inc.status)) {
    box.textContent = "";
    return;
  }
  const left = (due - Date.now()) / 1000;
  box.textContent = left > 0 ? t("detail.escalation_in", { time: fmtDuration(left) }) : t("detail.escalation_overdue");
  box.className = left > 30 ? "countdown" : "countdown urgent";
}

// --- page chrome ----------------------------------------------------------------------------------

function renderSound() {
  const b = $("sound");
  b.textContent = state.muted ? t("header.muted") : t("header.sound");
  b.setAttribute("aria-pressed", state.muted ? "false" : "true");
}

function sessionEnded() {
  if (state.source) state.source.close();
  window.location.assign("/console/");
}

async function checkSession() {
  const resp = await fetch("/console/session", { credentials: "same-origin" });
  if (resp.status === 401) sessionEnded();
  else setTimeout(connect, 2000);
}

async function signOut() {
  await send("DELETE", "/console/session");
  if (state.source) state.source.close();
  window.location.assign("/console/");
}

async function main() {
  await loadLang(pickLang());
  $("lang").addEventListener("change", (e) => {
    localStorage.setItem(STORE.lang, e.target.value);
    loadLang(e.target.value);
  });
  let session;
  try {
    session = await getJson("/console/session");
  } catch (_) {
    $("signin").hidden = false;
    $("signin-failed").hidden = new URLSearchParams(location.search).get("signin") !== "failed";
    document.body.dataset.ready = "signin";
    return;
  }
  state.csrf = session.csrf;
  state.operator = session.operator;
  caller.init({ el, t, getJson, send, fmtTime, fmtShort, section, field, sessionEnded, state });
  $("who").textContent = t("header.signed_in_as", { name: session.operator });
  for (const id of ["who", "signout", "sound", "counters", "app"]) $(id).hidden = false;
  $("signout").addEventListener("click", signOut);
  $("sound").addEventListener("click", () => {
    state.muted = !state.muted;
    localStorage.setItem(STORE.muted, state.muted ? "1" : "0");
    renderSound();
  });
  for (const id of ["f-status", "f-level", "f-tps", "f-kind"]) $(id).addEventListener("change", () => loadQueue().catch(() => {}));
  $("f-q").addEventListener("input", () => renderQueue());
  $("f-q").addEventListener("change", () => loadQueue().catch(() => {}));
  $("more").addEventListener("click", () => loadQueue(true).catch(() => {}));
  const [config, wmi, areas] = await Promise.all([
    getJson("config.json").catch(() => ({})),
    getJson("wmi.json").catch(() => ({})),
    getJson("areas.json").catch(() => ({ areas: [] })),
  ]);
  state.config = { ...state.config, ...config };
  state.wmi = wmi;
  state.areas = Array.isArray(areas.areas) ? areas.areas : [];
  const areaSelect = $("f-area");
  for (const a of state.areas) areaSelect.append(el("option", { value: a.name, text: a.name }));
  $("f-area-box").hidden = state.areas.length === 0;
  $("f-area").addEventListener("change", () => renderQueue());
  await loadQueue();
  connect();
  caller.initAssist();
  setInterval(tickCountdown, 1000);
  document.body.dataset.ready = "app";
}

main();
