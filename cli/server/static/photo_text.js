// xmodal gallery: the text read in a photo, in the large view. The lines are listed beside the
// photo, and their boxes are drawn on it; the lines holding a word of "Text in photo" (in_photo)
// are highlighted. A video shows the text of the frame at the hit's moment. Plain JavaScript; every text is put into the page with textContent.
"use strict";

window.xmodalPhotoText = (() => {
  const $ = (id) => document.getElementById(id);
  let current = 0; // the photo shown; an older answer is dropped
  let lines = [];

  function clear() {
    current += 1;
    lines = [];
    const list = $("v-photo-text");
    if (list) list.replaceChildren();
    const layer = $("v-boxes");
    if (layer) layer.replaceChildren();
    const section = $("v-photo-text-section");
    if (section) section.hidden = true;
  }

  function place() {
    // the layer covers the picture exactly as it is drawn (it is centred and scaled to fit)
    const img = $("big");
    const layer = $("v-boxes");
    if (!img || !layer) return;
    const picture = img.getBoundingClientRect();
    const frame = layer.parentElement.getBoundingClientRect();
    layer.style.left = picture.left - frame.left + layer.parentElement.scrollLeft + "px";
    layer.style.top = picture.top - frame.top + layer.parentElement.scrollTop + "px";
    layer.style.width = picture.width + "px";
    layer.style.height = picture.height + "px";
    layer.replaceChildren();
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 1 1");
    svg.setAttribute("preserveAspectRatio", "none");
    for (const line of lines) {
      const polygon = document.createElementNS("http://www.w3.org/2000/svg", "polygon");
      polygon.setAttribute("points", line.box.map((p) => p[0] + "," + p[1]).join(" "));
      polygon.setAttribute("class", line.match ? "box match" : "box");
      polygon.setAttribute("vector-effect", "non-scaling-stroke");
      const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
      title.textContent = line.text;
      polygon.appendChild(title);
      svg.appendChild(polygon);
    }
    layer.appendChild(svg);
  }

  async function show(hit, inPhoto) {
    clear();
    const mine = current;
    const params = new URLSearchParams();
    if (inPhoto) params.set("in_photo", inPhoto);
    try {
      const response = await fetch("/api/items/" + encodeURIComponent(hit.id) + "/text?" + params);
      if (!response.ok || mine !== current) return;
      const body = await response.json();
      if (mine !== current) return;
      const list = $("v-photo-text");
      let readings = body.readings;
      if (readings.some((r) => r.frame_time !== null && r.frame_time !== undefined)) {
        // a video: the reading of the frame shown (the hit's moment), whose boxes fit the picture
        const moment = typeof hit.time === "number" ? hit.time : 0;
        const gap = (r) => Math.abs((r.frame_time ?? 0) - moment);
        readings = [readings.reduce((best, r) => (gap(r) < gap(best) ? r : best))];
      }
      for (const reading of readings) {
        if (reading.status === "failed" && !reading.lines.length) {
          const li = document.createElement("li");
          li.textContent = "not read: " + (reading.reason || "unknown reason");
          list.appendChild(li);
        }
        for (const line of reading.lines) {
          lines.push(line);
          const li = document.createElement("li");
          li.textContent = line.text;
          li.title = "confidence " + line.score.toFixed(2);
          if (line.match) li.className = "match";
          list.appendChild(li);
        }
      }
      if (!list.childElementCount) {
        const li = document.createElement("li");
        li.textContent = body.readings.length ? "no text" : "not read yet";
        list.appendChild(li);
      }
      $("v-photo-text-section").hidden = false;
      const img = $("big");
      place();
      img.addEventListener("load", () => { if (mine === current) place(); }, { once: true });
    } catch (err) {
      // the photo stays shown without its text
    }
  }

  // the picture moves when the panel beside it grows (this list, the facts) or the window changes
  window.addEventListener("resize", () => { if (lines.length) place(); });
  if (window.ResizeObserver) {
    const watch = () => {
      const img = $("big");
      if (img) new ResizeObserver(() => { if (lines.length) place(); }).observe(img.parentElement);
    };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", watch);
    else watch();
  }
  return { show, clear };
})();
