// What the one-box planner read in a text query, as chips above the results (issue 27): the
// description (with the English a Chinese one is read as), the place, the dates, the words in the
// photo and in names, and the words not understood or a note on a language not understood yet. Removing a chip searches
// again with that part not read (its words then count as description); each hit shows which parts it
// matched. Loaded before app.js, which calls the hooks on window.xmodalUnderstanding.
"use strict";

(() => {
  const LABELS = { visual: "looks like", place: "in", date: "taken", text_in_photo: "text in photo", name: "named" };
  const state = { q: null, ignore: [], rerun: null };

  function chip(kind, text, removable) {
    const el = document.createElement("span");
    el.className = "chip chip-" + kind;
    el.dataset.part = kind;
    const label = document.createElement("span");
    label.className = "chip-label";
    label.textContent = LABELS[kind] + " ";
    const value = document.createElement("span");
    value.textContent = text;
    el.append(label, value);
    if (removable) {
      const x = document.createElement("button");
      x.type = "button";
      x.className = "chip-remove";
      x.textContent = "×";
      x.setAttribute("aria-label", "Do not read " + LABELS[kind] + " " + text);
      x.addEventListener("click", () => {
        state.ignore.push(kind);
        if (state.rerun) state.rerun();
      });
      el.append(x);
    }
    return el;
  }

  function bar() {
    let el = document.getElementById("understood");
    if (!el) {
      el = document.createElement("div");
      el.id = "understood";
      el.setAttribute("aria-label", "What the query was read as");
      const status = document.getElementById("status");
      status.parentNode.insertBefore(el, status.nextSibling);
    }
    return el;
  }

  window.xmodalUnderstanding = {
    // app.js: the search to run again when a chip is removed
    onChange(rerun) { state.rerun = rerun; },
    // app.js, before a text search: the parts the user removed for this query
    params(params, q) {
      if (q !== state.q) { state.q = q; state.ignore = []; }
      for (const part of state.ignore) params.append("ignore", part);
    },
    // app.js, on a first page: the chips (none for a query read as a plain description)
    show(understood) {
      const el = bar();
      el.replaceChildren();
      if (!understood) return;
      const parts = understood.parts || [];
      const readAs = understood.read_as || [];
      const guessed = understood.guessed || [];
      const read = readAs.length || guessed.length || understood.note || understood.not_understood.length;
      if (parts.length <= 1 && understood.visual === understood.query && !read) return;
      if (understood.visual) {
        const english = readAs.length === 1 && readAs[0].text === understood.visual
          ? " (" + readAs[0].english + ")"
          : readAs.map((r) => " (" + r.text + ": " + r.english + ")").join("");
        el.append(chip("visual", understood.visual + english, false));
      }
      if (understood.place) el.append(chip("place", understood.place, true));
      if (understood.dates) {
        const d = understood.dates;
        el.append(chip("date", d.start === d.end ? d.start : d.start + " … " + d.end, true));
      }
      if (understood.in_photo.length) el.append(chip("text_in_photo", understood.in_photo.map((w) => "“" + w + "”").join(" "), true));
      if (understood.names.length) el.append(chip("name", understood.names.join(" "), true));
      if (understood.not_understood.length) {
        const note = document.createElement("span");
        note.className = "chip-note";
        note.textContent = "not understood: " + understood.not_understood.join(", ");
        el.append(note);
      }
      if (guessed.length) {
        const note = document.createElement("span");
        note.className = "chip-note";
        note.textContent = "not in the dictionary, read by their characters: " + guessed.join(", ");
        el.append(note);
      }
      if (understood.note) {
        const note = document.createElement("span");
        note.className = "chip-note";
        note.textContent = "note: " + understood.note;
        el.append(note);
      }
    },
    // app.js, for each hit: the parts it matched, beyond the description
    decorate(el, hit) {
      const parts = (hit.matched || []).filter((p) => p !== "visual");
      if (!parts.length) return;
      const badge = document.createElement("span");
      badge.className = "matched";
      badge.textContent = parts.map((p) => p.replace(/_/g, " ")).join(" · ");
      el.append(badge);
      el.title += " · matched " + (hit.matched || []).join(", ");
    },
  };
})();
