// The caller's pages (issue 14): share a position, request assistance, follow a case.
// Everything shown from the server or the caller goes through textContent, never innerHTML.
"use strict";
(function () {
  const page = document.getElementById("page");
  if (!page) return;
  const kind = page.dataset.kind;
  const base = window.location.pathname.replace(/\/+$/, "");
  const text = (key) => page.dataset[key] || "";
  const status = document.getElementById("status");
  function say(message, cls) {
    if (!status) return;
    status.textContent = message;
    status.className = "status" + (cls ? " " + cls : "");
  }
  function locate(onPosition, onError) {
    if (!navigator.geolocation) { onError(); return; }
    navigator.geolocation.getCurrentPosition(onPosition, onError, {
      enableHighAccuracy: true, timeout: 20000, maximumAge: 0,
    });
  }
  async function post(path, body) {
    const response = await fetch(base + path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
    });
    let data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    return { status: response.status, data: data };
  }

  if (kind === "location") {
    const button = document.getElementById("share");
    button.addEventListener("click", function () {
      button.disabled = true;
      say(text("sending"));
      locate(async function (pos) {
        try {
          const r = await post("/position", {
            lat: pos.coords.latitude, lon: pos.coords.longitude, accuracy_m: pos.coords.accuracy,
          });
          if (r.status === 200) { say(text("sent"), "ok"); return; }
          if (r.status === 410) { say(text("gone"), "bad"); return; }
          say(text("failed"), "bad");
        } catch (e) { say(text("failed"), "bad"); }
        button.disabled = false;
      }, function () { say(text("denied"), "bad"); button.disabled = false; });
    });
  }

  if (kind === "assist") {
    const form = document.getElementById("assist");
    const lat = document.getElementById("lat");
    const lon = document.getElementById("lon");
    const acc = document.getElementById("accuracy_m");
    const located = document.getElementById("located");
    document.getElementById("locate").addEventListener("click", function () {
      locate(function (pos) {
        lat.value = String(pos.coords.latitude);
        lon.value = String(pos.coords.longitude);
        acc.value = String(pos.coords.accuracy);
        located.textContent = text("positionSet");
      }, function () { located.textContent = text("denied"); });
    });
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const body = {
        address: form.elements.address.value,
        vehicle: form.elements.vehicle.value,
        what: form.elements.what.value,
        phone: form.elements.phone.value,
      };
      if (lat.value) {
        body.lat = Number(lat.value); body.lon = Number(lon.value); body.accuracy_m = Number(acc.value);
      }
      const submit = document.getElementById("submit");
      submit.disabled = true;
      try {
        const r = await post("/request", body);
        if (r.status === 201 && r.data.tracking_url) {
          say(text("submitted"), "ok");
          const a = document.getElementById("follow");
          a.href = r.data.tracking_url;
          a.textContent = text("follow");
          a.hidden = false;
          form.hidden = true;
          return;
        }
        if (r.status === 410) { say(text("gone"), "bad"); return; }
        say(text("invalid") + " " + String(r.data.field || r.data.error || ""), "bad");
      } catch (e) { say(text("failed"), "bad"); }
      submit.disabled = false;
    });
  }

  if (kind === "tracking") {
    const fields = ["state", "provider", "eta", "garage", "replacement", "message", "updated"];
    async function refresh() {
      try {
        const response = await fetch(base + "/state", { credentials: "omit", cache: "no-store" });
        if (response.status === 410) { say(text("gone"), "bad"); return false; }
        if (!response.ok) return true;
        const data = await response.json();
        for (const f of fields) {
          const dd = document.getElementById("f-" + f);
          if (!dd) continue;
          const value = data[f];
          dd.textContent = value === null || value === undefined ? "" : String(value);
          dd.parentElement.hidden = value === null || value === undefined || value === "";
        }
      } catch (e) { /* offline for a moment: the next poll tries again */ }
      return true;
    }
    (async function loop() {
      if (await refresh()) setTimeout(loop, 3000);
    })();
  }
})();
