// The review UI's keyboard and highlighting; plain JavaScript, nothing to build.
"use strict";

const typing = (e) => ["INPUT", "TEXTAREA", "SELECT"].includes(e.target.tagName);

// -- lists (the queue, calls, a trace's spans): j/k move, Enter or a click opens --------------
const listRows = [...document.querySelectorAll("table[data-keys] tbody tr[data-href]")];
if (listRows.length) {
  let at = 0;
  const show = () => listRows.forEach((r, i) => r.classList.toggle("current", i === at));
  const move = (to) => { at = Math.max(0, Math.min(to, listRows.length - 1)); show(); listRows[at].scrollIntoView({ block: "nearest" }); };
  const open = (row) => { location.href = row.dataset.href; };
  show();
  listRows.forEach((row, i) => {
    row.addEventListener("focus", () => { at = i; show(); });
    row.addEventListener("click", (e) => { if (!e.target.closest("a, button")) open(row); });
  });
  document.addEventListener("keydown", (e) => {
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "j") move(at + 1);
    else if (e.key === "k") move(at - 1);
    else if ((e.key === "Enter" && !e.target.closest("a, button")) || e.key === "o") open(listRows[at]);
  });
}

// -- the calls explorer: / searches, n is the next page -------------------------------------
const search = document.getElementById("q");
if (search) {
  document.addEventListener("keydown", (e) => {
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "/") { e.preventDefault(); search.focus(); }
    else if (e.key === "n") { const next = document.querySelector("a[rel=next]"); if (next) next.click(); }
  });
}

// -- one item: scores, labels, choice, spans, correction ------------------------------------
const item = document.getElementById("item");
if (item) {
  const response = document.getElementById("response");
  // The stored text itself (the HTML parser would drop a leading newline and turn \r\n into
  // \n), in code points: offsets count characters as the server and Python do, not UTF-16.
  const original = JSON.parse(document.getElementById("response-data").textContent);
  const chars = Array.from(original);
  const slice = (a, b) => chars.slice(a, b).join("");
  const criteria = [...document.querySelectorAll(".criterion")];
  const status = document.getElementById("status");
  const state = { scores: {}, spans: [] };
  let current = 0;

  const showCriterion = () => criteria.forEach((c, i) => c.classList.toggle("current", i === current));
  const setScore = (row, value) => {
    state.scores[row.dataset.criterion] = value;
    row.querySelectorAll(".score").forEach((b) =>
      b.setAttribute("aria-pressed", String(Number(b.dataset.value) === value)));
  };
  criteria.forEach((row, i) => row.querySelectorAll(".score").forEach((b) =>
    b.addEventListener("click", () => { current = i; setScore(row, Number(b.dataset.value)); showCriterion(); })));
  showCriterion();

  // Highlights are kept as character offsets into the response text, as they are stored.
  const offsetOf = (node, offset) => {
    const range = document.createRange();
    range.selectNodeContents(response);
    range.setEnd(node, offset);
    return Array.from(range.toString()).length;
  };
  const renderMarks = () => {
    const spans = [...state.spans].sort((a, b) => a.start - b.start);
    response.textContent = "";
    let at = 0;
    for (const s of spans) {
      if (s.start < at) continue;
      response.append(slice(at, s.start));
      const m = document.createElement("mark");
      m.className = s.label;
      m.textContent = slice(s.start, s.end);
      response.append(m);
      at = s.end;
    }
    response.append(slice(at));
    const list = document.getElementById("marks");
    list.innerHTML = "";
    state.spans.forEach((s, i) => {
      const li = document.createElement("li");
      li.textContent = `${s.label}: “${slice(s.start, s.end)}” [${s.start}, ${s.end}) `;
      const drop = document.createElement("button");
      drop.type = "button";
      drop.textContent = "remove";
      drop.addEventListener("click", () => { state.spans.splice(i, 1); renderMarks(); });
      li.append(drop);
      list.append(li);
    });
  };
  const markSelection = (label) => {
    const sel = window.getSelection();
    if (!sel.rangeCount || sel.isCollapsed) return false;
    const r = sel.getRangeAt(0);
    if (!response.contains(r.startContainer) || !response.contains(r.endContainer)) return false;
    const start = offsetOf(r.startContainer, r.startOffset);
    const end = offsetOf(r.endContainer, r.endOffset);
    if (end <= start) return false;
    state.spans.push({ label, start, end });
    sel.removeAllRanges();
    renderMarks();
    return true;
  };

  const correction = document.getElementById("correction");
  const body = () => {
    const judgement = {
      scores: state.scores,
      labels: [...document.querySelectorAll("#labels input:checked")].map((i) => i.value),
      spans: state.spans,
      correction: correction.value !== correction.defaultValue ? correction.value : null,
      comment: document.getElementById("comment").value || null,
    };
    const choice = document.querySelector("#choice input:checked");
    if (choice) {
      judgement.choice = { value: choice.value,
        other: { trace_id: item.dataset.otherTrace, span_id: item.dataset.otherSpan } };
    }
    return judgement;
  };
  const base = `/review/api/items/${item.dataset.trace}/${item.dataset.span}`;
  const post = async (url, payload) => {
    const answer = await fetch(url, { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify(payload), credentials: "same-origin" });
    const data = await answer.json().catch(() => ({}));
    if (!answer.ok) throw new Error(data.error || `HTTP ${answer.status}`);
    return data;
  };
  let busy = false;  // one request at a time: a double Ctrl+Enter must not submit twice
  const act = async (what) => {
    if (busy) return;
    busy = true;
    try {
      if (what === "submit") { await post(base, body()); status.textContent = "Submitted."; location.href = "/review"; }
      else if (what === "draft") { await post(`${base}/draft`, body()); status.textContent = "Draft saved."; }
      else if (what === "skip") { await post(`${base}/skip`, {}); location.href = "/review"; }
    } catch (err) {
      status.textContent = err.message;
      status.className = "error";
    } finally {
      busy = false;
    }
  };
  ["submit", "draft", "skip"].forEach((id) => document.getElementById(id).addEventListener("click", () => act(id)));

  // A saved draft comes back as it was left.
  const draft = JSON.parse(document.getElementById("draft-data").textContent || "{}");
  if (draft.scores) criteria.forEach((row) => { const v = draft.scores[row.dataset.criterion]; if (v !== undefined) setScore(row, v); });
  (draft.labels || []).forEach((l) => { const box = document.querySelector(`#labels input[value="${l}"]`); if (box) box.checked = true; });
  state.spans = draft.spans || [];
  renderMarks();  // the response shown is exactly the stored text, so selections map onto it
  if (draft.correction) correction.value = draft.correction;
  if (draft.comment) document.getElementById("comment").value = draft.comment;

  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); act("submit"); return; }
    if (typing(e)) return;
    const row = criteria[current];
    if (/^[0-9]$/.test(e.key) && row) {
      const button = row.querySelector(`.score[data-value="${e.key}"]`);
      if (button) { setScore(row, Number(e.key)); current = Math.min(current + 1, criteria.length - 1); showCriterion(); }
    } else if (e.key === "ArrowDown") { current = Math.min(current + 1, criteria.length - 1); showCriterion(); e.preventDefault(); }
    else if (e.key === "ArrowUp") { current = Math.max(current - 1, 0); showCriterion(); e.preventDefault(); }
    else if (e.key === "g" || e.key === "b") { markSelection(e.key === "g" ? "good" : "bad"); }
    else if (e.key === "[" || e.key === "]" || e.key === "=") {
      const value = { "[": "a", "]": "b", "=": "tie" }[e.key];
      const radio = document.querySelector(`#choice input[value="${value}"]`);
      if (radio) radio.checked = true;
    }
    else if (e.key === "c") { e.preventDefault(); document.getElementById("correction").focus(); }
    else if (e.key === "d") { act("draft"); }
    else if (e.key === "s") { act("skip"); }
  });
}
