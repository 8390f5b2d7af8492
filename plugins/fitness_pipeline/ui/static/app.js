// The training page: calendar, trends and sync health of one athlete, read from the plugin's JSON API
// (relative URLs: the page is served at <airflow>/training/ and shown by Airflow at /plugin/training).
// Plain JavaScript; the only library is Chart.js, vendored next to this file (no request leaves the server).
"use strict";

(() => {
  // ------------------------------------------------------------------ formatting
  const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December"];
  const DOW = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

  const isNum = (x) => typeof x === "number" && Number.isFinite(x);
  const fmtInt = (n) => String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const fmtKm = (km) => km.toFixed(1);
  const fmtKg = (kg) => kg.toFixed(1);
  /** seconds -> "h:mm" (hours may exceed 24: a week's total) */
  function fmtHm(seconds) {
    const minutes = Math.round(seconds / 60);
    return `${Math.floor(minutes / 60)}:${String(minutes % 60).padStart(2, "0")}`;
  }
  /** seconds per km -> "m:ss" */
  function fmtPace(secondsPerKm) {
    const s = Math.round(secondsPerKm);
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  // Civil dates ("YYYY-MM-DD") are handled as UTC midnights, so no time zone can shift a day.
  const parseDate = (iso) => new Date(`${iso.slice(0, 10)}T00:00:00Z`);
  const isoDate = (d) => d.toISOString().slice(0, 10);
  const addDays = (d, n) => new Date(d.getTime() + n * 86400000);
  const mondayOf = (d) => addDays(d, -((d.getUTCDay() + 6) % 7));
  const shortDate = (d) => `${MONTHS[d.getUTCMonth()].slice(0, 3)} ${d.getUTCDate()}`;
  function isoWeek(d) {
    const thursday = addDays(d, 3 - ((d.getUTCDay() + 6) % 7));
    const jan1 = new Date(Date.UTC(thursday.getUTCFullYear(), 0, 1));
    return 1 + Math.floor((thursday - jan1) / (7 * 86400000));
  }
  function weekSpan(start) {
    const end = addDays(start, 6);
    const sameMonth = start.getUTCMonth() === end.getUTCMonth();
    return `${shortDate(start)}–${sameMonth ? end.getUTCDate() : shortDate(end)}`;
  }
  function localToday() {
    const now = new Date();
    return new Date(Date.UTC(now.getFullYear(), now.getMonth(), now.getDate()));
  }

  /** an instant -> "3 h ago" / "in 3 h" */
  function relative(iso) {
    const seconds = (Date.parse(iso) - Date.now()) / 1000;
    const a = Math.abs(seconds);
    let text;
    if (a < 45) return seconds < 0 ? "just now" : "in a moment";
    if (a < 90 * 60) text = `${Math.max(1, Math.round(a / 60))} min`;
    else if (a < 36 * 3600) text = `${Math.round(a / 3600)} h`;
    else text = `${Math.round(a / 86400)} d`;
    return seconds < 0 ? `${text} ago` : `in ${text}`;
  }
  const absolute = (iso) => new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });

  // ------------------------------------------------------------------ sports
  const SPORT_COLOURS = {
    Run: "#f26b1d", TrailRun: "#b9470b", VirtualRun: "#f59e5b",
    Ride: "#2f6fdf", VirtualRide: "#7aa7f0", GravelRide: "#23499b", MountainBikeRide: "#1d3f8a", EBikeRide: "#5b8def",
    Swim: "#0ea5b7", Walk: "#2f9e55", Hike: "#8a6a3a", Rowing: "#0f8f83", Kayaking: "#128c9c",
    Padel: "#c99a06", Tennis: "#b8a10a", Badminton: "#d4a017", Squash: "#a88a10", Soccer: "#5f8f1f",
    WeightTraining: "#8b5cf6", Workout: "#a772f0", Crossfit: "#7c3aed", Yoga: "#d9468f", Pilates: "#e26aa6",
    AlpineSki: "#64748b", NordicSki: "#475569", BackcountrySki: "#334155",
  };
  const FALLBACK = ["#0e7490", "#a21caf", "#b45309", "#4338ca", "#be123c", "#0f766e", "#78716c", "#9d174d"];
  function sportColour(sport) {
    if (SPORT_COLOURS[sport]) return SPORT_COLOURS[sport];
    let h = 0;
    for (const c of String(sport)) h = (h * 31 + c.charCodeAt(0)) >>> 0;
    return FALLBACK[h % FALLBACK.length];
  }
  const sportLabel = (sport) => String(sport || "Other").replace(/([a-z])([A-Z])/g, "$1 $2");
  const isRun = (sport) => /Run$/.test(String(sport));

  // ------------------------------------------------------------------ DOM helpers
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "style") node.style.cssText = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const $ = (id) => document.getElementById(id);

  function setState(id, kind, content) {
    const box = $(id);
    box.className = `state ${kind || ""}`;
    box.replaceChildren(...(content === undefined ? [] : [content].flat()));
  }

  class HttpError extends Error {
    constructor(status, body) {
      super(`HTTP ${status}`);
      this.status = status;
      this.code = body && typeof body.code === "string" ? body.code : null;
      this.detail = body && typeof body.detail === "string" ? body.detail : null;
    }
  }

  // The athlete shown (an id; null: the server's choice, the first the Airflow user may see).
  let athleteId = null;

  /** ``url`` for the athlete shown (every data route takes ``athlete``). */
  function forAthlete(url) {
    return athleteId === null ? url : `${url}${url.includes("?") ? "&" : "?"}athlete=${encodeURIComponent(athleteId)}`;
  }

  async function getJSON(url) {
    const response = await fetch(forAthlete(url), { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) {
      let body = null;
      try {
        body = await response.json();
      } catch {
        // not JSON: the status says enough
      }
      throw new HttpError(response.status, body);
    }
    return response.json();
  }

  /** Before the first run of fitness_sync the views do not exist: the server says so (503, code no_schema). */
  const notSetUp = (error) => error instanceof HttpError && error.code === "no_schema";

  function showEmpty(detail) {
    $("empty").hidden = false;
    if (detail) $("empty-detail").textContent = detail;
  }

  function showError(stateId, what, error, retry) {
    if (notSetUp(error)) {
      showEmpty(error.detail);
      setState(stateId, "loading", "No data yet.");
      return;
    }
    let detail;
    if (error instanceof HttpError && (error.status === 401 || error.status === 403)) {
      detail = `the Airflow server refused it (HTTP ${error.status}): your login may have expired, or your ` +
        "Airflow user may not read the fitness_sync DAG. Reload Airflow and log in.";
    } else if (error instanceof HttpError) {
      detail = `the Airflow server answered HTTP ${error.status}${error.detail ? `: ${error.detail}` : "."}`;
    } else {
      detail = "the Airflow server could not be reached, or sent something that is not JSON.";
    }
    setState(stateId, "error", [`Could not load ${what}: ${detail}`,
      h("button", { type: "button", onclick: retry }, "Try again")]);
  }

  /** Open a page of Airflow's own UI: inside Airflow's iframe (no top navigation allowed), through its router. */
  function openAirflowPage(relativePath, event) {
    const target = new URL(relativePath, location.href);
    try {
      if (window.top !== window && window.top.location.origin === location.origin) {
        event.preventDefault();
        window.top.history.pushState({}, "", target.pathname);
        window.top.dispatchEvent(new PopStateEvent("popstate", { state: {} }));
      }
    } catch {
      // not same-origin: let the link open inside the frame
    }
  }
  document.querySelectorAll("a[data-airflow]").forEach((a) => {
    a.addEventListener("click", (event) => openAirflowPage(a.getAttribute("href"), event));
  });

  // ------------------------------------------------------------------ theme (Airflow's dark mode)
  // Airflow's theme does not reach an iframe's media queries; read it from the parent page when we can.
  let parentTheme = null;
  function applyTheme() {
    if (parentTheme) document.documentElement.dataset.theme = parentTheme;
    else delete document.documentElement.dataset.theme;
  }
  function readParentTheme() {
    try {
      if (window.parent === window) return null;
      const root = window.parent.document.documentElement;
      if (root.classList.contains("dark") || root.style.colorScheme === "dark") return "dark";
      if (root.classList.contains("light") || root.style.colorScheme === "light") return "light";
    } catch {
      // another origin: fall back to prefers-color-scheme
    }
    return null;
  }
  parentTheme = readParentTheme();
  applyTheme();
  try {
    if (window.parent !== window) {
      new window.parent.MutationObserver(() => {
        const next = readParentTheme();
        if (next !== parentTheme) {
          parentTheme = next;
          applyTheme();
          redrawCharts();
        }
      }).observe(window.parent.document.documentElement, { attributes: true, attributeFilter: ["class", "style"] });
    }
  } catch {
    // ignore: no access to the parent
  }
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => redrawCharts());
  const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  // ------------------------------------------------------------------ calendar
  let shownMonth = null; // "YYYY-MM"
  let serverToday = null; // "YYYY-MM-DD", the athlete's local date according to the server
  let calendarRequest = 0;

  const monthKey = (d) => isoDate(d).slice(0, 7);
  function moveMonth(key, delta) {
    const [y, m] = key.split("-").map(Number);
    return monthKey(new Date(Date.UTC(y, m - 1 + delta, 1)));
  }
  function monthFromHash() {
    const match = /^#month=(\d{4}-(0[1-9]|1[0-2]))$/.exec(location.hash);
    return match ? match[1] : null;
  }

  function activityChip(a) {
    const km = isNum(a.distance_km) && a.distance_km > 0 ? `${fmtKm(a.distance_km)} km` : null;
    const stats = [];
    if (isNum(a.moving_time_s)) stats.push(fmtHm(a.moving_time_s));
    if (isRun(a.sport_type) && isNum(a.pace_s_per_km) && a.pace_s_per_km > 0) stats.push(`${fmtPace(a.pace_s_per_km)} /km`);
    const climb = isNum(a.elevation_m) && a.elevation_m >= 1 ? `${fmtInt(a.elevation_m)} m up` : null;
    const kcal = isNum(a.kcal_burned) && a.kcal_burned > 0 ? `${fmtInt(a.kcal_burned)} kcal` : null;
    const laps = isNum(a.lap_count) && a.lap_count > 1 ? `${a.lap_count} laps` : null;
    const title = [a.name, sportLabel(a.sport_type), km, ...stats, climb, kcal && `${kcal} burned`, laps]
      .filter(Boolean).join(" · ");
    // a button: the activity's detail and laps open below the calendar
    return h("button", { type: "button", class: "act", style: `--sport: ${sportColour(a.sport_type)}`, title,
      "data-activity": a.id, onclick: () => openActivity(a.id) },
      h("span", { class: "what" }, km ? h("span", { class: "km" }, km) : null, h("span", { class: "sport" }, sportLabel(a.sport_type))),
      stats.length || kcal ? h("span", { class: "stats" }, [...stats, kcal].filter(Boolean).join(" · ")) : null);
  }

  // ------------------------------------------------------------------ one activity: detail and laps
  let activityShown = null;

  async function openActivity(id) {
    activityShown = id;
    const panel = $("activity");
    panel.hidden = false;
    $("activity-title").textContent = "Activity";
    $("activity-body").replaceChildren();
    setState("activity-state", "loading", "Loading…");
    try {
      const data = await getJSON(`api/activity?id=${encodeURIComponent(id)}`);
      if (activityShown !== id) return; // another activity was opened meanwhile
      renderActivity(data);
      setState("activity-state", "", undefined);
      panel.scrollIntoView({ block: "nearest", behavior: "smooth" });
    } catch (error) {
      if (activityShown === id) showError("activity-state", "this activity", error, () => openActivity(id));
    }
  }

  function renderActivity(a) {
    $("activity-title").textContent = a.name || sportLabel(a.sport_type);
    const facts = [
      ["Date", a.day ? `${shortDate(parseDate(a.day))} ${a.day.slice(0, 4)}` : null],
      ["Sport", sportLabel(a.sport_type)],
      ["Distance", isNum(a.distance_km) && a.distance_km > 0 ? `${fmtKm(a.distance_km)} km` : null],
      ["Moving time", isNum(a.moving_time_s) ? fmtHm(a.moving_time_s) : null],
      ["Pace", isRun(a.sport_type) && isNum(a.pace_s_per_km) && a.pace_s_per_km > 0 ? `${fmtPace(a.pace_s_per_km)} /km` : null],
      ["Climb", isNum(a.elevation_m) ? `${fmtInt(a.elevation_m)} m` : null],
      ["Heart rate", isNum(a.average_heartrate) ? `${fmtInt(a.average_heartrate)} bpm` : null],
      ["Burned", isNum(a.kcal_burned) ? `${fmtInt(a.kcal_burned)} kcal` : null],
      ["Device", a.device_name || null],
      ["Gear", a.gear_name || null],
    ].filter(([, value]) => value !== null);
    const run = isRun(a.sport_type);
    const laps = (a.laps || []).map((lap) => h("tr", { "data-lap": lap.lap_index },
      h("td", { class: "num" }, lap.lap_index),
      h("td", { class: "num" }, isNum(lap.distance) ? fmtKm(lap.distance / 1000) : "–"),
      h("td", { class: "num" }, isNum(lap.moving_time) ? fmtMs(lap.moving_time) : "–"),
      h("td", { class: "num" }, isNum(lap.average_speed) && lap.average_speed > 0
        ? (run ? fmtPace(1000 / lap.average_speed) : (lap.average_speed * 3.6).toFixed(1)) : "–"),
      h("td", { class: "num" }, isNum(lap.average_heartrate) ? fmtInt(lap.average_heartrate) : "–"),
      h("td", { class: "num" }, isNum(lap.average_cadence) ? fmtInt(lap.average_cadence) : "–"),
      h("td", { class: "num" }, isNum(lap.average_watts) ? fmtInt(lap.average_watts) : "–")));
    const noLaps = a.kcal_burned === null && a.device_name === null
      ? "No detail read yet: fitness_sync reads it within the next runs (or at once on a webhook event)."
      : "No laps.";
    $("activity-body").replaceChildren(
      h("dl", { class: "facts" }, facts.flatMap(([label, value]) => [h("dt", {}, label), h("dd", {}, value)])),
      a.description ? h("p", { class: "description" }, a.description) : null,
      table([["Lap", "num"], ["km", "num"], ["Time", "num"], [run ? "Pace /km" : "km/h", "num"], ["HR", "num"],
        ["Cadence", "num"], ["Watts", "num"]], laps, noLaps));
  }
  /** seconds -> "m:ss", or "h:mm:ss" from an hour */
  function fmtMs(seconds) {
    const s = Math.round(seconds);
    const mmss = `${Math.floor((s % 3600) / 60)}:${String(s % 60).padStart(2, "0")}`;
    return s >= 3600 ? `${Math.floor(s / 3600)}:${mmss.padStart(5, "0")}` : mmss;
  }

  function totalsCell(week, start, thisWeek) {
    const t = week.totals || {};
    const rows = [];
    const activities = t.activities || 0;
    if (activities > 0) {
      rows.push(h("dt", {}, activities === 1 ? "Activity" : "Activities"), h("dd", { "data-field": "activities" }, activities));
      rows.push(h("dt", {}, "Time"), h("dd", { "data-field": "moving_time_s" }, fmtHm(t.moving_time_s || 0)));
      rows.push(h("dt", {}, "Climb"), h("dd", { "data-field": "elevation_m" }, `${fmtInt(t.elevation_m || 0)} m`));
    }
    if (isNum(t.avg_weight_kg)) {
      rows.push(h("dt", {}, "Weight"), h("dd", { "data-field": "avg_weight_kg", title: "average of the week's weigh-ins" },
        `${fmtKg(t.avg_weight_kg)} kg`));
    }
    if (isNum(t.avg_kcal)) {
      const days = t.logged_days || 0;
      rows.push(h("dt", {}, "Eaten"), h("dd", {
        "data-field": "avg_kcal",
        title: `average per logged day, over ${days} logged day${days === 1 ? "" : "s"}`,
      }, `${fmtInt(t.avg_kcal)} kcal`));
    }
    const headline = activities > 0
      ? h("div", { class: "headline" }, h("span", { "data-field": "distance_km" }, fmtKm(t.distance_km || 0)), h("small", {}, " km"))
      : h("div", { class: "rest" }, h("span", { "data-field": "activities", hidden: true }, "0"), "No activities");
    return h("div", { class: "totals", "data-week": week.week_start },
      h("div", { class: "week-label" }, `W${isoWeek(start)} · ${weekSpan(start)}`, thisWeek ? h("span", { class: "now" }, "this week") : null),
      headline, rows.length ? h("dl", {}, rows) : null);
  }

  function renderCalendar(data) {
    serverToday = data.today || serverToday;
    const today = serverToday || isoDate(localToday());
    const [year, month] = shownMonth.split("-").map(Number);
    $("month-label").textContent = `${MONTHS[month - 1]} ${year}`;
    if (data.empty) showEmpty(null);
    else $("empty").hidden = true;

    const grid = $("calendar-grid");
    const head = h("div", { class: "cal-row cal-head", role: "row" },
      DOW.map((d) => h("div", { role: "columnheader" }, d)), h("div", { role: "columnheader" }, "Week"));
    const rows = [head];
    const sports = new Map();
    for (const week of data.weeks || []) {
      const start = parseDate(week.week_start);
      const thisWeek = today >= week.week_start && today <= isoDate(addDays(start, 6));
      const cells = (week.days || []).map((day) => {
        const date = parseDate(day.date);
        const acts = (day.activities || []).map((a) => {
          sports.set(a.sport_type, (sports.get(a.sport_type) || 0) + 1);
          return activityChip(a);
        });
        const body = [];
        if (isNum(day.weight_kg)) body.push(h("span", { class: "kg", title: "weight" }, `${fmtKg(day.weight_kg)} kg`));
        if (isNum(day.kcal)) body.push(h("span", { class: "kcal", title: "calories eaten" }, `${fmtInt(day.kcal)} kcal`));
        const classes = ["day"];
        if (date.getUTCMonth() !== month - 1) classes.push("other-month");
        if (day.date === today) classes.push("today");
        if (!acts.length && !body.length) classes.push("blank");
        const label = date.getUTCDate() === 1 ? shortDate(date) : String(date.getUTCDate());
        return h("div", { class: classes.join(" "), "data-date": day.date, role: "gridcell" },
          h("div", { class: "date" }, h("span", {}, h("span", { class: "dow" }, DOW[(date.getUTCDay() + 6) % 7]),
            h("b", {}, label))),
          h("div", { class: "content" }, acts, body.length ? h("div", { class: "body" }, body) : null));
      });
      rows.push(h("div", { class: `cal-row${thisWeek ? " this-week" : ""}`, role: "row", "data-week": week.week_start },
        cells, totalsCell(week, start, thisWeek)));
    }
    grid.setAttribute("role", "grid");
    grid.replaceChildren(...rows);
    renderLegend(sports);
  }

  function renderLegend(sports) {
    const entries = [...sports.keys()].sort((a, b) => sports.get(b) - sports.get(a));
    $("legend").replaceChildren(...entries.map((s) => h("span", { style: `--sport: ${sportColour(s)}` }, sportLabel(s))));
  }

  /** The weeks of a month with nothing in them (what the server would send for an empty database). */
  function blankMonth(key) {
    const [y, m] = key.split("-").map(Number);
    const end = new Date(Date.UTC(y, m, 1));
    const weeks = [];
    for (let w = mondayOf(new Date(Date.UTC(y, m - 1, 1))); w < end; w = addDays(w, 7)) {
      weeks.push({ week_start: isoDate(w), totals: { activities: 0 },
        days: [0, 1, 2, 3, 4, 5, 6].map((i) => ({ date: isoDate(addDays(w, i)), activities: [], weight_kg: null, kcal: null })) });
    }
    return { today: isoDate(localToday()), empty: true, weeks };
  }

  async function loadCalendar() {
    const request = ++calendarRequest;
    const [year, month] = shownMonth.split("-").map(Number);
    $("month-label").textContent = `${MONTHS[month - 1]} ${year}`;
    document.body.dataset.calendar = "loading";
    const grid = $("calendar-grid");
    if (grid.childElementCount) grid.classList.add("busy"); // keep the old month until the new one is here
    else setState("calendar-state", "loading", "Loading…");
    try {
      const data = await getJSON(`api/calendar?month=${encodeURIComponent(shownMonth)}&today=${isoDate(localToday())}`);
      if (request !== calendarRequest) return; // a newer month was asked for meanwhile
      renderCalendar(data);
      grid.classList.remove("busy");
      setState("calendar-state", "", undefined);
      document.body.dataset.calendar = "ready";
    } catch (error) {
      if (request !== calendarRequest) return;
      grid.classList.remove("busy");
      if (notSetUp(error)) {
        renderCalendar(blankMonth(shownMonth));
        showError("calendar-state", "the calendar", error, loadCalendar);
        document.body.dataset.calendar = "empty";
        return;
      }
      $("calendar-grid").replaceChildren();
      showError("calendar-state", "the calendar", error, loadCalendar);
      document.body.dataset.calendar = "error";
    }
  }

  function showMonth(key) {
    shownMonth = key;
    const hash = `#month=${key}`;
    if (location.hash !== hash) history.replaceState(null, "", hash);
    loadCalendar();
  }

  document.querySelectorAll(".month-nav button").forEach((button) => {
    button.addEventListener("click", () => {
      const delta = Number(button.dataset.move);
      showMonth(delta === 0 ? (serverToday || isoDate(localToday())).slice(0, 7) : moveMonth(shownMonth, delta));
    });
  });
  window.addEventListener("hashchange", () => {
    const key = monthFromHash();
    if (key && key !== shownMonth) showMonth(key);
  });

  // ------------------------------------------------------------------ trends
  const charts = {};
  let trendsData = null;

  function chartBase() {
    const text = cssVar("--muted");
    const grid = cssVar("--line");
    Chart.defaults.color = text;
    Chart.defaults.borderColor = grid;
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.font.size = 11;
    return {
      responsive: true, maintainAspectRatio: false, animation: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 10, boxHeight: 10, padding: 8 } } },
    };
  }

  function dateAxis(labels, weekly) {
    return {
      type: "category", grid: { display: false },
      ticks: {
        autoSkip: true, maxTicksLimit: 7, maxRotation: 0,
        callback(value) {
          const d = parseDate(labels[value]);
          return d.getUTCMonth() === 0 && d.getUTCDate() <= (weekly ? 7 : 1) ? String(d.getUTCFullYear()) : shortDate(d);
        },
      },
    };
  }

  function noData(canvasId, message) {
    const box = $(canvasId).parentElement;
    box.querySelector(".no-data")?.remove();
    box.classList.toggle("empty", Boolean(message));
    if (message) box.append(h("div", { class: "no-data" }, message));
  }

  function draw(canvasId, config) {
    charts[canvasId]?.destroy();
    charts[canvasId] = new Chart($(canvasId), config);
  }

  function renderTrends(data) {
    trendsData = data;
    const weeks = Number($("trend-weeks").value);
    const asOf = parseDate((data.ytd && data.ytd.as_of) || serverToday || isoDate(localToday()));
    const lastMonday = data.last_week ? parseDate(data.last_week) : mondayOf(asOf);
    // from the first week with any data (a new athlete's charts do not start with months of nothing),
    // but at least 8 weeks
    const firstData = [...(data.weekly_by_sport || []).map((r) => r.week_start), ...(data.weight || []).map((r) => r.date),
      ...(data.kcal || []).map((r) => r.date)].map((d) => isoDate(mondayOf(parseDate(d)))).sort()[0];
    let shownWeeks = weeks;
    if (firstData) {
      const since = Math.round((lastMonday - parseDate(firstData)) / (7 * 86400000)) + 1;
      shownWeeks = Math.min(weeks, Math.max(8, since));
    }
    const weekLabels = [];
    for (let i = shownWeeks - 1; i >= 0; i--) weekLabels.push(isoDate(addDays(lastMonday, -7 * i)));
    const first = parseDate(weekLabels[0]);
    const span = (d) => `${shortDate(d)}${d.getUTCFullYear() === asOf.getUTCFullYear() ? "" : ` ${d.getUTCFullYear()}`}`;
    $("trend-range").textContent = `${span(first)} – ${shortDate(asOf)}${shownWeeks < weeks ? " (from the first data)" : ""}`;
    const dayLabels = [];
    for (let d = first; d <= asOf; d = addDays(d, 1)) dayLabels.push(isoDate(d));
    const base = chartBase();
    const weekTitle = (items) => `Week of ${shortDate(parseDate(weekLabels[items[0].dataIndex]))}`;
    const dayTitle = (items) => parseDate(dayLabels[items[0].dataIndex])
      .toLocaleDateString("en-US", { weekday: "short", month: "short", day: "numeric", year: "numeric", timeZone: "UTC" });

    // weekly distance and moving time, stacked by sport type
    const bySport = new Map();
    const sportTotals = new Map();
    for (const row of data.weekly_by_sport || []) {
      const i = weekLabels.indexOf(row.week_start.slice(0, 10));
      if (i < 0) continue;
      if (!bySport.has(row.sport_type)) {
        bySport.set(row.sport_type, { km: Array(shownWeeks).fill(0), hours: Array(shownWeeks).fill(0) });
      }
      const s = bySport.get(row.sport_type);
      s.km[i] += row.distance_km || 0;
      s.hours[i] += (row.moving_time_s || 0) / 3600;
      sportTotals.set(row.sport_type, (sportTotals.get(row.sport_type) || 0) + (row.moving_time_s || 0));
    }
    const sports = [...bySport.keys()].sort((a, b) => sportTotals.get(b) - sportTotals.get(a));
    const stacked = (key, fmt) => ({
      type: "bar",
      data: {
        labels: weekLabels,
        datasets: sports.map((s) => ({
          label: sportLabel(s), data: bySport.get(s)[key], backgroundColor: sportColour(s), borderWidth: 0,
          borderRadius: 2, barPercentage: 0.9, categoryPercentage: 0.9,
        })),
      },
      options: {
        ...base,
        scales: { x: { ...dateAxis(weekLabels, true), stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
        plugins: {
          ...base.plugins,
          tooltip: {
            filter: (item) => item.raw > 0,
            callbacks: { title: weekTitle, label: (item) => `${item.dataset.label}: ${fmt(item.raw)}` },
          },
        },
      },
    });
    draw("chart-distance", stacked("km", (km) => `${fmtKm(km)} km`));
    draw("chart-time", stacked("hours", (hours) => `${fmtHm(hours * 3600)} h:mm`));
    noData("chart-distance", sports.length ? null : "No activities in these weeks");
    noData("chart-time", sports.length ? null : "No activities in these weeks");

    // weight and its 7-day rolling average
    const weight = Array(dayLabels.length).fill(null);
    const avg7 = Array(dayLabels.length).fill(null);
    for (const row of data.weight || []) {
      const i = dayLabels.indexOf(row.date.slice(0, 10));
      if (i < 0) continue;
      weight[i] = row.weight_kg;
      avg7[i] = row.avg7_kg;
    }
    const accent = cssVar("--accent");
    draw("chart-weight", {
      type: "line",
      data: {
        labels: dayLabels,
        datasets: [
          { label: "Weigh-in", data: weight, showLine: false, pointRadius: 2, pointHoverRadius: 4,
            pointBackgroundColor: cssVar("--muted"), borderColor: cssVar("--muted") },
          { label: "7-day average", data: avg7, spanGaps: true, borderColor: accent, backgroundColor: accent,
            borderWidth: 2.5, pointRadius: 0, tension: 0.25 },
        ],
      },
      options: {
        ...base,
        scales: { x: dateAxis(dayLabels, false), y: { grace: "10%", ticks: { callback: (v) => `${v} kg` } } },
        plugins: {
          ...base.plugins,
          tooltip: { filter: (item) => item.raw !== null, callbacks: { title: dayTitle, label: (item) => `${item.dataset.label}: ${fmtKg(item.raw)} kg` } },
        },
      },
    });
    noData("chart-weight", weight.some((v) => v !== null) ? null : "No weigh-ins in these weeks");

    // kcal eaten per logged day, and the week's average drawn across its week
    const kcal = Array(dayLabels.length).fill(null);
    const weekAvg = new Map();
    for (const row of data.kcal || []) {
      const date = row.date.slice(0, 10);
      const i = dayLabels.indexOf(date);
      if (i < 0) continue;
      kcal[i] = row.kcal;
      if (isNum(row.week_avg_kcal)) weekAvg.set(isoDate(mondayOf(parseDate(date))), row.week_avg_kcal);
    }
    const kcalAvg = dayLabels.map((d) => weekAvg.get(isoDate(mondayOf(parseDate(d)))) ?? null);
    const warm = "#e08a2e";
    draw("chart-kcal", {
      type: "bar",
      data: {
        labels: dayLabels,
        datasets: [
          { type: "line", label: "Week's average", data: kcalAvg, borderColor: accent, backgroundColor: accent,
            borderWidth: 2, pointRadius: 0, stepped: "middle", order: 0 },
          { label: "kcal eaten", data: kcal, backgroundColor: warm, borderWidth: 0, barPercentage: 1, categoryPercentage: 0.85, order: 1 },
        ],
      },
      options: {
        ...base,
        scales: { x: dateAxis(dayLabels, false), y: { beginAtZero: true, ticks: { callback: (v) => fmtInt(v) } } },
        plugins: {
          ...base.plugins,
          tooltip: { filter: (item) => item.raw !== null, callbacks: { title: dayTitle, label: (item) => `${item.dataset.label}: ${fmtInt(item.raw)} kcal` } },
        },
      },
    });
    noData("chart-kcal", kcal.some((v) => v !== null) ? null : "No nutrition logs in these weeks");

    renderYtd(data.ytd);
  }

  function renderYtd(ytd) {
    const box = $("ytd");
    if (!ytd || !ytd.this_year) {
      box.replaceChildren();
      return;
    }
    const asOf = parseDate(ytd.as_of);
    const year = asOf.getUTCFullYear();
    const now = ytd.this_year;
    const then = ytd.last_year || {};
    const metrics = [
      ["Activities", "activities", (v) => fmtInt(v)],
      ["Distance", "distance_km", (v) => `${fmtInt(v)} km`],
      ["Moving time", "moving_time_s", (v) => `${fmtInt(v / 3600)} h`],
      ["Elevation gain", "elevation_m", (v) => `${fmtInt(v)} m`],
    ];
    const items = metrics.map(([label, key, fmt]) => {
      const a = now[key] || 0;
      const b = then[key] || 0;
      const top = Math.max(a, b) || 1;
      let delta = null;
      if (b > 0) {
        const pct = Math.round(((a - b) / b) * 100);
        delta = h("span", { class: `delta ${pct >= 0 ? "up" : "down"}` }, `${pct >= 0 ? "+" : "−"}${Math.abs(pct)} %`);
      }
      return h("div", { class: "ytd-item", "data-ytd": key },
        h("div", { class: "label" }, label),
        h("div", {}, h("span", { class: "value" }, fmt(a)), delta),
        h("div", { class: "bar-pair", title: `${year}: ${fmt(a)} · ${year - 1}: ${fmt(b)}` },
          h("div", { class: "bar", style: `width: ${(100 * a) / top}%` }),
          h("div", { class: "bar last", style: `width: ${(100 * b) / top}%` })),
        h("div", { class: "muted", style: "font-size: 12px" }, `${year - 1}: ${fmt(b)}`));
    });
    box.replaceChildren(
      h("h3", {}, `Year to date: Jan 1 – ${shortDate(asOf)}, ${year}, against the same days of ${year - 1}`),
      h("div", { class: "ytd-grid" }, items),
      h("div", { class: "bar-key" }, h("i"), String(year), h("i", { class: "last" }), String(year - 1)));
  }

  function redrawCharts() {
    if (trendsData && window.Chart) renderTrends(trendsData);
  }

  async function loadTrends() {
    document.body.dataset.trends = "loading";
    setState("trends-state", "loading", "Loading…");
    try {
      if (!window.Chart) throw new Error("Chart.js did not load");
      const weeks = encodeURIComponent($("trend-weeks").value);
      const data = await getJSON(`api/trends?weeks=${weeks}&today=${isoDate(localToday())}`);
      renderTrends(data);
      setState("trends-state", "", undefined);
      document.body.dataset.trends = "ready";
    } catch (error) {
      showError("trends-state", "the trends", error, loadTrends);
      document.body.dataset.trends = notSetUp(error) ? "empty" : "error";
    }
  }
  $("trend-weeks").addEventListener("change", loadTrends);

  // ------------------------------------------------------------------ sync health
  const SOURCE_NAMES = {
    strava_activity: "Strava activities", fitbit_weight: "Fitbit weight", fitbit_calories: "Fitbit calories eaten",
  };
  const sourceName = (id) => SOURCE_NAMES[id] || id;
  const count = (v) => (isNum(v) ? fmtInt(v) : "–");
  const when = (iso) => (iso ? h("span", { title: absolute(iso) }, relative(iso)) : h("span", { class: "none" }, "never"));

  function table(headers, rows, empty) {
    if (!rows.length) return h("p", { class: "none" }, empty);
    return h("div", { class: "table-scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, headers.map(([label, cls]) => h("th", { class: cls }, label)))),
      h("tbody", {}, rows)));
  }

  function usage(used, limit) {
    if (!isNum(used) || !isNum(limit) || limit <= 0) return h("span", { class: "none" }, isNum(used) ? fmtInt(used) : "–");
    const share = used / limit;
    return h("span", {}, `${fmtInt(used)} / ${fmtInt(limit)}`,
      h("span", { class: `usage${share >= 1 ? " full" : share >= 0.8 ? " high" : ""}`, title: `${Math.round(share * 100)} %` },
        h("i", { style: `width: ${Math.min(100, share * 100)}%` })));
  }

  function renderSync(data) {
    const person = data.athlete || {};
    const inactive = person.active === false ? h("p", { class: "notice inactive", role: "alert" },
      h("strong", {}, `${person.name} is not synced: `), person.inactive_reason || "disabled.") : null;
    const sources = (data.sources || []).map((s) => {
      const age = s.last_finished_at ? (Date.now() - Date.parse(s.last_finished_at)) / 3600000 : Infinity;
      const health = age <= 2 ? "ok" : age <= 26 ? "warn" : "bad";
      return h("tr", { "data-source": s.source },
        h("td", {}, h("span", { class: `dot ${health}` }), sourceName(s.source)),
        h("td", {}, when(s.last_finished_at)),
        ["extracted", "inserted", "updated", "unchanged", "deleted", "quarantined"].map((k) => h("td", { class: "n" }, count(s[k]))),
        h("td", { class: "n" }, count(s.runs_last_24h)),
        h("td", { class: "n" }, s.quarantined_now ? h("span", { class: "soon" }, count(s.quarantined_now)) : count(s.quarantined_now)));
    });
    const quarantine = (data.quarantine || []).map((q) => h("tr", {},
      h("td", {}, sourceName(q.source)), h("td", {}, q.record_key), h("td", { class: "reason" }, q.reason),
      h("td", {}, when(q.first_seen)), h("td", {}, when(q.last_seen)), h("td", { class: "n" }, count(q.times_seen))));
    const tokens = (data.tokens || []).map((t) => {
      const expires = t.expires_at ? Date.parse(t.expires_at) - Date.now() : null;
      const cls = expires === null ? "" : expires <= 0 ? "expired" : expires < 15 * 60000 ? "soon" : "";
      return h("tr", {},
        h("td", {}, t.conn_id || t.token_key), h("td", {}, t.conn_type || "–"),
        h("td", {}, when(t.refreshed_at)),
        h("td", { class: cls }, t.expires_at ? h("span", { title: absolute(t.expires_at) },
          expires <= 0 ? `expired ${relative(t.expires_at)}` : relative(t.expires_at)) : h("span", { class: "none" }, "–")));
    });
    const limits = (data.rate_limits || []).map((r) => h("tr", {},
      h("td", {}, r.api), h("td", {}, r.bucket), h("td", {}, usage(r.window_usage, r.window_limit)),
      h("td", {}, usage(r.daily_usage, r.daily_limit)), h("td", {}, when(r.seen_at))));

    $("sync-body").replaceChildren(...[inactive].filter(Boolean), h("div", { class: "sync-grid" },
      h("div", {}, h("h3", {}, "Sources: the last successful sync and what it did"),
        table([["Source"], ["Last sync"], ["Fetched", "n"], ["Inserted", "n"], ["Updated", "n"], ["Unchanged", "n"],
          ["Deleted", "n"], ["Quarantined", "n"], ["Runs in 24 h", "n"], ["In quarantine", "n"]], sources,
        "No sync has finished yet.")),
      h("div", {}, h("h3", {}, "Quarantine: records that could not load"),
        table([["Source"], ["Record"], ["Reason"], ["First seen"], ["Last seen"], ["Times", "n"]], quarantine,
          "Nothing in quarantine.")),
      h("div", {}, h("h3", {}, "OAuth tokens"),
        table([["Connection"], ["Type"], ["Refreshed"], ["Access token expires"]], tokens, "No token stored yet."),
        tokens.length ? h("p", { class: "hint" },
          "An expired access token is refreshed at the next run. If a refresh is refused, that run fails with a message saying to authorize again.") : null),
      h("div", {}, h("h3", {}, "API rate limits, last seen"),
        table([["API"], ["Limit"], ["Window"], ["Day"], ["Seen"]], limits, "No rate-limit headers seen yet."))));
  }

  async function loadSync() {
    document.body.dataset.sync = "loading";
    setState("sync-state", "loading", "Loading…");
    try {
      renderSync(await getJSON("api/sync"));
      setState("sync-state", "", undefined);
      document.body.dataset.sync = "ready";
    } catch (error) {
      $("sync-body").replaceChildren();
      showError("sync-state", "the sync health", error, loadSync);
      document.body.dataset.sync = notSetUp(error) ? "empty" : "error";
    }
  }
  $("sync-reload").addEventListener("click", loadSync);
  $("activity-close").addEventListener("click", () => {
    activityShown = null;
    $("activity").hidden = true;
  });

  // ------------------------------------------------------------------ athletes
  /** A picker when the Airflow user may see several athletes; one athlete (the usual case): no picker. */
  async function loadAthletes() {
    try {
      const { athletes } = await getJSON("api/athletes");
      if (athletes.length > 1) {
        const select = $("athlete");
        select.replaceChildren(...athletes.map((a) => h("option", { value: String(a.id) }, a.name)));
        athleteId = String(athletes[0].id);
        select.value = athleteId;
        select.addEventListener("change", () => {
          athleteId = select.value;
          activityShown = null;
          $("activity").hidden = true;
          loadCalendar();
          loadTrends();
          loadSync();
        });
        $("athlete-pick").hidden = false;
      }
    } catch {
      // each part says what went wrong when it loads
    }
  }

  // ------------------------------------------------------------------ start
  shownMonth = monthFromHash() || monthKey(localToday());
  history.replaceState(null, "", `#month=${shownMonth}`);
  loadAthletes().then(() => {
    loadCalendar();
    loadTrends();
    loadSync();
  });
})();
