// Videos in the gallery: a video hit's tile shows its moment's frame with the time, and the large
// view plays the video from that moment. app.js calls these hooks; photos are left as they are.
(function () {
  "use strict";

  function clock(seconds) {
    const whole = Math.floor(seconds);
    const h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), s = whole % 60;
    const two = (n) => String(n).padStart(2, "0");
    return h ? h + ":" + two(m) + ":" + two(s) : m + ":" + two(s);
  }

  function decorateTile(el, hit) {
    if (hit.kind !== "video") return;
    el.classList.add("video");
    const badge = document.createElement("span");
    badge.className = "moment";
    badge.textContent = "▶ " + clock(hit.time || 0);
    el.appendChild(badge);
    el.title += " @ " + clock(hit.time || 0);
  }

  function player() {
    let video = document.getElementById("big-video");
    if (!video) {
      video = document.createElement("video");
      video.id = "big-video";
      video.controls = true;
      video.preload = "metadata";
      document.getElementById("big").after(video);
    }
    return video;
  }

  function show(hit) {
    const big = document.getElementById("big");
    if (hit.kind !== "video") {
      hide();
      big.hidden = false;
      return;
    }
    big.removeAttribute("src");
    big.hidden = true;
    const video = player();
    video.hidden = false;
    video.src = "/api/items/" + encodeURIComponent(hit.id) + "/file#t=" + (hit.time || 0);
    document.getElementById("v-open").textContent = "Open the video";
  }

  function hide() {
    const video = document.getElementById("big-video");
    if (video) {
      video.pause();
      video.removeAttribute("src");
      video.load();
      video.hidden = true;
    }
    document.getElementById("big").hidden = false;
    const open = document.getElementById("v-open");
    if (open) open.textContent = "Open the photo";
  }

  window.xmodalVideo = { decorateTile: decorateTile, show: show, hide: hide, clock: clock };
})();
