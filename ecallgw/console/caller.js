// The caller's side in the console (issue 14; docs/console.md): links sent to callers by SMS
// (share a position, follow a case) and breakdown assistance (the cases no provider took, the
// providers). Like console.js, every value from a caller, a vehicle, a provider or an operator
// reaches the page through textContent or a DOM property, never through innerHTML.

let C = null; // the helpers of console.js (el, t, getJson, send, fmtTime, fmtShort, ...)

// A link's address is answered once, to its creator; this page keeps it in memory only, to show
// while the SMS could not carry it (none sent, or failed), so the operator can read it out.
const urls = new Map();

const CASE_POLL_MS = 3000; // the Breakdowns tab, while it is shown (cases have no event stream)
const COUNT_POLL_MS = 20000; // the tab's count of cases for the operators, while the page is seen

const assist = {
  shown: false,
  selected: null,
  case: null,
  providers: [],
  formUrl: undefined, // the last assistance form: its URL to read out (no SMS), null (SMS sent)
  listTimer: null,
  countTimer: null,
};

export function init(helpers) {
  C = helpers;
}

function t(key, vars) {
  return C.t(key, vars);
}

function known(prefix, value) {
  // A code the catalogue knows, in words; else the code itself (a newer gateway's value).
  return C.state.catalog[`${prefix}.${value}`] ?? C.state.english[`${prefix}.${value}`] ?? String(value ?? "");
}

function flash(text, id) {
  // A refusal, in the status line of the view it was clicked in.
  const node = document.getElementById(id);
  if (node) node.textContent = text;
}

function refused(code, data) {
  if (code === 401) C.sessionEnded();
  return t("actions.failed", { error: (data && data.error) || String(code) });
}

// --- positions ---------------------------------------------------------------------------------

/** The words for where a position comes from ("caller's phone" for a location link). */
export function sourceText(source) {
  return source ? known("source", source) : "";
}

/** A position's accuracy circle on the map (a caller's phone states one), or nothing. */
export function accuracyCircle(L, map, pos) {
  const acc = pos && Number(pos.accuracy_m);
  if (!pos || !(acc > 0) || typeof pos.lat !== "number") return null;
  return L.circle([pos.lat, pos.lon], {
    radius: acc,
    className: "accuracy",
    color: "#2e7d32",
    weight: 1,
    fillOpacity: 0.15,
  }).addTo(map);
}

// --- links ---------------------------------------------------------------------------------------

async function fetchLinks(path) {
  try {
    const data = await C.getJson(path);
    return Array.isArray(data.links) ? data.links : [];
  } catch (_) {
    return null; // a gateway without the caller's side: no links section
  }
}

export function loadIncidentLinks(id) {
  return fetchLinks(`/v1/incidents/${encodeURIComponent(id)}/links`);
}

function linkRows(links, refresh, statusId) {
  const el = C.el;
  if (!links.length) return el("p", { class: "hint", text: t("links.none") });
  const head = ["links.purpose", "links.state", "links.uses", "links.sms", "links.expires", "links.by", ""];
  return el(
    "table",
    { class: "links" },
    el("thead", {}, el("tr", {}, ...head.map((k) => el("th", { text: k ? t(k) : "" })))),
    el(
      "tbody",
      {},
      ...links.flatMap((lk) => {
        const active = lk.state === "active";
        let revoke = null;
        if (active) {
          revoke = el("button", { type: "button", class: "revoke", text: t("links.revoke") });
          revoke.addEventListener("click", async () => {
            revoke.disabled = true;
            const { ok, status, data } = await C.send("DELETE", `/v1/links/${encodeURIComponent(lk.link_id)}`);
            if (!ok) flash(refused(status, data), statusId);
            urls.delete(lk.link_id);
            await refresh();
          });
        }
        const row = el(
          "tr",
          { dataset: { link: lk.link_id, state: lk.state, purpose: lk.purpose } },
          el("td", { text: known("link_purpose", lk.purpose) }),
          el("td", { class: `link-state ${active ? "" : "closed"}`, text: known("link_state", lk.state) }),
          // A tracking link is unbounded in practice (10⁶ uses): its count alone.
          el("td", { text: lk.max_uses >= 1000000 ? `${lk.uses ?? 0}` : `${lk.uses ?? 0}/${lk.max_uses ?? "?"}` }),
          el("td", { class: lk.sms === "failed" || lk.sms === "lost" ? "error" : "", text: known("link_sms", lk.sms) }),
          el("td", { text: C.fmtTime(lk.expires_at) }),
          el("td", { text: lk.created_by || "" }),
          el("td", {}, revoke),
        );
        const url = urls.get(lk.link_id);
        if (!url || !active || (lk.sms !== "none" && lk.sms !== "failed")) return [row];
        return [
          row,
          el(
            "tr",
            { class: "link-url-row" },
            el("td", { colSpan: 7 }, el("span", { class: "hint", text: `${t("links.read_out")} ` }), el("code", { class: "link-url", text: url })),
          ),
        ];
      }),
    ),
  );
}

/**
 * The incident view's card: the phone (the call's callback number, editable), the two buttons
 * and the incident's links. `links` is null when the gateway has no caller routes.
 */
export function incidentLinksCard(inc, links, typedPhone) {
  const el = C.el;
  if (links === null) return null;
  const id = inc.incident_id;
  const box = el("div", { id: "links-box" });
  const status = el("p", { id: "link-status", role: "status" });
  const phone = el("input", { id: "link-phone", type: "tel", maxLength: 32, autocomplete: "off" });
  phone.value = typedPhone ?? inc.callback ?? "";
  const refresh = async () => {
    const fresh = await loadIncidentLinks(id);
    if (fresh !== null && document.body.contains(box)) fill(fresh);
  };
  let pendingTimer = null;
  const fill = (list) => {
    box.replaceChildren(linkRows(list, refresh, "link-status"));
    // The SMS outcome arrives later (sent, failed): look again while one is on its way.
    clearTimeout(pendingTimer);
    if (list.some((lk) => lk.sms === "pending")) pendingTimer = setTimeout(refresh, 1500);
  };
  const create = async (purpose) => {
    const body = { purpose };
    if (phone.value.trim()) body.phone = phone.value.trim();
    status.textContent = "";
    const { ok, status: code, data } = await C.send("POST", `/v1/incidents/${encodeURIComponent(id)}/links`, body);
    if (!ok) {
      status.textContent = refused(code, data);
      return;
    }
    if (data.url) urls.set(data.link_id, data.url);
    status.textContent = t(data.sms === "none" ? "links.created_no_sms" : "links.created", {
      purpose: known("link_purpose", purpose),
    });
    await refresh();
  };
  const button = (purpose, key) => {
    const b = el("button", { type: "button", id: `send-${purpose}-link`, text: t(key) });
    b.addEventListener("click", () => create(purpose));
    return b;
  };
  fill(links);
  return el(
    "section",
    { class: "card caller-links" },
    el("h3", { text: t("links.title") }),
    el(
      "div",
      { class: "inline-form" },
      el("label", {}, el("span", { text: t("links.phone") }), phone),
      button("location", "links.send_location"),
      button("tracking", "links.send_tracking"),
    ),
    status,
    box,
  );
}

// --- breakdown assistance: the tab ---------------------------------------------------------------

const $ = (id) => document.getElementById(id);

export function initAssist() {
  $("tabs").hidden = false;
  $("tab-incidents").addEventListener("click", () => showTab(false));
  $("tab-assist").addEventListener("click", () => showTab(true));
  $("f-case-status").addEventListener("change", () => loadCases());
  $("assist-form").addEventListener("submit", sendAssistForm);
  document.addEventListener("visibilitychange", schedule);
  schedule();
}

function showTab(on) {
  assist.shown = on;
  $("app").hidden = on;
  $("assist").hidden = !on;
  $("tab-incidents").setAttribute("aria-selected", on ? "false" : "true");
  $("tab-assist").setAttribute("aria-selected", on ? "true" : "false");
  schedule();
}

function schedule() {
  // Poll only what is seen: the list while the tab is shown, the count while the page is.
  clearInterval(assist.listTimer);
  clearInterval(assist.countTimer);
  assist.listTimer = assist.countTimer = null;
  if (document.hidden) return;
  if (assist.shown) {
    loadCases();
    loadProviders();
    assist.listTimer = setInterval(() => {
      loadCases();
      if (assist.selected) loadCase(assist.selected);
    }, CASE_POLL_MS);
  } else {
    loadCount();
    assist.countTimer = setInterval(loadCount, COUNT_POLL_MS);
  }
}

/** The catalogue changed language: redraw what this module drew. */
export function relabel() {
  if (assist.shown) loadCases();
  if (assist.case) renderCase(assist.case, false); // the forms too, in the new language
  renderProviders();
  renderFormResult();
}

function showCount(n) {
  const pill = $("c-unassigned");
  pill.textContent = String(n);
  pill.hidden = !n;
}

async function loadCount() {
  try {
    const data = await C.getJson("/v1/assistance/cases?status=unassigned");
    showCount((data.cases || []).length);
  } catch (err) {
    if (err.status === 404) stopAll(); // no assistance on this gateway
  }
}

function stopAll() {
  clearInterval(assist.listTimer);
  clearInterval(assist.countTimer);
  $("tabs").hidden = true;
}

function reasonText(reason) {
  if (!reason) return "";
  if (reason.startsWith("no position")) return t("case_reason.no_position");
  if (reason.startsWith("every provider in range was asked")) return t("case_reason.all_asked");
  const m = /^no available provider with capability (\S+)/.exec(reason);
  if (m) return t("case_reason.no_provider", { capability: known("capability", m[1]) });
  return reason; // the gateway's own words
}

function place(c) {
  if (c.position && typeof c.position.lat === "number") {
    const coords = `${c.position.lat.toFixed(5)}, ${c.position.lon.toFixed(5)}`;
    return c.address ? `${coords} (${c.address})` : coords;
  }
  return c.address || t("unknown");
}

async function loadCases() {
  const status = $("f-case-status").value;
  const query = status ? `?status=${encodeURIComponent(status)}` : "";
  let data;
  try {
    data = await C.getJson(`/v1/assistance/cases${query}`);
  } catch (err) {
    $("cases-error").hidden = false;
    $("cases-error").textContent = t("assist.load_failed", { error: err.message });
    return;
  }
  $("cases-error").hidden = true;
  const cases = Array.isArray(data.cases) ? data.cases : [];
  if (status === "unassigned") showCount(cases.length);
  cases.sort((a, b) => (a.created_at || 0) - (b.created_at || 0)); // the longest waiting first
  const el = C.el;
  $("cases-body").replaceChildren(
    ...cases.map((c) => {
      const tr = el(
        "tr",
        { class: c.case_id === assist.selected ? "selected" : "", dataset: { case: c.case_id, status: c.status }, tabIndex: 0 },
        el("td", {}, el("code", { class: "id", text: c.case_id }), el("br"), el("small", { text: known("case_status", c.status) })),
        el("td", { text: known("what", c.what) }),
        el("td", { text: C.fmtShort(c.created_at) }),
        el("td", { text: place(c) }),
        el(
          "td",
          { class: c.status === "unassigned" ? "case-reason untrusted" : "case-reason", title: c.reason || "" },
          c.status === "unassigned" ? reasonText(c.reason) : c.provider || "",
        ),
      );
      tr.addEventListener("click", () => selectCase(c.case_id));
      tr.addEventListener("keydown", (e) => {
        if (e.key === "Enter") selectCase(c.case_id);
      });
      return tr;
    }),
  );
  $("cases-empty").hidden = cases.length > 0;
}

async function loadProviders() {
  try {
    const data = await C.getJson("/v1/assistance/providers");
    assist.providers = Array.isArray(data.providers) ? data.providers : [];
  } catch (_) {
    assist.providers = [];
  }
  renderProviders();
  const select = $("dispatch-provider");
  if (select) fillProviderSelect(select);
}

function renderProviders() {
  const el = C.el;
  const body = $("providers-body");
  if (!body) return;
  body.replaceChildren(
    ...assist.providers.map((p) => {
      const toggle = el("button", {
        type: "button",
        class: p.available ? "available" : "unavailable",
        text: t(p.available ? "providers.available" : "providers.unavailable"),
        title: t(p.available ? "providers.make_unavailable" : "providers.make_available"),
        dataset: { provider: p.name },
        "aria-pressed": p.available ? "true" : "false",
      });
      toggle.addEventListener("click", async () => {
        toggle.disabled = true;
        const { ok, status, data } = await C.send("POST", `/v1/assistance/providers/${encodeURIComponent(p.name)}`, {
          available: !p.available,
        });
        if (!ok) flash(refused(status, data), "providers-status");
        await loadProviders();
      });
      return el(
        "tr",
        {},
        el("td", { text: p.name }),
        el("td", { text: (p.capabilities || []).map((c) => known("capability", c)).join(", ") }),
        el("td", { text: p.radius_km !== undefined ? t("providers.km", { km: Math.round(p.radius_km) }) : "" }),
        el("td", {}, toggle),
      );
    }),
  );
  $("providers-empty").hidden = assist.providers.length > 0;
}

async function sendAssistForm(e) {
  e.preventDefault();
  const phone = $("assist-phone").value.trim();
  const out = $("assist-form-status");
  out.replaceChildren();
  assist.formUrl = undefined;
  const { ok, status, data } = await C.send("POST", "/v1/assistance/links", phone ? { phone } : {});
  if (!ok) {
    out.textContent = refused(status, data);
    return;
  }
  $("assist-phone").value = "";
  assist.formUrl = data.sms === "none" || data.sms === "failed" ? data.url || "" : null;
  renderFormResult();
}

function renderFormResult() {
  const out = $("assist-form-status");
  if (assist.formUrl === undefined) return;
  if (assist.formUrl !== null) {
    out.replaceChildren(C.el("span", { text: `${t("assist.form_no_sms")} ` }), C.el("code", { class: "link-url", text: assist.formUrl }));
  } else {
    out.textContent = t("assist.form_sent");
  }
}

// --- one case ------------------------------------------------------------------------------------

async function selectCase(id) {
  assist.selected = id;
  assist.case = null;
  for (const tr of document.querySelectorAll("#cases-body tr")) tr.classList.toggle("selected", tr.dataset.case === id);
  await loadCase(id);
}

async function loadCase(id) {
  try {
    const c = await C.getJson(`/v1/assistance/cases/${encodeURIComponent(id)}`);
    if (id !== assist.selected) return;
    const same = assist.case && assist.case.case_id === id;
    assist.case = c;
    renderCase(c, same);
  } catch (err) {
    if (id !== assist.selected) return;
    $("case-placeholder").hidden = true;
    $("case").hidden = false;
    $("case").replaceChildren(C.el("p", { class: "error", text: t("assist.case_failed", { error: err.message }) }));
  }
}

function renderCase(c, keepForms) {
  const root = $("case");
  $("case-placeholder").hidden = true;
  root.hidden = false;
  const info = caseInfo(c);
  const old = $("case-actions");
  if (keepForms && old && root.contains(old) && old.dataset.case === c.case_id) {
    // A poll: the forms keep what the operator is typing; only what the case says is redrawn.
    $("case-info").replaceWith(info);
    setSettled(old, c);
    return;
  }
  root.replaceChildren(info, caseActions(c));
}

function caseInfo(c) {
  const el = C.el;
  const eta = c.shared && c.shared.eta_min !== undefined && c.shared.eta_min !== null ? c.shared.eta_min : c.eta_min;
  const tried = Array.isArray(c.tried) ? c.tried : [];
  const shared = c.shared || {};
  const links = Array.isArray(c.links) ? c.links : [];
  return el(
    "div",
    { id: "case-info" },
    el(
      "header",
      { class: "detail-head" },
      el("h2", {}, el("code", { text: c.case_id })),
      el("p", { id: "case-status-line", class: `case-${c.status}`, text: `${known("case_status", c.status)} · ${known("case_origin", c.origin)}` }),
      c.status === "unassigned" ? el("p", { id: "case-reason", class: "untrusted", title: c.reason || "", text: reasonText(c.reason) }) : null,
    ),
    C.section(
      "assist.case",
      el(
        "dl",
        {},
        C.field(t("assist.what"), known("what", c.what)),
        C.field(t("assist.needs"), known("capability", c.capability)),
        C.field(t("assist.place"), place(c)),
        C.field(t("assist.vehicle"), c.vehicle || t("unknown")),
        C.field(t("assist.phone"), c.phone ? el("a", { href: `tel:${c.phone}`, text: c.phone }) : t("unknown")),
        C.field(t("detail.received"), C.fmtTime(c.created_at)),
        C.field(t("detail.updated"), C.fmtTime(c.updated_at)),
      ),
    ),
    C.section(
      "assist.dispatch",
      el(
        "dl",
        {},
        C.field(t("assist.provider"), el("span", { id: "case-provider", text: c.provider || t("assist.no_provider") })),
        c.status === "dispatching" && c.answer_by ? C.field(t("assist.answer_by"), C.fmtTime(c.answer_by)) : null,
        C.field(t("assist.eta"), eta !== null && eta !== undefined ? t("assist.minutes", { n: eta }) : t("unknown")),
        c.accepted_at ? C.field(t("assist.accepted_at"), C.fmtTime(c.accepted_at)) : null,
        c.note ? C.field(t("assist.provider_note"), el("span", { class: "note-text", text: c.note })) : null,
      ),
      el("h4", { text: t("assist.tried") }),
      tried.length
        ? el("ol", { id: "case-tried" }, ...tried.map((x) => el("li", { text: `${x.provider} — ${known("tried", x.outcome)}` })))
        : el("p", { class: "hint", text: t("detail.none") }),
    ),
    C.section(
      "assist.shared",
      el(
        "dl",
        {},
        ...["garage", "replacement", "message"].map((k) => C.field(t(`share.${k}`), el("span", { class: "note-text", text: shared[k] || "—" }))),
      ),
    ),
    C.section("links.title", linkRows(links, () => loadCase(c.case_id), "case-action-status")),
  );
}

function settled(c) {
  return c.status === "accepted" || c.status === "closed";
}

function setSettled(node, c) {
  for (const b of node.querySelectorAll("[data-open-only]")) b.disabled = settled(c);
  const close = node.querySelector("#close-case");
  if (close) close.disabled = c.status === "closed";
}

function fillProviderSelect(select) {
  const keep = select.value;
  select.replaceChildren(
    C.el("option", { value: "", text: "—" }),
    ...assist.providers.map((p) =>
      C.el("option", { value: p.name, text: `${p.name}${p.available ? "" : ` (${t("providers.unavailable")})`}` }),
    ),
  );
  select.value = keep;
}

function caseActions(c) {
  const el = C.el;
  const id = c.case_id;
  const path = (tail) => `/v1/assistance/cases/${encodeURIComponent(id)}/${tail}`;
  const status = el("p", { id: "case-action-status", role: "status" });
  const run = async (tail, body, after) => {
    status.textContent = "";
    const { ok, status: code, data } = await C.send("POST", path(tail), body);
    status.textContent = ok ? t("assist.done") : refused(code, data);
    if (ok && after) after(data);
    await loadCase(id);
    loadCases();
    // A provider offered a case usually answers within a second: look again before the next poll.
    if (ok && tail === "dispatch") setTimeout(() => assist.selected === id && loadCase(id), 1000);
  };

  // Dispatch: to a named provider (any distance), or again from the nearest available.
  const provider = el("select", { id: "dispatch-provider" });
  fillProviderSelect(provider);
  const offer = el("button", { type: "button", id: "dispatch", text: t("assist.offer"), dataset: { openOnly: "1" } });
  offer.addEventListener("click", () => {
    if (!provider.value) {
      status.textContent = t("assist.pick_provider");
      return;
    }
    run("dispatch", { provider: provider.value });
  });
  const nearest = el("button", { type: "button", id: "dispatch-nearest", text: t("assist.nearest"), dataset: { openOnly: "1" } });
  nearest.addEventListener("click", () => run("dispatch", {}));

  // What the caller's tracking page shows.
  const shared = c.shared || {};
  const input = (key, max) => {
    const node = el("input", { id: `share-${key}`, type: "text", maxLength: max });
    node.value = shared[key] ?? "";
    return node;
  };
  const garage = input("garage", 300);
  const replacement = input("replacement", 300);
  const message = el("textarea", { id: "share-message", rows: 2, maxLength: 500 });
  message.value = shared.message ?? "";
  const eta = el("input", { id: "share-eta", type: "number", min: 0, max: 1440, step: 1 });
  eta.value = shared.eta_min ?? "";
  const shareForm = el(
    "form",
    { id: "share-form", class: "share-form", noValidate: true },
    el("label", {}, el("span", { text: t("share.garage") }), garage),
    el("label", {}, el("span", { text: t("share.replacement") }), replacement),
    el("label", {}, el("span", { text: t("share.eta") }), eta),
    el("label", {}, el("span", { text: t("share.message") }), message),
    el("button", { type: "submit", text: t("share.submit") }),
  );
  shareForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const minutes = eta.value.trim() === "" ? null : Number(eta.value);
    if (minutes !== null && (!Number.isInteger(minutes) || minutes < 0 || minutes > 1440)) {
      status.textContent = t("share.eta_invalid");
      return;
    }
    const text = (node) => node.value.trim() || null;
    run("share", { garage: text(garage), replacement: text(replacement), eta_min: minutes, message: text(message) });
  });

  // A tracking link for the caller (the case's phone, editable).
  const phone = el("input", { id: "case-link-phone", type: "tel", maxLength: 32, autocomplete: "off" });
  phone.value = c.phone || "";
  const track = el("button", { type: "button", id: "send-case-tracking-link", text: t("links.send_tracking") });
  track.addEventListener("click", () => {
    const body = { purpose: "tracking" };
    if (phone.value.trim()) body.phone = phone.value.trim();
    run("links", body, (data) => {
      if (data.url) urls.set(data.link_id, data.url);
    });
  });

  const close = el("button", { type: "button", id: "close-case", text: t("assist.close") });
  close.addEventListener("click", () => run("close", {}));

  const node = el(
    "section",
    { id: "case-actions", class: "card actions", dataset: { case: id } },
    el("h3", { text: t("actions.title") }),
    el("div", { class: "inline-form" }, el("label", {}, el("span", { text: t("assist.provider") }), provider), offer, nearest),
    el("h4", { text: t("share.title") }),
    shareForm,
    el("div", { class: "inline-form" }, el("label", {}, el("span", { text: t("links.phone") }), phone), track),
    el("div", { class: "buttons" }, close),
    status,
  );
  setSettled(node, c);
  return node;
}

