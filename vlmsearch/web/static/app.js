// vlmsearch page: plain JavaScript, no build step, talks only to this server's /api.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("search");
  const qInput = $("q");
  const notInput = $("not");
  const kSelect = $("k");
  const targetSelect = $("target");
  const fileInput = $("file");
  const box = $("box");
  const statusEl = $("status");
  const errorEl = $("error");
  const warningsEl = $("warnings");
  const grid = $("results");
  const textList = $("texts");
  const hint = $("hint");
  const goButton = $("go");

  // The query beyond the form's own fields: an uploaded File, or an indexed image ("like").
  const state = { file: null, fileUrl: null, like: null, hits: [], current: -1 };
  let requestSeq = 0;

  const baseName = (path) => path.split(/[\\/]/).pop() || path;
  const plural = (n, word) => `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;

  // --- small DOM helpers ---------------------------------------------------------------
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }

  function showError(message) {
    errorEl.textContent = message;
    errorEl.hidden = false;
  }

  function clearError() {
    errorEl.hidden = true;
    errorEl.textContent = "";
  }

  // --- the query image chip --------------------------------------------------------------
  $("chip-img").addEventListener("error", () => { $("chip-img").style.visibility = "hidden"; });
  $("chip-img").addEventListener("load", () => { $("chip-img").style.visibility = ""; });

  function setQueryImage({ file = null, like = null }) {
    if (state.fileUrl) URL.revokeObjectURL(state.fileUrl);
    state.file = file;
    state.fileUrl = file ? URL.createObjectURL(file) : null;
    state.like = like;
    const chip = $("chip");
    if (file) {
      $("chip-img").src = state.fileUrl;
      $("chip-label").textContent = file.name || "pasted image";
    } else if (like) {
      $("chip-img").src = `/api/thumb/${like.id}`;
      $("chip-label").textContent = `like ${like.name}`;
    }
    chip.hidden = !(file || like);
    chip.title = file ? file.name : like ? like.path : "";
    qInput.placeholder = file || like
      ? "Add words to refine (optional)"
      : "Describe a picture, or drop one here\u2026";
  }

  // --- searching -----------------------------------------------------------------------
  // The filter row: each input is one query parameter of /api/search (and of the page's URL).
  const FILTERS = { after: $("f-after"), before: $("f-before"), in: $("f-in"),
                    place: $("f-place"), camera: $("f-camera") };

  function currentFilters() {
    const out = {};
    for (const [name, input] of Object.entries(FILTERS)) {
      if (input.value.trim()) out[name] = input.value.trim();
    }
    return out;
  }

  function currentQuery() {
    return {
      q: qInput.value.trim(),
      not: notInput.value.split(",").map((s) => s.trim()).filter(Boolean),
      k: kSelect.value,
      target: targetSelect.value,
      like: state.like,
      file: state.file,
      filters: currentFilters(),
    };
  }

  function queryParams(query) {
    const params = new URLSearchParams();
    if (query.q) params.set("q", query.q);
    if (query.like) params.set("like", String(query.like.id));
    for (const n of query.not) params.append("not", n);
    params.set("k", query.k);
    if (query.target !== "images") params.set("target", query.target);
    for (const [name, value] of Object.entries(query.filters)) params.set(name, value);
    return params;
  }

  function showFilterState() {
    $("f-clear").hidden = Object.keys(currentFilters()).length === 0;
  }
  for (const input of Object.values(FILTERS)) {
    input.addEventListener("change", () => { showFilterState(); if (hint.hidden) search(); });
  }
  $("f-clear").addEventListener("click", () => {
    for (const input of Object.values(FILTERS)) input.value = "";
    showFilterState();
    if (qInput.value.trim() || state.like || state.file) {
      search();
    } else {  // nothing left to search for: back to the start page
      grid.replaceChildren();
      statusEl.textContent = "";
      warningsEl.hidden = true;
      hint.hidden = false;
      history.pushState(null, "", location.pathname);
    }
  });

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && typeof body.detail === "string") return body.detail;
      if (body && body.detail) return JSON.stringify(body.detail);
    } catch (_) { /* not JSON */ }
    return `the server answered ${response.status} ${response.statusText}`;
  }

  async function search({ push = true } = {}) {
    const query = currentQuery();
    if (!query.q && !query.like && !query.file && !Object.keys(query.filters).length) {
      showError("Type some words, choose or drop an image, or set a filter, to search.");
      return;
    }
    clearError();
    const seq = ++requestSeq;
    goButton.disabled = true;
    statusEl.textContent = "Searching\u2026";
    const params = queryParams(query);
    let response;
    try {
      if (query.file) {
        const body = new FormData();
        for (const [key, value] of params) body.append(key, value);
        body.append("image", query.file, query.file.name || "image");
        response = await fetch("/api/search", { method: "POST", body });
      } else {
        response = await fetch(`/api/search?${params}`);
      }
    } catch (err) {
      if (seq === requestSeq) {
        statusEl.textContent = "";
        showError(`Cannot reach the vlmsearch server (${err.message}). Is it still running?`);
        goButton.disabled = false;
      }
      return;
    }
    if (seq !== requestSeq) return; // a newer search has started meanwhile
    goButton.disabled = false;
    if (!response.ok) {
      statusEl.textContent = "";
      grid.replaceChildren(); // the old results do not answer this query
      textList.replaceChildren();
      textList.hidden = true;
      state.hits = [];
      showError(await errorMessage(response));
      return;
    }
    const data = await response.json();
    if (push && !query.file) {
      const url = `${location.pathname}?${params}`;
      if (url !== location.pathname + location.search) history.pushState(null, "", url);
    }
    render(data, query);
  }

  function render(data, query) {
    hint.hidden = true;
    const what = query.target === "texts" ? "caption" : "result";
    statusEl.replaceChildren(
      el("strong", { text: plural(data.count, what) }),
      ` in ${data.seconds.toFixed(3)} s`,
    );
    if (data.count === 0) {
      statusEl.append(" \u2014 nothing found. Is the index empty? (vlmsearch info)");
    }
    warningsEl.replaceChildren(...(data.warnings || []).map((w) => el("li", { text: w })));
    warningsEl.hidden = !(data.warnings || []).length;
    if (data.target === "texts") {
      grid.replaceChildren();
      textList.hidden = false;
      textList.replaceChildren(...data.results.map((hit) => el("li", {},
        el("span", { class: "score", text: hit.score.toFixed(3) }),
        el("span", { class: "text", text: hit.text }),
        el("span", { class: "source", text: hit.source ? baseName(hit.source) : "" }),
      )));
      state.hits = [];
      return;
    }
    textList.hidden = true;
    textList.replaceChildren();
    state.hits = data.results;
    grid.replaceChildren(...data.results.map((hit, i) => card(hit, i)));
  }

  function card(hit, index) {
    const name = baseName(hit.path);
    const img = el("img", {
      src: `/api/thumb/${hit.id}`, alt: name, loading: "lazy", decoding: "async",
    });
    const thumb = el("button", {
      type: "button", class: "thumb", title: `Open ${name}`, onclick: () => openViewer(index),
    }, img);
    img.addEventListener("error", () => thumb.classList.add("broken"));
    img.addEventListener("error", () => img.remove());
    const size = hit.width ? ` \u00b7 ${hit.width}\u00d7${hit.height}` : "";
    const about = [shownDate(hit.taken), hit.place].filter(Boolean).join(" \u00b7 ");
    return el("li", { class: "card", "data-id": String(hit.id) },
      thumb,
      el("span", { class: "rank", text: String(hit.rank) }),
      el("div", { class: "meta" },
        el("span", { class: "name", title: hit.path + size, text: name }),
        about ? el("span", { class: "about", title: hit.camera || "", text: about }) : "",
        hit.ocr ? highlighted(hit.ocr, hit.ocr_spans || []) : "",
        el("div", { class: "row" },
          el("span", { class: "score", title: "cosine similarity to the query", text: shownScore(hit.score) }),
          el("button", { type: "button", class: "like", onclick: () => moreLike(hit) }, "More like this"),
        ),
      ),
    );
  }

  // "2023-07-14T18:03:22+02:00" → "14 Jul 2023", in the photo's own calendar (no time zones).
  function shownDate(taken) {
    if (!taken) return "";
    const [y, m, d] = taken.slice(0, 10).split("-").map(Number);
    const month = new Date(Date.UTC(2000, m - 1, 1)).toLocaleString(undefined, { month: "short", timeZone: "UTC" });
    return `${d} ${month} ${y}`;
  }

  // The text read in the picture, with the query's words marked (spans come from the server).
  function highlighted(text, spans) {
    const node = el("span", { class: "ocr", title: "text in the picture" });
    let at = 0;
    for (const [start, end] of spans) {
      if (start < at) continue;
      node.append(text.slice(at, start), el("mark", { text: text.slice(start, end) }));
      at = end;
    }
    node.append(text.slice(at));
    return node;
  }

  const shownScore = (score) => (score === null || score === undefined ? "" : score.toFixed(3));

  function moreLike(hit) {
    closeViewer();
    qInput.value = "";
    setQueryImage({ like: { id: hit.id, name: baseName(hit.path), path: hit.path } });
    window.scrollTo({ top: 0, behavior: "smooth" });
    search();
  }

  // --- the full-size viewer ------------------------------------------------------------
  const viewer = $("viewer");

  function openViewer(index) {
    const hit = state.hits[index];
    if (!hit) return;
    state.current = index;
    $("viewer-img").src = `/api/image/${hit.id}`;
    $("viewer-img").alt = baseName(hit.path);
    $("viewer-open").href = `/api/image/${hit.id}`;
    const size = hit.width ? `${hit.width}\u00d7${hit.height} \u00b7 ` : "";
    const about = [shownDate(hit.taken), hit.place, hit.camera].filter(Boolean).map((t) => `${t} \u00b7 `).join("");
    const score = hit.score === null || hit.score === undefined ? "" : `${hit.score.toFixed(3)} \u00b7 `;
    $("viewer-caption").textContent = `#${hit.rank} \u00b7 ${score}${about}${size}${hit.path}`;
    $("viewer-prev").disabled = index === 0;
    $("viewer-next").disabled = index === state.hits.length - 1;
    viewer.hidden = false;
    $("viewer-close").focus();
  }

  function closeViewer() {
    if (viewer.hidden) return;
    viewer.hidden = true;
    $("viewer-img").removeAttribute("src");
    state.current = -1;
  }

  $("viewer-close").addEventListener("click", closeViewer);
  $("viewer-prev").addEventListener("click", () => openViewer(state.current - 1));
  $("viewer-next").addEventListener("click", () => openViewer(state.current + 1));
  $("viewer-like").addEventListener("click", () => moreLike(state.hits[state.current]));
  viewer.addEventListener("click", (event) => { if (event.target === viewer) closeViewer(); });
  document.addEventListener("keydown", (event) => {
    if (viewer.hidden) return;
    if (event.key === "Escape") closeViewer();
    else if (event.key === "ArrowLeft" && state.current > 0) openViewer(state.current - 1);
    else if (event.key === "ArrowRight" && state.current < state.hits.length - 1) openViewer(state.current + 1);
  });

  // --- query images: file picker, drag and drop, paste -----------------------------------
  function useFile(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      showError(`${file.name} is not an image; choose a JPEG, PNG, WebP or similar file.`);
      return;
    }
    setQueryImage({ file });
    search();
  }

  fileInput.addEventListener("change", () => {
    useFile(fileInput.files[0]);
    fileInput.value = ""; // picking the same file again fires change again
  });

  $("chip-clear").addEventListener("click", () => {
    setQueryImage({});
    qInput.focus();
  });

  const overlay = $("drop-overlay");
  let dragDepth = 0;
  const carriesFiles = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
  document.addEventListener("dragenter", (event) => {
    if (!carriesFiles(event)) return;
    dragDepth += 1;
    overlay.hidden = false;
    box.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) { overlay.hidden = true; box.classList.remove("dragging"); }
  });
  document.addEventListener("dragover", (event) => {
    if (carriesFiles(event)) event.preventDefault();
  });
  document.addEventListener("drop", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    dragDepth = 0;
    overlay.hidden = true;
    box.classList.remove("dragging");
    useFile(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = Array.from(event.clipboardData?.files || []).find((f) => f.type.startsWith("image/"));
    if (file) { event.preventDefault(); useFile(file); }
  });

  // --- form, history, stats ------------------------------------------------------------
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  kSelect.addEventListener("change", () => { if (!hint.hidden) return; search(); });
  targetSelect.addEventListener("change", () => { if (!hint.hidden) return; search(); });

  function loadFromUrl() {
    const params = new URLSearchParams(location.search);
    qInput.value = params.get("q") || "";
    notInput.value = params.getAll("not").join(", ");
    if (params.get("k")) kSelect.value = params.get("k");
    targetSelect.value = params.get("target") === "texts" ? "texts" : "images";
    const like = Number.parseInt(params.get("like") || "", 10);
    setQueryImage(like > 0 ? { like: { id: like, name: `image ${like}`, path: "" } } : {});
    for (const [name, input] of Object.entries(FILTERS)) input.value = params.get(name) || "";
    showFilterState();
    if (params.get("q") || like > 0 || Object.keys(currentFilters()).length) {
      search({ push: false });
    } else {
      grid.replaceChildren();
      textList.hidden = true;
      statusEl.textContent = "";
      hint.hidden = false;
    }
  }
  window.addEventListener("popstate", loadFromUrl);

  async function loadStats() {
    try {
      const response = await fetch("/api/info");
      if (!response.ok) { showError(await errorMessage(response)); return; }
      const info = await response.json();
      const parts = [plural(info.images, "image")];
      if (info.texts) parts.push(plural(info.texts, "caption"));
      parts.push(info.model);
      $("stats").textContent = parts.join(" \u00b7 ");
      $("stats").title = info.path;
      $("target-wrap").hidden = !info.texts;
    } catch (err) {
      showError(`Cannot reach the vlmsearch server (${err.message}).`);
    }
  }

  loadStats();
  loadFromUrl();
  if (!qInput.value) qInput.focus();
})();
