// xmodal gallery: browsing before searching. The landing page shows the library by month (newest
// first, more months loaded as the user scrolls) and the places it holds; picking a month or a place
// fills the search box ("2025-06", "Lisbon": the query planner reads both) and the matching filters,
// then searches. Also the facts of a photo in the large view (when, where, camera). Loaded before
// app.js, which calls window.xmodalBrowse.show/hide/facts. Text goes in as text, never as markup.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const MONTHS_PER_PAGE = 6;
  const PER_MONTH = 12;
  const PLACES_SHOWN = 40;
  const SOURCES = {
    exif: "camera clock (EXIF)",
    exif_digitized: "digitized (EXIF)",
    exif_modified: "last edited (EXIF)",
    video: "video's creation time",
    metadata: "file metadata",
    file: "file's modification time",
  };
  const state = { started: false, cursor: null, loading: false, done: false, observer: null };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  async function getJson(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (response.status === 401) { window.location.assign("/login"); throw new Error("signed out"); }
    const body = await response.json();
    if (!response.ok) throw new Error(body.detail || String(response.status));
    return body;
  }

  // --- picking: fill the box and the filters, then search ------------------------------------
  function nextMonth(month) {
    const [y, m] = month.split("-").map(Number);
    return m === 12 ? String(y + 1).padStart(4, "0") + "-01" : String(y).padStart(4, "0") + "-" + String(m + 1).padStart(2, "0");
  }

  function pick(text, filters) {
    $("q").value = text;
    for (const [name, value] of Object.entries(filters)) {
      const input = $("f-" + name);
      if (input) input.value = value;
    }
    const form = $("search");
    if (form.requestSubmit) form.requestSubmit();
    else form.dispatchEvent(new Event("submit", { cancelable: true }));
  }

  function pickMonth(month) {
    pick(month, { after: month + "-01", before: nextMonth(month) + "-01", place: "" });
  }

  function pickPlace(name) {
    pick(name, { place: name, after: "", before: "" });
  }

  // --- places ----------------------------------------------------------------------------
  function monthName(month) {
    const [y, m] = month.split("-").map(Number);
    const date = new Date(Date.UTC(y, m - 1, 1));
    return date.toLocaleDateString(undefined, { month: "long", year: "numeric", timeZone: "UTC" });
  }

  async function loadPlaces() {
    const nav = $("places");
    try {
      const body = await getJson("/api/places");
      const list = $("place-names");
      if (list) list.replaceChildren(...[...new Set(body.places.map((p) => p.name))].map((name) => { const o = el("option"); o.value = name; return o; }));
      nav.replaceChildren();
      if (!body.places.length) return;
      nav.appendChild(el("h2", "", "Places"));
      // one button per name: a city and its region often share it, and the filter matches both
      const seen = new Set();
      const unique = body.places.filter((p) => !seen.has(p.name.toLowerCase()) && seen.add(p.name.toLowerCase()));
      for (const place of unique.slice(0, PLACES_SHOWN)) {
        const button = el("button", "place", place.name);
        button.type = "button";
        button.dataset.place = place.name;
        button.dataset.level = place.level;
        button.appendChild(el("span", "count", String(place.count)));
        button.title = place.level + (place.within ? " in " + place.within : "") + " · " + place.count + " photo" + (place.count === 1 ? "" : "s");
        button.addEventListener("click", () => pickPlace(place.name));
        nav.appendChild(button);
      }
    } catch (err) {
      nav.replaceChildren(el("p", "error", "Places could not be loaded: " + err.message));
    }
  }

  // --- months ----------------------------------------------------------------------------
  function monthSection(month) {
    const section = el("section", "month");
    section.dataset.month = month.month;
    const heading = el("h2");
    const button = el("button", "month-pick", monthName(month.month));
    button.type = "button";
    button.title = "Search " + month.month;
    button.addEventListener("click", () => pickMonth(month.month));
    heading.append(button, el("span", "count", month.count + " photo" + (month.count === 1 ? "" : "s")));
    const strip = el("div", "strip");
    for (const item of month.items) {
      const link = el("a", "thumb");
      link.href = "/?like=" + encodeURIComponent(item.id);
      link.title = "More like this";
      const img = el("img");
      img.src = item.thumbnail;
      img.alt = "";
      img.loading = "lazy";
      link.appendChild(img);
      strip.appendChild(link);
    }
    if (month.count > month.items.length) {
      const more = el("button", "more-month", "+" + (month.count - month.items.length));
      more.type = "button";
      more.title = "All of " + monthName(month.month);
      more.addEventListener("click", () => pickMonth(month.month));
      strip.appendChild(more);
    }
    section.append(heading, strip);
    return section;
  }

  async function loadMonths() {
    if (state.loading || state.done) return;
    state.loading = true;
    const params = new URLSearchParams({ months: String(MONTHS_PER_PAGE), per_month: String(PER_MONTH) });
    if (state.cursor) params.set("cursor", state.cursor);
    const months = $("months");
    try {
      const body = await getJson("/api/timeline?" + params);
      for (const month of body.months) months.appendChild(monthSection(month));
      state.cursor = body.next_cursor;
      state.done = !body.next_cursor;
      if (!months.children.length) months.appendChild(el("p", "empty", "No photos with a date yet: index a folder of photos to see them here by month."));
    } catch (err) {
      state.done = true;
      months.appendChild(el("p", "error", "The months could not be loaded: " + err.message));
    } finally {
      state.loading = false;
    }
    watch();
  }

  function watch() {
    if (!("IntersectionObserver" in window)) return;
    if (!state.observer) {
      state.observer = new IntersectionObserver((entries) => {
        if (entries.some((e) => e.isIntersecting) && !$("browse").hidden) loadMonths();
      }, { rootMargin: "600px" });
    }
    state.observer.disconnect();
    if (!state.done) state.observer.observe($("months-more"));
  }

  // --- a photo's facts in the large view -------------------------------------------------
  function offsetText(minutes) {
    const sign = minutes < 0 ? "−" : "+";
    const abs = Math.abs(minutes);
    return "UTC" + sign + String(Math.floor(abs / 60)).padStart(2, "0") + ":" + String(abs % 60).padStart(2, "0");
  }

  function facts(item, fact) {
    const f = item.facts;
    if (!f) {
      fact("Taken", item.taken_at ? item.taken_at.replace("T", " ") : "unknown");
      return;
    }
    if (f.taken_at) {
      let when = f.taken_at.replace("T", " ").slice(0, 19);
      if (f.taken_offset !== null && f.taken_offset !== undefined) when += " " + offsetText(f.taken_offset);
      fact("Taken", when + " · " + (SOURCES[f.taken_source] || f.taken_source));
    } else fact("Taken", "unknown");
    const names = [];
    for (const name of [f.city, f.region, f.country]) if (name && !names.includes(name)) names.push(name);
    if (names.length) fact("Place", names.join(", "));
    if (f.latitude !== null && f.latitude !== undefined) fact("GPS", f.latitude.toFixed(5) + ", " + f.longitude.toFixed(5));
    if (f.camera) fact("Camera", f.camera);
  }

  window.xmodalBrowse = {
    show() {
      $("browse").hidden = false;
      if (!state.started) {
        state.started = true;
        loadPlaces();
        loadMonths();
      } else watch();
    },
    hide() {
      $("browse").hidden = true;
    },
    facts,
  };
})();
