// xmodal gallery. Plain JavaScript, no build step, no CDN. Every path and caption is put into the
// page as text (textContent / setAttribute), never as markup.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const PAGE = 60;
  const FILTERS = ["target", "in_photo", "under", "after", "before", "place", "ext", "min_size", "min_score", "diverse", "collapse"];
  const browse = window.xmodalBrowse; // browse.js: the library by month and place, and a photo's facts
  const understanding = window.xmodalUnderstanding; // understanding.js: what a query was read as, as chips
  const state = { mode: null, q: "", like: null, file: null, cursor: null, loading: false, hits: [], current: -1, token: 0 };

  // --- the URL: a search can be bookmarked and shared -------------------------------------
  function readFilters() {
    const out = new URLSearchParams();
    for (const name of FILTERS) {
      const value = $("f-" + name).value.trim();
      if (!value || (name === "target" && value === "image")) continue;
      if (name === "ext") value.split(/[\s,]+/).filter(Boolean).forEach((e) => out.append("ext", e));
      else out.set(name, value);
    }
    if (!$("f-rerank").checked) out.set("rerank", "false");
    return out;
  }

  function writeFilters(params) {
    for (const name of FILTERS) {
      const el = $("f-" + name);
      if (name === "ext") el.value = params.getAll("ext").join(" ");
      else el.value = params.get(name) || (name === "target" ? "image" : "");
    }
    $("f-rerank").checked = params.get("rerank") !== "false";
    if ([...FILTERS.slice(1), "rerank"].some((n) => params.has(n))) showFilters(true);
  }

  function pageUrl() {
    const params = readFilters();
    if (state.mode === "text" && state.q) params.set("q", state.q);
    if (state.mode === "like") params.set("like", String(state.like));
    const query = params.toString();
    return "/" + (query ? "?" + query : "");
  }

  // --- searching --------------------------------------------------------------------------
  function setStatus(text, isError) {
    const status = $("status");
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  function start(mode, value, push) {
    state.mode = mode;
    state.q = mode === "text" ? value : "";
    state.like = mode === "like" ? value : null;
    state.file = mode === "image" ? value : null;
    state.cursor = null;
    state.hits = [];
    state.token += 1;
    $("results").replaceChildren();
    if (browse) browse.hide();
    if (push !== false) history.pushState(null, "", mode === "image" ? "/" : pageUrl());
    return loadMore(true);
  }

  async function loadMore(first) {
    if (state.loading || (!first && !state.cursor) || !state.mode) return;
    state.loading = true;
    const token = state.token;
    const params = readFilters();
    params.set("limit", String(PAGE));
    if (state.cursor) params.set("cursor", state.cursor);
    let request;
    if (state.mode === "text") {
      if (state.q) params.set("q", state.q); // none: the words in the photos alone (in_photo)
      if (understanding) understanding.params(params, state.q);
      request = fetch("/api/search?" + params, { headers: { Accept: "application/json" } });
    } else if (state.mode === "like") {
      request = fetch("/api/items/" + encodeURIComponent(state.like) + "/similar?" + params);
    } else {
      const form = new FormData();
      form.append("image", state.file, state.file.name || "pasted.png");
      request = fetch("/api/search?" + params, { method: "POST", body: form });
    }
    if (first) setStatus("Searching…");
    try {
      const response = await request;
      if (response.status === 401) { window.location.assign("/login"); return; }
      const body = await response.json();
      if (token !== state.token) return; // a newer search replaced this one
      if (!response.ok) { setStatus(body.detail || "The search failed (" + response.status + ").", true); return; }
      show(body, first);
    } catch (err) {
      if (token === state.token) setStatus("The server did not answer: " + err, true);
    } finally {
      if (token === state.token) state.loading = false;
    }
  }

  function describe() {
    const inPhoto = $("f-in_photo").value.trim();
    if (state.mode === "text" && inPhoto) return (state.q ? "“" + state.q + "” " : "") + "with “" + inPhoto + "” in the photo";
    if (state.mode === "text") return "“" + state.q + "”";
    if (state.mode === "like") return "photos like #" + state.like;
    return "the photo " + (state.file && state.file.name ? state.file.name : "you gave");
  }

  function show(body, first) {
    state.cursor = body.next_cursor;
    if (understanding && first) understanding.show(body.understood);
    const grid = $("results");
    const start = state.hits.length;
    for (const hit of body.hits) {
      state.hits.push(hit);
      grid.appendChild(tile(hit, state.hits.length - 1, !first));
    }
    const n = state.hits.length;
    setStatus(n === 0 ? "No results for " + describe() + "." : n + (state.cursor ? "+" : "") + " results for " + describe());
    if (first && start === 0 && n > 0 && document.activeElement === document.body) grid.firstChild.focus({ preventScroll: true });
    watchSentinel();
  }

  function tile(hit, index, lazy) {
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    let el;
    if (hit.kind === "image" || hit.kind === "video") {
      el = document.createElement("a");
      el.className = "hit";
      el.href = hit.url;
      const img = document.createElement("img");
      img.src = hit.thumbnail;
      img.alt = hit.name;
      if (lazy) img.loading = "lazy";
      const caption = document.createElement("span");
      caption.className = "caption";
      caption.textContent = hit.name;
      el.append(img, score, caption);
    } else {
      el = document.createElement("div");
      el.className = "hit text";
      el.tabIndex = 0;
      const p = document.createElement("p");
      p.textContent = hit.text || hit.path;
      el.append(score, p);
    }
    el.dataset.index = String(index);
    el.dataset.id = String(hit.id);
    el.title = hit.score.toFixed(3) + " · " + hit.path;
    if (window.xmodalVideo) window.xmodalVideo.decorateTile(el, hit);
    if (understanding) understanding.decorate(el, hit);
    return el;
  }

  // --- infinite scroll --------------------------------------------------------------------
  let observer = null;
  function watchSentinel() {
    if (!("IntersectionObserver" in window)) return;
    if (!observer) observer = new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) loadMore(false); }, { rootMargin: "600px" });
    observer.disconnect();
    if (state.cursor) observer.observe($("sentinel"));
  }

  // --- the large view ---------------------------------------------------------------------
  async function open(index) {
    const hit = state.hits[index];
    if (!hit || hit.kind === "text") return;
    state.current = index;
    const viewer = $("viewer");
    $("big").src = "/api/items/" + encodeURIComponent(hit.id) + "/view"; // a JPEG for HEIC/TIFF, else the file
    $("big").alt = hit.name;
    $("v-name").textContent = hit.name;
    $("v-path").textContent = hit.path;
    $("v-open").href = hit.url;
    if (window.xmodalVideo) window.xmodalVideo.show(hit);
    $("v-facts").replaceChildren();
    $("v-texts").replaceChildren();
    viewer.hidden = false;
    $("close").focus();
    window.xmodalPhotoText.show(hit, $("f-in_photo").value.trim());
    try {
      const response = await fetch("/api/items/" + hit.id);
      const item = await response.json();
      if (state.current !== index) return;
      if (!response.ok) { fact("Error", item.detail || String(response.status)); return; }
      fact("Score", hit.score.toFixed(3));
      if (browse) browse.facts(item, fact);
      else fact("Taken", item.taken_at ? item.taken_at.replace("T", " ") : "unknown");
      fact("Modified", item.modified ? item.modified.replace("T", " ").slice(0, 19) : "");
      fact("Size", item.size != null ? (item.size / 1024).toFixed(0) + " KB" : "");
      fact("Pixels", item.width && item.height ? item.width + " × " + item.height : "");
      for (const text of item.texts || []) {
        const li = document.createElement("li");
        li.textContent = text.text + " (" + text.score.toFixed(2) + ")";
        $("v-texts").appendChild(li);
      }
      if (!(item.texts || []).length) {
        const li = document.createElement("li");
        li.textContent = "none indexed";
        $("v-texts").appendChild(li);
      }
    } catch (err) {
      fact("Error", String(err));
    }
  }

  function fact(name, value) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    $("v-facts").append(dt, dd);
  }

  function close() {
    const viewer = $("viewer");
    if (viewer.hidden) return;
    viewer.hidden = true;
    window.xmodalPhotoText.clear();
    $("big").removeAttribute("src");
    if (window.xmodalVideo) window.xmodalVideo.hide();
    const tileEl = $("results").querySelector('[data-index="' + state.current + '"]');
    if (tileEl) tileEl.focus();
  }

  function step(delta) {
    let i = state.current + delta;
    while (state.hits[i] && state.hits[i].kind === "text") i += delta;
    if (state.hits[i]) open(i);
    if (i >= state.hits.length - 3) loadMore(false);
  }

  // --- keyboard ---------------------------------------------------------------------------
  function columns() {
    const tiles = $("results").children;
    if (tiles.length < 2) return 1;
    const top = tiles[0].offsetTop;
    let n = 0;
    while (n < tiles.length && tiles[n].offsetTop === top) n += 1;
    return Math.max(1, n);
  }

  function onKey(event) {
    const viewerOpen = !$("viewer").hidden;
    if (viewerOpen) {
      if (event.key === "Escape") { close(); event.preventDefault(); }
      else if (event.key === "ArrowRight") { step(1); event.preventDefault(); }
      else if (event.key === "ArrowLeft") { step(-1); event.preventDefault(); }
      return;
    }
    const active = document.activeElement;
    const inGrid = active && active.parentElement === $("results") && active.dataset.index !== undefined;
    if (event.key === "/" && !inGrid && active !== $("q") && !(active instanceof HTMLInputElement)) {
      $("q").focus();
      event.preventDefault();
      return;
    }
    if (!inGrid) {
      if (event.key === "ArrowDown" && active === $("q") && $("results").firstChild) {
        $("results").firstChild.focus();
        event.preventDefault();
      }
      return;
    }
    const index = Number(active.dataset.index);
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns() };
    if (event.key in moves) {
      const target = $("results").querySelector('[data-index="' + (index + moves[event.key]) + '"]');
      if (target) target.focus();
      else if (event.key === "ArrowUp") $("q").focus();
      if (index + moves[event.key] >= state.hits.length - columns()) loadMore(false);
      event.preventDefault();
    } else if (event.key === "Enter") {
      open(index);
      event.preventDefault();
    } else if (event.key === "Escape") {
      $("q").focus();
    }
  }

  // --- pictures: pick, drop, paste --------------------------------------------------------
  function searchByFile(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) { setStatus("That is not an image: " + file.name, true); return; }
    $("q").value = "";
    start("image", file);
  }

  function showFilters(show) {
    $("filters").hidden = !show;
    $("toggle-filters").setAttribute("aria-expanded", String(show));
  }

  function fromUrl(initial) {
    const params = new URLSearchParams(window.location.search);
    if (browse) browse.hide();
    writeFilters(params);
    const q = params.get("q");
    const like = params.get("like");
    $("q").value = q || "";
    if (initial && (initial.hits || initial.error)) {
      state.mode = q || !like ? "text" : "like";
      state.q = q || "";
      state.like = like;
      state.hits = [];
      state.token += 1;
      $("results").replaceChildren();
      if (initial.error) setStatus(initial.error, true);
      else show(initial, true);
    } else if (q || params.get("in_photo")) start("text", q || "", false);
    else if (like) start("like", like, false);
    else {
      state.mode = null; state.hits = []; $("results").replaceChildren(); setStatus("");
      if (browse) browse.show(); // the landing page: the library by month and its places
    }
  }

  function init() {
    let initial = null;
    try { initial = JSON.parse($("initial").textContent || "{}"); } catch (err) { initial = null; }
    fromUrl(initial);
    if (understanding) understanding.onChange(() => start("text", state.q, false));
    $("search").addEventListener("submit", (event) => {
      event.preventDefault();
      const q = $("q").value.trim();
      if (q || $("f-in_photo").value.trim()) start("text", q);
      else if (state.mode === "image" && state.file) start("image", state.file);
    });
    $("toggle-filters").addEventListener("click", () => showFilters($("filters").hidden));
    $("filters").addEventListener("change", () => {
      if (state.mode === "image") start("image", state.file);
      else if (state.mode === "like") start("like", state.like);
      else if ($("q").value.trim() || $("f-in_photo").value.trim()) start("text", $("q").value.trim());
    });
    $("file").addEventListener("change", () => searchByFile($("file").files[0]));
    $("results").addEventListener("click", (event) => {
      const el = event.target.closest(".hit");
      if (!el || event.ctrlKey || event.metaKey || event.shiftKey) return;
      event.preventDefault();
      open(Number(el.dataset.index));
    });
    $("more").addEventListener("click", () => {
      const hit = state.hits[state.current];
      if (!hit) return;
      $("viewer").hidden = true;
      $("q").value = "";
      start("like", hit.id);
    });
    $("close").addEventListener("click", close);
    $("prev").addEventListener("click", () => step(-1));
    $("next").addEventListener("click", () => step(1));
    $("viewer").addEventListener("click", (event) => { if (event.target === $("viewer")) close(); });
    document.addEventListener("keydown", onKey);
    window.addEventListener("popstate", () => fromUrl(null));
    let depth = 0;
    window.addEventListener("dragenter", (event) => { if (event.dataTransfer && [...event.dataTransfer.types].includes("Files")) { depth += 1; $("drop").hidden = false; } });
    window.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) $("drop").hidden = true; });
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => {
      event.preventDefault();
      depth = 0;
      $("drop").hidden = true;
      searchByFile(event.dataTransfer && event.dataTransfer.files[0]);
    });
    window.addEventListener("paste", (event) => {
      const items = event.clipboardData ? [...event.clipboardData.items] : [];
      const picture = items.find((item) => item.kind === "file" && item.type.startsWith("image/"));
      if (picture) { event.preventDefault(); searchByFile(picture.getAsFile()); }
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
