// steptrace UI: a run's lineage (the run it was forked from or replays, the runs made
// from it) and "fork from here" (the command and the Python call that fork the run at a
// step, with its input to edit). Uses app.js's helpers (el, link, fmt, status, copyText);
// the page only shows commands: nothing here writes to the store.
"use strict";

// --- lineage --------------------------------------------------------------------------

function diffLink(source, runId) {
  return link(`/diff?a=${encodeURIComponent(source)}&b=${encodeURIComponent(runId)}`, "Diff with source", "diff-source");
}

function sourceLine(label, source, runId, at) {
  return el("div", { class: "lin", "data-relation": label },
    label === "fork" ? "forked from " : "replay of ",
    link("/runs/" + source, fmt.short(source), "mono source-link"),
    at ? el("span", {}, " at ", el("code", { class: "fork-at", text: at })) : null,
    " · ", diffLink(source, runId));
}

function codeVersion(version) {
  if (version === null || typeof version !== "object") return fmt.value(version);
  // By name: a PostgreSQL store keeps no key order.
  return Object.keys(version).sort().filter((k) => version[k] !== null && version[k] !== undefined)
    .map((k) => `${k} ${fmt.value(version[k])}`).join(", ");
}

// Where the run came from and what was made from it; null when there is nothing to say.
function lineageView(run) {
  const lines = [];
  if (run.forked_from) lines.push(sourceLine("fork", run.forked_from, run.run_id, run.forked_at));
  if (run.replay_of) lines.push(sourceLine("replay", run.replay_of, run.run_id, null));
  const facts = [];
  if (run.resume_count) facts.push(el("span", { class: "retry", id: "resumed", text: `resumed ${run.resume_count} time${run.resume_count === 1 ? "" : "s"}` }));
  if (run.entry_point) facts.push(el("span", {}, "entry point ", el("b", { class: "mono", id: "entry-point", text: run.entry_point })));
  if (run.code_version) facts.push(el("span", {}, "code ", el("b", { class: "mono", id: "code-version", text: codeVersion(run.code_version) })));
  if (facts.length) lines.push(el("div", { class: "lin facts" }, facts));
  const derived = run.derived || [];
  if (derived.length) {
    lines.push(el("div", { class: "lin" }, el("span", { class: "muted", text: `derived runs (${derived.length})` }),
      el("ul", { class: "derived", id: "derived-runs" }, derived.map((d) => el("li", { "data-run": d.run_id, "data-relation": d.relation },
        link("/runs/" + d.run_id, fmt.short(d.run_id), "mono"), " ",
        el("span", { class: "pill", text: d.relation === "fork" && d.forked_at ? `fork at ${d.forked_at}` : d.relation }), " ",
        status(d.status), " ", el("span", { class: "muted", text: fmt.time(d.started_at) }))))));
  }
  return lines.length ? el("div", { class: "lineage", id: "lineage" }, lines) : null;
}

// --- fork from here -------------------------------------------------------------------

// A word for a POSIX shell: as it is when nothing in it is special, else in single
// quotes (a quote inside as '\'').
function shellWord(text, always) {
  if (!always && /^[A-Za-z0-9_@%+=:,.\/-][A-Za-z0-9_@%+=:,.\/#-]*$/.test(text)) return text;
  return "'" + text.replace(/'/g, "'\\''") + "'";
}

// JSON text rewritten outside its strings: whitespace dropped, and with `python`,
// true/false/null as Python spells them and a space after each , and :. Strings and
// numbers stay as written (a number is never read back into a float).
function rewriteJson(text, python) {
  let out = "", i = 0;
  const words = { true: "True", false: "False", null: "None" };
  while (i < text.length) {
    const ch = text[i];
    if (ch === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      const token = text.slice(i, j + 1);
      // Python reads JSON's escapes but one (\/): a string is written again for it.
      out += python ? JSON.stringify(JSON.parse(token)) : token; i = j + 1;
    } else if (/\s/.test(ch)) i++;
    else if (python && (ch === "," || ch === ":")) { out += ch + " "; i++; }
    else if (python && /[a-z]/.test(ch)) {
      const word = text.slice(i).match(/^[a-z]+/)[0];
      out += words[word] || word; i += word.length;
    } else { out += ch; i++; }
  }
  return out;
}

// The command and the Python call for `input` (the text in the box), or the reason
// there are none.
function forkCommands(runId, stepKey, input) {
  let value;
  try { value = JSON.parse(input); } catch (e) { return { error: "not valid JSON: " + e.message }; }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { error: "the input must be a JSON object: the step's arguments by name" };
  }
  const json = rewriteJson(input, false);
  return {
    command: `steptrace fork ${shellWord(runId)} --from ${shellWord(stepKey)} --input ${shellWord(json, true)}`,
    python: `st.fork(${JSON.stringify(runId)}, from_step=${JSON.stringify(stepKey)}, input=${rewriteJson(json, true)})`,
    placeholders: json.includes('"__steptrace__"') || json.includes("[REDACTED]"),
  };
}

// The "Fork from here" button of a step's detail, and the panel it opens.
function forkSection(runId, stepKey, recordedInput) {
  const recorded = recordedInput === null || recordedInput === undefined ? {} : recordedInput;
  const box = el("textarea", { id: "fork-input", class: "fork-input", spellcheck: "false",
    rows: String(Math.min(16, Math.max(3, JSON.stringify(recorded, null, 2).split("\n").length))) });
  box.value = JSON.stringify(recorded, null, 2);
  const error = el("div", { class: "err", id: "fork-error" });
  const warning = el("div", { class: "warnline", id: "fork-warning" });
  const command = el("pre", { class: "block", id: "fork-command" });
  const python = el("pre", { class: "block", id: "fork-python" });
  const copy = el("button", { class: "copy", id: "fork-copy", title: "copy the command" }, "copy");
  copy.addEventListener("click", () => copyText(command.textContent, copy));
  const update = () => {
    const made = forkCommands(runId, stepKey, box.value);
    error.textContent = made.error || "";
    command.textContent = made.command || "";
    python.textContent = made.python || "";
    command.hidden = python.hidden = !!made.error;
    copy.disabled = !!made.error;
    warning.textContent = made.placeholders ? "The input holds placeholders (redacted, cut or unstorable values): the fork gets them as they are." : "";
  };
  box.addEventListener("input", update);
  update();
  const panel = el("div", { class: "fork", id: "fork-panel", hidden: true },
    el("h3", {}, "Input of ", el("code", { text: stepKey }), el("span", { class: "muted", text: " (JSON: the step's arguments by name; edit to fork with another)" })),
    box, error, warning,
    el("div", { class: "sh" }, el("h3", { text: "Command" }), copy), command,
    el("h3", { text: "Python" }), python,
    el("p", { class: "muted", text: "Run it where the workflow's code can be imported (--entry module:function names it when it has moved), with this store configured (STEPTRACE_STORE or --store). The UI itself runs nothing." }));
  const toggle = el("button", { id: "fork-toggle", title: "the command that forks this run at this step" }, "Fork from here");
  toggle.addEventListener("click", () => {
    panel.hidden = !panel.hidden;
    toggle.classList.toggle("on", !panel.hidden);
    if (!panel.hidden) box.focus();
  });
  return el("div", { class: "section", "data-section": "Fork" },
    el("div", { class: "sh" }, el("h2", { text: "Fork" }), toggle), panel);
}
