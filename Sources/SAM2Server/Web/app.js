// sam2 web page: a thin client of the JSON API in openapi.json. The server holds the session
// (prompts, masks, undo history); this page shows frames, draws masks and sends clicks.
"use strict";

// matplotlib's tab10, as sam2's overlays and the SAM 2 notebooks colour objects.
const TAB10 = [[31,119,180],[255,127,14],[44,160,44],[214,39,40],[148,103,189],
               [140,86,75],[227,119,194],[127,127,127],[188,189,34],[23,190,207]];
const colour = id => TAB10[((id % 10) + 10) % 10];
const css = id => `rgb(${colour(id).join(",")})`;

const $ = id => document.getElementById(id);
const canvas = $("canvas"), ctx = canvas.getContext("2d");

const state = {
  token: new URLSearchParams(location.hash.slice(1)).get("token"),
  session: null,          // the server's session info
  frame: 0,
  objects: [],            // object ids shown in the list (prompted on the server, or just added)
  selected: null,
  masks: new Map(),       // frame -> results [{object_id, mask: {size, counts}}] as the server sent them
  images: new Map(),      // frame -> HTMLImageElement (decoded)
  tracking: null,         // {aborter, started, frames, total}
  drag: null,
};
window.sam2 = state;      // for the browser tests: what the page received

// ---------- API ----------

async function api(method, path, body, raw) {
  const headers = {};
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  let payload;
  if (raw) { payload = raw; headers["Content-Type"] = "application/octet-stream"; }
  else if (body !== undefined) { payload = JSON.stringify(body); headers["Content-Type"] = "application/json"; }
  const res = await fetch(path, { method, headers, body: payload });
  if (!res.ok) {
    let message = res.status + " " + res.statusText;
    try { const e = await res.json(); if (e.error) message = e.error; } catch (_) {}
    throw new Error(message);
  }
  return res;
}
const json = async (method, path, body) => (await api(method, path, body)).json();
const sessionPath = p => `/api/sessions/${state.session.session_id}${p}`;

function status(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", !!isError);
}
function fail(e) { status(e.message || String(e), true); }

// ---------- COCO RLE (pycocotools' compressed strings, column-major) ----------

function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// ---------- drawing ----------

function draw() {
  const s = state.session;
  if (!s) return;
  const img = state.images.get(state.frame);
  if (img) ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  else { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); }

  const results = state.masks.get(state.frame) || [];
  if (results.length) {
    const w = canvas.width, h = canvas.height;
    const overlay = ctx.getImageData(0, 0, w, h), px = overlay.data;
    for (const r of results) {
      const [mh, mw] = r.mask.size;
      if (mh !== h || mw !== w) continue;
      const [cr, cg, cb] = colour(r.object_id);
      const alpha = r.object_id === state.selected ? 0.55 : 0.45;
      const counts = rleCounts(r.mask.counts);
      let pos = 0;
      for (let i = 0; i < counts.length; i++) {
        const n = counts[i];
        if (i % 2 === 1) {
          for (let j = pos; j < pos + n; j++) {
            const x = Math.floor(j / h), y = j - x * h;    // column-major
            const o = (y * w + x) * 4;
            px[o] += (cr - px[o]) * alpha; px[o + 1] += (cg - px[o + 1]) * alpha; px[o + 2] += (cb - px[o + 2]) * alpha;
          }
        }
        pos += n;
      }
    }
    ctx.putImageData(overlay, 0, 0);
  }

  // Prompts on this frame.
  const r = Math.max(4, canvas.width / 160);
  for (const p of s.prompts.filter(p => p.frame_index === state.frame)) {
    if (p.box) {
      ctx.strokeStyle = css(p.object_id); ctx.lineWidth = Math.max(2, r / 2);
      ctx.strokeRect(p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]);
    }
    p.points.forEach((pt, i) => {
      ctx.beginPath(); ctx.arc(pt[0], pt[1], r, 0, 2 * Math.PI);
      ctx.fillStyle = p.labels[i] === 1 ? "#2ecc71" : "#ff4d4d"; ctx.fill();
      ctx.lineWidth = 2; ctx.strokeStyle = "#fff"; ctx.stroke();
    });
  }
  if (state.drag && state.drag.moved) {
    const d = state.drag;
    ctx.setLineDash([6, 4]); ctx.strokeStyle = css(state.selected); ctx.lineWidth = 2;
    ctx.strokeRect(d.x0, d.y0, d.x1 - d.x0, d.y1 - d.y0); ctx.setLineDash([]);
  }
}

/// The canvas keeps the video's pixels; its displayed size fills the viewport at the video's aspect.
function fit() {
  const s = state.session;
  if (!s) return;
  const vp = $("viewport").getBoundingClientRect();
  const k = Math.min(vp.width / s.width, vp.height / s.height);
  canvas.style.width = Math.floor(s.width * k) + "px";
  canvas.style.height = Math.floor(s.height * k) + "px";
}
window.addEventListener("resize", fit);

function renderPanel() {
  const s = state.session, has = !!s;
  const busy = !!state.tracking;
  $("slider").disabled = !has;
  $("undo").disabled = !has || !s.can_undo || busy;
  $("export").disabled = !has;
  $("add-object").disabled = !has;
  const prompted = has && s.objects.length > 0;
  for (const b of ["track", "track-fwd", "track-back"]) $(b).disabled = !prompted || busy;
  $("cancel").hidden = !busy;
  $("empty").hidden = has;
  $("frame-label").textContent = has ? `${state.frame} / ${s.frame_count - 1}` : "– / –";

  const list = $("objects");
  list.innerHTML = "";
  for (const id of state.objects) {
    const li = document.createElement("li");
    li.className = id === state.selected ? "selected" : "";
    li.dataset.id = id;
    const framesWithPrompts = has ? new Set(s.prompts.filter(p => p.object_id === id).map(p => p.frame_index)).size : 0;
    li.innerHTML = `<span class="swatch" style="background:${css(id)}"></span>
      <span class="name">Object ${id}</span>
      <span class="count muted">${framesWithPrompts ? framesWithPrompts + " frame" + (framesWithPrompts > 1 ? "s" : "") : "no prompts"}</span>
      <button class="remove" title="Remove object ${id}">×</button>`;
    li.onclick = e => {
      if (e.target.classList.contains("remove")) removeObject(id).catch(fail);
      else { state.selected = id; renderPanel(); draw(); }
    };
    list.appendChild(li);
  }
  const here = has ? s.prompts.filter(p => p.frame_index === state.frame) : [];
  $("frame-prompts").innerHTML = here.length ? here.map(p =>
    `<div><span style="color:${css(p.object_id)}">■</span> Object ${p.object_id}: ` +
    `${p.labels.filter(l => l === 1).length} positive, ${p.labels.filter(l => l === 0).length} negative` +
    `${p.box ? ", box" : ""}${p.has_mask ? ", mask" : ""}</div>`).join("") : "none";
  $("clear-frame").disabled = !here.some(p => p.object_id === state.selected) || busy;
}

// ---------- frames ----------

async function loadImage(frame) {
  if (state.images.has(frame)) return state.images.get(frame);
  const blob = await (await api("GET", sessionPath(`/frames/${frame}`))).blob();
  const img = new Image();
  img.src = URL.createObjectURL(blob);
  await img.decode();
  state.images.set(frame, img);
  if (state.images.size > 300) {           // keep memory bounded on long videos
    const oldest = state.images.keys().next().value;
    URL.revokeObjectURL(state.images.get(oldest).src);
    state.images.delete(oldest);
  }
  return img;
}

async function loadMasks(frame) {
  if (state.masks.has(frame)) return;
  const r = await json("GET", sessionPath(`/masks/${frame}`));
  state.masks.set(frame, r.results);
}

let showing = 0;
async function show(frame) {
  const s = state.session;
  if (!s) return;
  frame = Math.max(0, Math.min(s.frame_count - 1, frame));
  state.frame = frame;
  $("slider").value = frame;
  const ticket = ++showing;
  renderPanel();
  try {
    await Promise.all([loadImage(frame), state.tracking ? null : loadMasks(frame)]);
  } catch (e) { fail(e); }
  if (ticket === showing) draw();
  for (const n of [frame + 1, frame + 2]) if (n < s.frame_count) loadImage(n).catch(() => {});
}

// ---------- session ----------

async function opened(info) {
  state.session = info;
  state.masks.clear();
  for (const img of state.images.values()) URL.revokeObjectURL(img.src);
  state.images.clear();
  state.objects = info.objects.slice();
  if (!state.objects.length) state.objects = [1];
  state.selected = state.objects[0];
  canvas.width = info.width; canvas.height = info.height;
  fit();
  $("slider").max = info.frame_count - 1;
  $("video-name").textContent = `${info.name} — ${info.width}×${info.height}, ${info.frame_count} frames, ${Math.round(info.fps * 100) / 100} fps`;
  status("Click on the object to track. Right-click or shift-click excludes, drag draws a box.");
  await show(0);
}

async function openFile(file) {
  if (state.session) api("DELETE", sessionPath("")).catch(() => {});
  state.session = null; renderPanel();
  status(`Uploading ${file.name} (${(file.size / 1048576).toFixed(1)} MB)…`);
  try {
    const info = await (await api("POST", `/api/sessions/upload?name=${encodeURIComponent(file.name)}`, undefined, file)).json();
    await opened(info);
  } catch (e) { fail(e); }
}

async function openPath(path) {
  status(`Opening ${path}…`);
  try { await opened(await json("POST", "/api/sessions", { path })); } catch (e) { fail(e); }
}

/// After an edit the server may have changed any frame: refetch lazily.
async function refresh(info) {
  state.session = info;
  for (const id of info.objects) if (!state.objects.includes(id)) state.objects.push(id);
  state.masks.clear();
  await show(state.frame);
}

async function refreshInfo() { state.session = await json("GET", sessionPath("")); }

// ---------- prompts ----------

function videoPoint(e) {
  const rect = canvas.getBoundingClientRect();
  return [(e.clientX - rect.left) * canvas.width / rect.width, (e.clientY - rect.top) * canvas.height / rect.height];
}

async function prompt(body) {
  if (state.tracking) { status("Tracking is running: cancel it first.", true); return; }
  const t0 = performance.now();
  $("busy").hidden = false; $("busy").textContent = "segmenting…";
  try {
    const r = await json("POST", sessionPath("/add_points"), Object.assign({ frame_index: state.frame, object_id: state.selected }, body));
    state.masks.set(r.frame_index, r.results);
    await refreshInfo();
    status(`Object ${state.selected} on frame ${state.frame}: mask in ${Math.round(performance.now() - t0)} ms. Track when ready.`);
  } catch (e) { fail(e); }
  $("busy").hidden = true;
  renderPanel(); draw();
}

canvas.addEventListener("contextmenu", e => e.preventDefault());
canvas.addEventListener("mousedown", e => {
  if (!state.session || state.selected === null) return;
  const [x, y] = videoPoint(e);
  state.drag = { x0: x, y0: y, x1: x, y1: y, moved: false, negative: e.button === 2 || e.shiftKey };
});
window.addEventListener("mousemove", e => {
  const d = state.drag;
  if (!d) return;
  [d.x1, d.y1] = videoPoint(e);
  const scale = canvas.getBoundingClientRect().width / canvas.width;
  if (Math.hypot(d.x1 - d.x0, d.y1 - d.y0) * scale > 6) d.moved = true;
  if (d.moved) draw();
});
window.addEventListener("mouseup", e => {
  const d = state.drag;
  if (!d) return;
  state.drag = null;
  const clamp = (v, hi) => Math.max(0, Math.min(hi, v));
  if (d.moved) {
    const W = canvas.width - 1, H = canvas.height - 1;
    const box = [clamp(Math.min(d.x0, d.x1), W), clamp(Math.min(d.y0, d.y1), H), clamp(Math.max(d.x0, d.x1), W), clamp(Math.max(d.y0, d.y1), H)];
    prompt({ box, clear_old_points: true });
  } else {
    prompt({ points: [[d.x0, d.y0]], labels: [d.negative ? 0 : 1], clear_old_points: false });
  }
});

async function removeObject(id) {
  if (state.session && state.session.objects.includes(id)) {
    await refresh(await json("POST", sessionPath("/remove_object"), { object_id: id }));
  }
  state.objects = state.objects.filter(o => o !== id);
  if (!state.objects.length) state.objects = [Math.max(0, ...state.session.objects) + 1];
  if (!state.objects.includes(state.selected)) state.selected = state.objects[0];
  status(`Object ${id} removed.`);
  renderPanel(); draw();
}

$("add-object").onclick = () => {
  const id = Math.max(0, ...state.objects, ...(state.session ? state.session.objects : [])) + 1;
  state.objects.push(id); state.selected = id;
  status(`Object ${id}: click on it.`);
  renderPanel(); draw();
};

$("clear-frame").onclick = async () => {
  try {
    const r = await json("POST", sessionPath("/clear_points_in_frame"), { frame_index: state.frame, object_id: state.selected });
    state.masks.set(r.frame_index, r.results);
    await refreshInfo();
    renderPanel(); draw();
  } catch (e) { fail(e); }
};

async function undo() {
  if (!state.session || state.tracking) return;
  try {
    const r = await json("POST", sessionPath("/undo"));
    status(r.undone ? "Undone." : "Nothing to undo.");
    await refresh(r);
  } catch (e) { fail(e); }
}
$("undo").onclick = undo;

// ---------- tracking (multipart/x-savi-stream, one JSON part per frame) ----------

async function track(direction, start) {
  const s = state.session;
  if (!s || state.tracking) return;
  const aborter = new AbortController();
  const body = { direction };
  if (start !== undefined) body.start_frame_index = start;
  state.tracking = { aborter, started: performance.now(), frames: 0 };
  const earliest = Math.min(...s.prompts.map(p => p.frame_index));
  const from = start !== undefined ? start : earliest;
  const total = direction === "forward" ? s.frame_count - from : direction === "backward" ? from + 1
    : s.frame_count - from + (from > 0 ? from + 1 : 0);
  renderPanel();
  status("Tracking…");
  let summary = null;
  try {
    const headers = { "Content-Type": "application/json" };
    if (state.token) headers["Authorization"] = "Bearer " + state.token;
    const res = await fetch(sessionPath("/propagate_in_video"), { method: "POST", headers, body: JSON.stringify(body), signal: aborter.signal });
    if (!res.ok) { const e = await res.json().catch(() => ({})); throw new Error(e.error || res.statusText); }
    const reader = res.body.getReader();
    let buf = new Uint8Array(0);
    const dec = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const next = new Uint8Array(buf.length + value.length); next.set(buf); next.set(value, buf.length); buf = next;
      for (;;) {
        const headerEnd = indexOf(buf, [13, 10, 13, 10]);
        if (headerEnd < 0) break;
        const head = dec.decode(buf.subarray(0, headerEnd));
        const m = /Content-Length:\s*(\d+)/i.exec(head);
        if (!m) throw new Error("malformed stream part");
        const len = +m[1], startAt = headerEnd + 4;
        if (buf.length < startAt + len + 2) break;
        const part = JSON.parse(dec.decode(buf.subarray(startAt, startAt + len)));
        buf = buf.slice(startAt + len + 2);
        if (part.done) { summary = part; continue; }
        state.masks.set(part.frame_index, part.results);
        state.tracking.frames++;
        const pct = Math.min(100, 100 * state.tracking.frames / total);
        $("progress-fill").style.width = pct + "%";
        const fps = state.tracking.frames / ((performance.now() - state.tracking.started) / 1000);
        $("progress-label").textContent = `${state.tracking.frames}/${total} · ${fps.toFixed(2)} fps`;
        show(part.frame_index);     // follow the tracker
      }
    }
    if (summary && summary.error) throw new Error(summary.error);
    const secs = ((performance.now() - state.tracking.started) / 1000).toFixed(1);
    status(summary && summary.cancelled ? `Cancelled after ${state.tracking.frames} frames.`
      : `Tracked ${state.tracking.frames} frames in ${secs} s. Scrub to check; click on a frame to correct it, then track again.`);
  } catch (e) {
    if (e.name === "AbortError") status(`Cancelled after ${state.tracking.frames} frames.`); else fail(e);
  }
  state.tracking = null;
  await refreshInfo().catch(() => {});
  renderPanel(); draw();
}

function indexOf(buf, pattern) {
  outer: for (let i = 0; i + pattern.length <= buf.length; i++) {
    for (let j = 0; j < pattern.length; j++) if (buf[i + j] !== pattern[j]) continue outer;
    return i;
  }
  return -1;
}

$("track").onclick = () => track("both");
$("track-fwd").onclick = () => track("forward", state.frame);
$("track-back").onclick = () => track("backward", state.frame);
$("cancel").onclick = async () => {
  try { await json("POST", sessionPath("/cancel_propagate_in_video")); status("Cancelling after this frame…"); } catch (e) { fail(e); }
};

// ---------- export ----------

$("export").onclick = () => { $("export-menu").hidden = !$("export-menu").hidden; };
$("export-go").onclick = async () => {
  const formats = [...document.querySelectorAll("#export-menu input[type=checkbox]:checked")].map(c => c.value);
  if (!formats.length) { status("Choose at least one format.", true); return; }
  $("export-menu").hidden = true;
  status("Exporting…");
  try {
    const tol = $("yolo-tolerance").value || "1";
    const res = await api("GET", sessionPath(`/export?formats=${formats.join(",")}&yolo_tolerance=${encodeURIComponent(tol)}`));
    const blob = await res.blob();
    const name = (/filename="([^"]+)"/.exec(res.headers.get("Content-Disposition") || "") || [])[1] || "masks.zip";
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = name; a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    status(`Exported ${name} (${(blob.size / 1024).toFixed(0)} KB).`);
  } catch (e) { fail(e); }
};

// ---------- navigation ----------

$("slider").oninput = e => show(+e.target.value);
$("prev").onclick = () => show(state.frame - 1);
$("next").onclick = () => show(state.frame + 1);
$("file").onchange = e => { if (e.target.files[0]) openFile(e.target.files[0]); e.target.value = ""; };
window.addEventListener("keydown", e => {
  if (e.target.tagName === "INPUT" && e.target.type !== "range") return;
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); return; }
  if (!state.session) return;
  if (e.key === "ArrowLeft") { e.preventDefault(); show(state.frame - (e.shiftKey ? 10 : 1)); }
  else if (e.key === "ArrowRight") { e.preventDefault(); show(state.frame + (e.shiftKey ? 10 : 1)); }
  else if (e.key === "Home") { e.preventDefault(); show(0); }
  else if (e.key === "End") { e.preventDefault(); show(state.session.frame_count - 1); }
  else if (e.key === "Enter" && !$("track").disabled) { e.preventDefault(); track("both"); }
  else if (/^[1-9]$/.test(e.key) && state.objects[+e.key - 1] !== undefined) { state.selected = state.objects[+e.key - 1]; renderPanel(); draw(); }
});
document.addEventListener("click", e => {
  if (!e.target.closest(".menu")) $("export-menu").hidden = true;
});

// ---------- start ----------

(async () => {
  try {
    const h = await json("GET", "/api/health");
    $("model").textContent = h.model;
  } catch (e) { fail(e); }
  const path = new URLSearchParams(location.search).get("path");
  if (path) openPath(path);
  renderPanel();
})();
