// vhtrace report: draws the rows of the page's data as a message-sequence chart.
// Small traces are drawn whole; long ones only around what is on screen (virtual
// scrolling), so that 100,000 messages scroll like 100.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("data").textContent);
  const T = D.texts;
  const ROW_H = 30, DRAW_ALL = 4000, OVERSCAN = 30, BRACKET_ROWS = 40;
  const MESSAGE = 0, EVENT = 1, SNAPSHOT = 2, GAP = 3, FINDING = 4, STREAM = 5, SESSION = 6;
  const field = (kind, name) => D.row_fields[String(kind)].indexOf(name);
  const M = {}; for (const n of D.row_fields[String(MESSAGE)]) M[n] = field(MESSAGE, n);
  const S = {}; for (const n of D.shape_fields) S[n] = D.shape_fields.indexOf(n);
  const text = (i) => (i < 0 ? "" : T[i]);

  // lanes: front-end, back-end, then the back-end channel and any stream
  const laneX = {}; let x = 190;
  D.lanes.forEach((name, i) => { laneX[name] = x; x += i === 0 ? 400 : 160; });
  const sideX = x - 160 + 36;
  const laneColor = { "front-end": "var(--fe)", "back-end": "var(--be)",
                      "back-end channel": "var(--bech)" };
  const color = (lane) => laneColor[lane] || "var(--stream)";
  function ends(row) {  // [from x, to x, colour] of a message's arrow
    const shape = D.shapes[row[M.shape]];
    const channel = T[shape[S.channel]], sender = T[shape[S.sender]];
    const far = channel === "main" ? "back-end" : "back-end channel";
    const lane = channel === "main" ? (sender === "frontend" ? "front-end" : "back-end") : far;
    return sender === "frontend" ? [laneX["front-end"], laneX[far], color(lane)]
                                 : [laneX[far], laneX["front-end"], color(lane)];
  }

  const chart = document.getElementById("chart");
  const canvas = document.getElementById("canvas");
  const detail = document.getElementById("detail");
  const head = document.getElementById("lanehead");
  head.innerHTML = '<div class="t" style="left:6px">time (s)</div><div class="t" ' +
    'style="left:100px">#</div>' + D.lanes.map((name) =>
      `<div style="left:${laneX[name]}px;background:${color(name)}">${esc(name)}</div>`).join("");
  function esc(s) {
    return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;",
                                                   '"': "&quot;" })[c]);
  }

  // what is shown: indices into D.rows, after the page's filters
  let shown = [], rowAt = new Map();
  const form = document.getElementById("filters");
  function globRegex(term) {
    const body = term.replace(/[.+^${}()|\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
    return new RegExp("^" + body + "$");
  }
  function requestTest(value) {
    const terms = value.split(",").map((t) => t.trim().toUpperCase().replace(/^VHOST_USER_/, ""))
      .filter((t) => t);
    if (!terms.length) return null;
    const tests = terms.map((t) => /[*?[]/.test(t) ? globRegex(t) : null);
    return (name) => terms.some((t, i) => tests[i] ? tests[i].test(name)
      : name === t || name === "BACKEND_" + t || name.replace(/^BACKEND_/, "") === t);
  }
  function applyFilters() {
    const request = requestTest(form.request.value);
    const channel = form.channel.value, sender = form.sender.value;
    const session = form.session.value === "" ? null : Number(form.session.value);
    const findingsOnly = form.findings.checked;
    const narrows = request || channel || sender || findingsOnly;
    shown = [];
    D.rows.forEach((row, i) => {
      if (session !== null && row[2] !== session) return;
      const kind = row[0];
      if (kind === MESSAGE) {
        const shape = D.shapes[row[M.shape]];
        if (channel && T[shape[S.channel]] !== channel) return;
        if (sender && T[shape[S.sender]] !== sender) return;
        if (findingsOnly && row[M.severity] === 0) return;
        if (request && !request(T[shape[S.request]])) return;
      } else if (kind === FINDING) {
        // a finding not on a shown message: as show, kept unless a message filter narrows
        if (request || channel || sender) return;
      } else if (narrows && kind !== SESSION) {
        return;  // as show: connection events only without a message filter
      }
      shown.push(i);
    });
    const passed = shown.length;
    if (form.fold.checked) shown = fold(shown);
    rowAt = new Map(); shown.forEach((r, i) => { if (r >= 0) rowAt.set(r, i); });
    document.getElementById("shown").textContent =
      `${passed.toLocaleString()} of ${D.rows.length.toLocaleString()} rows shown` +
      (folds.length ? `, ${folds.length.toLocaleString()} repeated ` +
                      `run${folds.length === 1 ? "" : "s"} folded (${shown.length.toLocaleString()} ` +
                      "rows drawn)" : "");
    canvas.style.height = shown.length * ROW_H + "px";
    canvas.style.width = sideX + 420 + "px";
    drawn.clear(); canvas.querySelectorAll(".row").forEach((e) => e.remove());
    draw();
  }
  // Folding: a block of up to FOLD_MAX rows that repeats at once, FOLD_MIN times or more
  // (the same messages, the same replies to the same offsets, the same events), is drawn
  // once, and its repeats become one row with their count; a click unfolds it. An entry
  // of `shown` below 0 is fold number -entry-1.
  const FOLD_MAX = 64, FOLD_MIN = 3;
  let folds = [];
  const unfolded = [];  // [first, last] row indices of each fold the reader opened
  const signatures = new Map();
  function signature(index) {
    const row = D.rows[index], kind = row[0];
    let key;
    if (kind === MESSAGE) {
      key = "m" + row[M.shape] + ":" + (row[M.answers] >= 0 ? row[1] - row[M.answers] : "") +
            ":" + row[M.fds] + ":" + row[M.findings];
    } else if (kind === SESSION || kind === GAP || kind === SNAPSHOT) {
      key = "k" + kind;
    } else {
      key = "k" + kind + ":" + row[4];
    }
    let id = signatures.get(key);
    if (id === undefined) { id = signatures.size; signatures.set(key, id); }
    return id;
  }
  function fold(rows) {
    const opened = (index) => unfolded.some(([a, b]) => a <= index && index <= b);
    // a row of an opened fold matches nothing, so it is never folded again
    const sig = Int32Array.from(rows, (r) => opened(r) ? -1 - r : signature(r));
    const n = rows.length, out = [];
    folds = [];
    let i = 0;
    while (i < n) {
      let bestK = 0, bestReps = 0;
      for (let k = 1; k <= FOLD_MAX && i + FOLD_MIN * k <= n; k++) {
        let reps = 1;
        while (i + (reps + 1) * k <= n) {
          let same = true;
          for (let j = 0; j < k; j++) {
            if (sig[i + j] !== sig[i + reps * k + j]) { same = false; break; }
          }
          if (!same) break;
          reps++;
        }
        if (reps >= FOLD_MIN && reps * k > bestReps * bestK) { bestK = k; bestReps = reps; }
      }
      if (bestK) {
        for (let j = 0; j < bestK; j++) out.push(rows[i + j]);
        const first = rows[i + bestK], last = rows[i + bestReps * bestK - 1];
        folds.push({ first, last, size: bestK, count: bestReps - 1 });
        out.push(-folds.length);
        i += bestReps * bestK;
      } else {
        out.push(rows[i]); i++;
      }
    }
    return out;
  }
  function foldOf(index) {  // the fold hiding row `index`, if any
    return folds.find((f) => f.first <= index && index <= f.last);
  }
  form.addEventListener("input", applyFilters);
  form.addEventListener("submit", (e) => { e.preventDefault(); applyFilters(); });

  // lanes as vertical lines behind the rows
  for (const name of D.lanes) {
    const line = document.createElement("div");
    line.className = "lane"; line.style.left = laneX[name] + "px";
    canvas.appendChild(line);
  }

  const seqRow = new Map();  // message number -> index in D.rows
  D.rows.forEach((row, i) => { if (row[0] === MESSAGE) seqRow.set(row[1], i); });
  const drawn = new Map();
  function draw() {
    let first = 0, last = shown.length;
    if (shown.length > DRAW_ALL) {
      first = Math.max(0, Math.floor(chart.scrollTop / ROW_H) - OVERSCAN);
      last = Math.min(shown.length, Math.ceil((chart.scrollTop + chart.clientHeight) / ROW_H)
                      + OVERSCAN);
      for (const [i, el] of drawn) {
        if (i < first || i >= last) { el.remove(); drawn.delete(i); }
      }
    }
    const fragment = document.createDocumentFragment();
    for (let i = first; i < last; i++) {
      if (drawn.has(i)) continue;
      const el = shown[i] < 0 ? foldElement(folds[-shown[i] - 1])
                              : rowElement(D.rows[shown[i]], shown[i], i);
      el.style.top = i * ROW_H + "px";
      drawn.set(i, el); fragment.appendChild(el);
    }
    canvas.appendChild(fragment);
  }
  let pending = false;
  chart.addEventListener("scroll", () => {
    if (shown.length > DRAW_ALL && !pending) {
      pending = true; requestAnimationFrame(() => { pending = false; draw(); });
    }
  });

  const seconds = (us) => (us / 1e6).toFixed(6);
  function duration(us) {
    if (us < 1000) return us + " µs";
    if (us < 1e6) return (us / 1000).toFixed(us < 1e4 ? 2 : 1) + " ms";
    return (us / 1e6).toFixed(3) + " s";
  }
  const SEVERITY = ["", "warning", "error"];

  function rowElement(row, index, position) {
    const el = document.createElement("div");
    el.dataset.row = index;
    const kind = row[0];
    const time = `<span class="time">${seconds(row[3])}</span>`;
    if (kind === MESSAGE) {
      const shape = D.shapes[row[M.shape]];
      const [from, to, stroke] = ends(row);
      const y = 23, left = Math.min(from, to), width = Math.abs(to - from);
      const tip = to > from ? to - 7 : to + 7;
      const severity = row[M.severity];
      el.className = "row m" + (severity ? " sev" + severity : "");
      el.dataset.seq = row[1];
      let bracket = "";
      if (row[M.answers] >= 0) {
        const request = rowAt.get(seqRow.get(row[M.answers]));
        if (request !== undefined && position - request <= BRACKET_ROWS) {
          const up = (position - request) * ROW_H, bx = laneX["front-end"] - 14;
          bracket = `<path class="pair" d="M${bx + 8} ${y - up} H${bx} V${y} H${bx + 8}" ` +
            `fill="none" stroke="#999" stroke-width="1"/>`;
        }
      }
      el.innerHTML = time + `<span class="seq">${row[1]}</span>` +
        `<svg width="${sideX}" height="${ROW_H}">${bracket}<g class="arrow" data-seq="${row[1]}">` +
        `<line x1="${from}" y1="${y}" x2="${tip}" y2="${y}" stroke="${stroke}" stroke-width="1.6"/>` +
        `<polygon points="${to},${y} ${tip},${y - 4} ${tip},${y + 4}" fill="${stroke}"/></g></svg>` +
        `<div class="label" style="left:${left + 8}px;width:${width - 16}px">` +
        `<b>${esc(text(row[M.label]))}</b> <span class="sum">${esc(text(shape[S.summary]))}` +
        `</span>${row[M.fds] >= 0 ? " <span class=sum>" + esc(T[D.fds[row[M.fds]][0]]) +
        "</span>" : ""}</div>` + `<div class="side" style="left:${sideX}px">` +
        (severity ? `<span class="finding ${SEVERITY[severity]}" data-seq="${row[1]}">` +
          `${SEVERITY[severity]}</span>` : "") +
        (row[M.rtt_us] >= 0 ? `<span class="rtt">↩ #${row[M.answers]} in ${duration(row[M.rtt_us])}` +
          "</span>" : "") +
        (row[M.milestones] >= 0 ? `<span class="ms">${esc(T[row[M.milestones]])}</span>` : "") +
        "</div>";
      el.title = text(row[M.label]) + " " + text(shape[S.summary]) +
        (row[M.findings] >= 0 ? "\n" + T[row[M.findings]] : "");
    } else if (kind === SESSION) {
      el.className = "row session";
      el.innerHTML = `<span class="text">${esc(sessionTitle(row[2]))}</span>`;
    } else if (kind === GAP) {
      el.className = "row gap";
      const mid = (laneX["front-end"] + laneX["back-end"]) / 2 - 80;
      el.innerHTML = time + `<svg width="${sideX}" height="${ROW_H}">` + D.lanes.map((n) =>
        `<path d="M${laneX[n] - 6} 11 l12 -4 M${laneX[n] - 6} 19 l12 -4" stroke="#888"/>`)
        .join("") + "</svg>" +
        `<span class="text" style="left:${mid}px">⋯ ${duration(row[4])} idle, collapsed ⋯</span>`;
      el.title = `nothing on the wire for ${duration(row[4])}`;
    } else if (kind === STREAM) {
      el.className = "row note stream";
      const lane = T[row[4]], from = laneX[T[row[5]] === "frontend" ? "front-end" : "back-end"];
      el.innerHTML = time + `<span class="seq">${row[1]}</span><svg width="${sideX}" ` +
        `height="${ROW_H}"><line x1="${from}" y1="20" x2="${laneX[lane]}" y2="20" ` +
        `stroke="var(--stream)" stroke-dasharray="4 3"/></svg><span class="text" ` +
        `style="left:${sideX}px">${esc(lane)}: ${row[6]} bytes</span>`;
    } else {
      const severity = kind === FINDING ? row[5] : 0;
      el.className = "row note" + (kind === SNAPSHOT ? " snapshot" : "") +
        (kind === FINDING ? " sev" + severity : "");
      const label = kind === SNAPSHOT ? "◉ " + T[row[4]] + (row[5] >= 0 ? " (click: rings)" : "")
                                      : T[row[4]];
      el.innerHTML = time + `<span class="text" style="left:${laneX["front-end"] + 10}px;` +
        `max-width:${sideX + 300 - laneX["front-end"]}px">` +
        (severity ? `<span class="finding ${SEVERITY[severity]}" data-seq="${row[1] || ""}">` +
          `${SEVERITY[severity]}</span>` : "") + esc(label) + "</span>";
      el.title = T[row[4]];
    }
    return el;
  }

  function foldElement(f) {
    const el = document.createElement("div");
    el.className = "row fold";
    el.dataset.first = f.first;
    const seqs = D.rows.slice(f.first, f.last + 1).filter((r) => r[0] === MESSAGE);
    const span = seqs.length ? `, #${seqs[0][1]} to #${seqs[seqs.length - 1][1]}` : "";
    el.innerHTML = `<span class="time">${seconds(D.rows[f.first][3])}</span>` +
      `<span class="text" style="left:${laneX["front-end"] - 10}px">⟳ the ` +
      `${f.size === 1 ? "row" : f.size + " rows"} above, ${f.count.toLocaleString()} more ` +
      `time${f.count === 1 ? "" : "s"}${span} (click to unfold)</span>`;
    el.title = "repeats of the same exchange, folded";
    return el;
  }

  const sessionInfo = new Map(D.sessions.map((s) => [s.session, s]));
  function sessionTitle(number) {
    const s = sessionInfo.get(number) || {};
    const who = (side) => s.start && s.start[side] && s.start[side].program
      ? `${s.start[side].program} (pid ${s.start[side].pid})` : side;
    const end = s.end && s.end.reason ? `, ended: ${s.end.reason}` : "";
    return `Session ${number}: ${who("frontend")} ⇄ ${who("backend")}, ` +
      `${s.messages || 0} messages${end}`;
  }

  function verbose(row) {  // show -V's lines, from the parts the model made with render
    const shape = D.shapes[row[M.shape]];
    const lines = [D.verbose_title.replace("{seq}", row[1]).replace("{session}", row[2])
      .replace("{channel}", T[shape[S.channel]]).replace("{sender}", T[shape[S.sender]])
      .replace("{role}", T[shape[S.role]]), T[shape[S.header]]];
    if (row[M.answers] >= 0) lines.push(D.verbose_answers.replace("{answers}", row[M.answers]));
    if (row[M.fds] >= 0) lines.push(T[D.fds[row[M.fds]][1]]);
    if (T[shape[S.payload]]) lines.push(T[shape[S.payload]]);
    if (row[M.findings] >= 0) lines.push(T[row[M.findings]]);
    return lines.join("\n");
  }
  function select(index) {
    const row = D.rows[index];
    canvas.querySelectorAll(".row.selected").forEach((e) => e.classList.remove("selected"));
    const el = canvas.querySelector(`.row[data-row="${index}"]`);
    if (el) el.classList.add("selected");
    let body;
    if (row[0] === MESSAGE) {
      body = `#${row[1]} ${text(row[M.label])}` + (row[M.rtt_us] >= 0
        ? `, answered after ${duration(row[M.rtt_us])}` : "") +
        (row[M.milestones] >= 0 ? ` (milestone: ${T[row[M.milestones]]})` : "") +
        "\n" + verbose(row);
    } else if (row[0] === SNAPSHOT) {
      body = row[5] >= 0 ? T[row[5]] : T[row[4]] + "\n(no rings view: the trace was read from "
        + "stdin, or the snapshot holds no rings)";
    } else if (row[0] === SESSION) {
      body = sessionTitle(row[2]);
    } else if (row[0] === GAP) {
      body = `${duration(row[4])} without a message in session ${row[2]} (collapsed)`;
    } else {
      body = T[row[4]] || "";
    }
    detail.textContent = body;
    detail.parentElement.scrollTop = 0;
  }
  canvas.addEventListener("click", (e) => {
    const el = e.target.closest(".row");
    if (!el) return;
    if (el.dataset.first !== undefined) {
      unfold(folds.find((f) => f.first === Number(el.dataset.first)));
      return;
    }
    select(Number(el.dataset.row));
  });
  function unfold(f) {
    unfolded.push([f.first, f.last]);
    const top = chart.scrollTop;
    applyFilters();
    chart.scrollTop = top;
    draw();
  }

  function goTo(seq) {  // #seq=N: scroll to message N and show it
    const index = seqRow.get(seq);
    if (index === undefined) return;
    const hidden = rowAt.has(index) ? undefined : foldOf(index);
    if (hidden) { unfolded.push([hidden.first, hidden.last]); applyFilters(); }
    const position = rowAt.get(index);
    if (position === undefined) return;
    chart.scrollTop = Math.max(0, position * ROW_H - chart.clientHeight / 3);
    draw(); select(index);
  }
  function fromHash() {
    // #seq=N selects message N; request=, channel=, from=, session=, findings=1 set the
    // filters (a link to a view of the chart)
    const params = new URLSearchParams(location.hash.slice(1));
    const names = { request: "request", channel: "channel", from: "sender", session: "session" };
    let filtered = false;
    for (const [key, name] of Object.entries(names)) {
      if (params.has(key)) { form[name].value = params.get(key); filtered = true; }
    }
    for (const name of ["findings", "fold"]) {
      if (params.has(name)) { form[name].checked = params.get(name) === "1"; filtered = true; }
    }
    if (filtered) applyFilters();
    if (params.has("seq")) goTo(Number(params.get("seq")));
    if (params.has("snapshot")) {  // #snapshot=N: snapshot N's marker, with its rings
      const number = Number(params.get("snapshot"));
      const index = D.rows.findIndex((r) => r[0] === SNAPSHOT && r[6] === number);
      const position = rowAt.get(index);
      if (position !== undefined) {
        chart.scrollTop = Math.max(0, position * ROW_H - chart.clientHeight / 3);
        draw(); select(index);
      }
    }
  }
  window.addEventListener("hashchange", fromHash);
  applyFilters();
  fromHash();
  document.body.dataset.ready = "1";
})();
