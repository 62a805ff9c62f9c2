// The duplicates view: groups from /api/duplicates, each with its kind, score and thumbnails.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("dup-form");
  const similar = $("similar");
  const minScore = $("min-score");
  const status = $("status");
  const error = $("error");
  const groups = $("groups");
  const KIND_TEXT = {
    exact: "Exact copies",
    near: "Near duplicates",
    similar: "Similar pictures",
  };

  function baseName(path) {
    const parts = path.split(/[\\/]/);
    return parts[parts.length - 1] || path;
  }

  function fromUrl() {
    const params = new URLSearchParams(location.search);
    similar.checked = params.get("similar") === "1";
    minScore.value = params.get("min_score") || "";
  }

  function card(member) {
    const li = document.createElement("li");
    li.className = "dup-member";
    const link = document.createElement("a");
    link.href = "/api/image/" + member.id;
    link.target = "_blank";
    link.rel = "noopener";
    link.title = member.path;
    const img = document.createElement("img");
    img.src = "/api/thumb/" + member.id;
    img.alt = baseName(member.path);
    img.loading = "lazy";
    const name = document.createElement("span");
    name.className = "dup-name";
    name.textContent = baseName(member.path);
    link.append(img, name);
    li.append(link);
    return li;
  }

  function render(data) {
    groups.replaceChildren();
    for (const group of data.groups) {
      const section = document.createElement("section");
      section.className = "dup-group " + group.kind;
      section.dataset.kind = group.kind;
      const head = document.createElement("h2");
      const badge = document.createElement("span");
      badge.className = "dup-kind";
      badge.textContent = KIND_TEXT[group.kind] || group.kind;
      const meta = document.createElement("span");
      meta.className = "dup-meta";
      meta.textContent = group.members.length + " files · score " + group.score.toFixed(3);
      head.append(badge, meta);
      const list = document.createElement("ul");
      list.className = "dup-members";
      for (const member of group.members) list.append(card(member));
      section.append(head, list);
      groups.append(section);
    }
    const files = data.groups.reduce((n, g) => n + g.members.length, 0);
    status.textContent = data.count
      ? data.count + " groups holding " + files + " files (" + data.seconds + " s)"
      : "No duplicates found.";
  }

  async function load() {
    error.hidden = true;
    status.textContent = "Looking for duplicates…";
    const params = new URLSearchParams();
    if (similar.checked) params.set("similar", "1");
    if (minScore.value !== "") params.set("min_score", minScore.value);
    const query = params.toString();
    history.replaceState(null, "", "/duplicates" + (query ? "?" + query : ""));
    try {
      const response = await fetch("/api/duplicates?" + query);
      const data = await response.json();
      if (!response.ok) throw new Error(data.detail || response.statusText);
      render(data);
    } catch (exc) {
      status.textContent = "";
      groups.replaceChildren();
      error.textContent = String(exc.message || exc);
      error.hidden = false;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  similar.addEventListener("change", load);
  fromUrl();
  load();
})();
