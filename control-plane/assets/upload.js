// Haul console: resumable browser uploads into a draft package (web/upload.rs, tus 1.0 style).
// Each file is created with POST /api/v1/packages/{id}/uploads, then sent in chunks with
// PATCH at the server's offset, each with its SHA-256 (Upload-Checksum). After a network error
// it waits, asks HEAD for the offset and goes on; an upload started before a reload is resumed
// from localStorage. Loaded from /assets (the CSP forbids inline script).
(function () {
  "use strict";
  var CHUNK = 4 * 1024 * 1024;
  var MAX_RETRIES = 30;
  var form = document.getElementById("upload-form");
  if (!form) { return; }
  var input = document.getElementById("upload-files");
  var bar = document.getElementById("upload-progress");
  var status = document.getElementById("upload-status");
  var csrf = form.dataset.csrf;
  var pkg = form.dataset.package;

  function say(text) { status.textContent = text; }
  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }
  function key(f) { return "haul-upload:" + pkg + ":" + f.name + ":" + f.size + ":" + f.lastModified; }

  function b64(buf) {
    var s = "", bytes = new Uint8Array(buf);
    for (var i = 0; i < bytes.length; i++) { s += String.fromCharCode(bytes[i]); }
    return btoa(s);
  }

  async function problem(res) {
    try { var j = await res.json(); return j.error || ("HTTP " + res.status); }
    catch (e) { return "HTTP " + res.status; }
  }

  async function start(f) {
    var saved = localStorage.getItem(key(f));
    if (saved) {
      var h = await fetch(saved, { method: "HEAD", credentials: "same-origin" });
      if (h.ok) { return { url: saved, offset: Number(h.headers.get("Upload-Offset")) }; }
      localStorage.removeItem(key(f));
    }
    var res = await fetch("/api/v1/packages/" + pkg + "/uploads", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ name: f.name, size: f.size })
    });
    if (res.status !== 201) { throw new Error(await problem(res)); }
    var url = res.headers.get("Location");
    localStorage.setItem(key(f), url);
    return { url: url, offset: 0 };
  }

  async function send(f, url, offset, done, total) {
    var end = Math.min(offset + CHUNK, f.size);
    var chunk = await f.slice(offset, end).arrayBuffer();
    var sum = await crypto.subtle.digest("SHA-256", chunk);
    var res = await fetch(url, {
      method: "PATCH", credentials: "same-origin",
      headers: {
        "Content-Type": "application/offset+octet-stream", "Upload-Offset": String(offset),
        "Upload-Checksum": "sha256 " + b64(sum), "X-CSRF-Token": csrf
      },
      body: chunk
    });
    if (res.status === 204 || res.status === 409) {
      var at = res.headers.get("Upload-Offset");
      if (at !== null) { return Number(at); }
    }
    if (res.status >= 500 || res.status === 460) { throw new TypeError("retry: HTTP " + res.status); }
    var e = new Error(await problem(res));
    e.fatal = true;
    throw e;
  }

  async function upload(f, done, total) {
    var u = await start(f);
    var offset = u.offset, tries = 0;
    while (offset < f.size) {
      try {
        offset = await send(f, u.url, offset);
        tries = 0;
        bar.value = Math.floor(((done + offset) / total) * 1000);
        say("Uploading " + f.name + ": " + Math.floor((offset / f.size) * 100) + " %");
      } catch (e) {
        if (e.fatal || ++tries > MAX_RETRIES) { throw e; }
        say("Connection lost while uploading " + f.name + "; resuming…");
        await sleep(Math.min(1000 * tries, 10000));
        try {
          var h = await fetch(u.url, { method: "HEAD", credentials: "same-origin" });
          if (h.ok) { offset = Number(h.headers.get("Upload-Offset")); }
          else if (h.status === 404) { throw Object.assign(new Error("The upload is gone; start again."), { fatal: true }); }
        } catch (e2) { if (e2.fatal) { throw e2; } }
      }
    }
    localStorage.removeItem(key(f));
  }

  form.addEventListener("submit", async function (ev) {
    ev.preventDefault();
    var files = Array.prototype.slice.call(input.files);
    if (files.length === 0) { say("Choose at least one file."); return; }
    var total = files.reduce(function (n, f) { return n + f.size; }, 0) || 1, done = 0;
    form.querySelector("button").disabled = true;
    bar.hidden = false;
    try {
      for (var i = 0; i < files.length; i++) {
        await upload(files[i], done, total);
        done += files[i].size;
      }
      say("Uploaded " + files.length + " file(s).");
      window.location.reload();
    } catch (e) {
      say("Upload failed: " + e.message);
      form.querySelector("button").disabled = false;
    }
  });
})();
