// The LogHarbor web console: browse projects and logstores, search and analyse logs
// with a histogram, follow new logs live, and look at shards and index settings.
// Everything goes through the signed native API (api.js); log text is only ever
// set as text, never parsed as HTML.

import { Api, ApiError, serverNow } from "./api.js";

const CREDENTIALS = "logharbor.credentials"; // sessionStorage: gone with the tab
const RANGES = [
  ["5m", "last 5 minutes", 300],
  ["15m", "last 15 minutes", 900],
  ["1h", "last hour", 3600],
  ["6h", "last 6 hours", 21600],
  ["24h", "last 24 hours", 86400],
  ["7d", "last 7 days", 604800],
  ["30d", "last 30 days", 2592000],
];
const PAGE_LINES = 50; // logs per page of search results
const DEFAULT_SQL_ROWS = 100; // what the server answers for SQL without LIMIT
const CONTEXT_LOGS = 10; // logs shown before and after a log's position
const TAIL_LIMIT = 500; // live tail: older entries are dropped past this many
const TAIL_IDLE_MS = 1000; // live tail: pause between rounds that found nothing...
const TAIL_LONG_POLL_MS = 10000; // ...or, following one shard, how long the server may wait
const TAIL_LIST_MS = 5000; // live tail: how often to look for new shards (splits, merges)
const TAIL_RETRY_MS = [1000, 2000, 5000, 10000]; // live tail: waits after failures
const NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/; // projects and logstores (docs/api.md)

const root = document.getElementById("app");
let api = null;
let running = null; // the AbortController of the view on screen

// ------------------------------------------------------------------- helpers

/** An element with attributes (on* are listeners) and children (strings as text). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "value") node.value = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function link(hash, text) {
  return el("a", { href: hash }, text);
}

function projectHash(project) {
  return `#/projects/${encodeURIComponent(project)}`;
}

function logstoreHash(project, logstore, params = {}) {
  const query = new URLSearchParams(params).toString();
  return `${projectHash(project)}/logstores/${encodeURIComponent(logstore)}${query ? "?" + query : ""}`;
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** Local time, to the millisecond: 2026-12-06 14:03:27.415 */
function formatTime(ms) {
  const d = new Date(ms);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
  );
}

function formatSeconds(seconds) {
  return formatTime(seconds * 1000).slice(0, 19);
}

function errorBox(error) {
  if (error instanceof ApiError) {
    return el(
      "div",
      { class: "error", role: "alert" },
      el("strong", {}, error.code),
      " ",
      // a syntax error shows the query with a caret under the place: keep its lines
      el("span", { class: "message" }, error.message.replace(/^[^:]*: /, "")),
      error.requestId ? el("span", { class: "muted" }, ` (request ${error.requestId})`) : null,
    );
  }
  return el("div", { class: "error", role: "alert" }, String(error?.message ?? error));
}

/** The part of a query before its SQL: "status: 500 | select ..." → "status: 500". */
export function searchPart(query) {
  let quoted = false;
  for (let i = 0; i < query.length; i++) {
    if (query[i] === '"') quoted = !quoted;
    else if (query[i] === "|" && !quoted) return query.slice(0, i).trim();
  }
  return query.trim();
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

// ------------------------------------------------------------------- routing

/** The view the address names: {parts, params}, or null for one that names none. */
function parseHash() {
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  let parts;
  try {
    parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  } catch {
    return null; // malformed percent-encoding
  }
  // [projects, P, logstores, L]: names only as the API allows them
  const names = [parts[1], parts[3]].filter((n) => n !== undefined);
  if (!names.every((n) => NAME.test(n))) return null;
  return { parts, params: Object.fromEntries(new URLSearchParams(query)) };
}

async function route() {
  running?.abort();
  running = new AbortController();
  const signal = running.signal;
  if (api === null) {
    renderSignIn();
    return;
  }
  const view = parseHash();
  const main = el("main", { id: "main" });
  if (view === null) {
    root.replaceChildren(header([link("#/", "Projects")]), main);
    main.append(el("p", { class: "error", id: "not-found" }, "This address names no project or logstore."));
    return;
  }
  const { parts, params } = view;
  const crumbs = [link("#/", "Projects")];
  if (parts[0] === "projects" && parts[1]) crumbs.push(link(projectHash(parts[1]), parts[1]));
  if (parts[2] === "logstores" && parts[3]) {
    crumbs.push(link(logstoreHash(parts[1], parts[3]), parts[3]));
  }
  root.replaceChildren(header(crumbs), main);
  try {
    if (parts[0] === "projects" && parts[1] && parts[2] === "logstores" && parts[3]) {
      await renderLogstore(main, parts[1], parts[3], params, signal);
    } else if (parts[0] === "projects" && parts[1]) {
      await renderLogstores(main, parts[1]);
    } else {
      await renderProjects(main);
    }
  } catch (error) {
    if (signal.aborted) return;
    if (api.credentials && isKeyRefused(error)) {
      // the key was revoked or changed since sign-in
      sessionStorage.removeItem(CREDENTIALS);
      api = null;
      renderSignIn(errorBox(error));
      return;
    }
    main.append(errorBox(error));
  }
}

function isKeyRefused(error) {
  return error instanceof ApiError && ["Unauthorized", "SignatureNotMatch"].includes(error.code);
}

function header(crumbs) {
  const nav = el("nav", { class: "crumbs", "aria-label": "breadcrumb" });
  crumbs.forEach((crumb, i) => {
    if (i) nav.append(el("span", { class: "sep" }, "/"));
    nav.append(crumb);
  });
  const signOut = api?.credentials
    ? el(
        "button",
        {
          class: "link",
          id: "sign-out",
          onclick: () => {
            sessionStorage.removeItem(CREDENTIALS);
            api = null;
            route();
          },
        },
        `Sign out ${api.credentials.keyId}`,
      )
    : null;
  return el("header", {}, el("a", { class: "brand", href: "#/" }, "LogHarbor"), nav, signOut);
}

// ------------------------------------------------------------------- sign in

function renderSignIn(message = null) {
  const keyId = el("input", { id: "key-id", name: "keyId", autocomplete: "username", required: true });
  const secret = el("input", {
    id: "key-secret",
    name: "secret",
    type: "password",
    autocomplete: "off", // the key lives in this tab only: no password manager
    required: true,
  });
  const status = el("div", { class: "status" }, message ?? "");
  const form = el(
    "form",
    {
      class: "sign-in",
      onsubmit: async (event) => {
        event.preventDefault();
        const candidate = new Api({ keyId: keyId.value.trim(), secret: secret.value.trim() });
        status.replaceChildren("Signing in…");
        try {
          await candidate.projects();
        } catch (error) {
          status.replaceChildren(errorBox(error));
          return;
        }
        sessionStorage.setItem(CREDENTIALS, JSON.stringify(candidate.credentials));
        api = candidate;
        route();
      },
    },
    el("h1", {}, "LogHarbor"),
    el("p", { class: "muted" }, "Sign in with an access key (the server prints its first one when it starts)."),
    el("label", { for: "key-id" }, "Access key id"),
    keyId,
    el("label", { for: "key-secret" }, "Access key secret"),
    secret,
    el("button", { type: "submit", id: "sign-in" }, "Sign in"),
    status,
  );
  root.replaceChildren(el("main", { class: "center" }, form));
  keyId.focus();
}

// ------------------------------------------------------------------- lists

function table(headings, rows) {
  return el(
    "table",
    {},
    el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))),
    el(
      "tbody",
      {},
      rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c)))),
    ),
  );
}

/** A one-line form that creates something, then goes where ``after`` says; the
 * server's refusal (a bad name, one taken) is shown beside it. */
function createForm(id, fields, label, create, after) {
  const status = el("span", { class: "form-status" });
  const form = el(
    "form",
    {
      class: "toolbar create",
      id,
      onsubmit: async (event) => {
        event.preventDefault();
        const values = Object.fromEntries(fields.map((f) => [f.name, f.value.trim()]));
        status.replaceChildren("…");
        try {
          await create(values);
        } catch (error) {
          status.replaceChildren(errorBox(error));
          return;
        }
        location.hash = after(values);
      },
    },
    fields,
    el("button", { type: "submit" }, label),
    status,
  );
  return form;
}

const NAME_RULE = "lowercase letters, digits, - and _";

async function renderProjects(main) {
  main.append(el("h2", {}, "Projects"));
  const { projects, total } = await api.projects();
  main.append(
    createForm(
      "new-project",
      [
        el("input", { name: "name", placeholder: "new project name", required: true, title: NAME_RULE, "aria-label": "project name" }),
        el("input", { name: "description", placeholder: "description", "aria-label": "description" }),
      ],
      "Create project",
      ({ name, description }) => api.createProject(name, description),
      ({ name }) => projectHash(name),
    ),
  );
  if (!projects.length) {
    main.append(el("p", { class: "muted" }, "No projects yet."));
    return;
  }
  main.append(
    table(
      ["Project", "Description", "Created"],
      projects.map((p) => [link(projectHash(p.name), p.name), p.description, formatSeconds(p.createTime)]),
    ),
  );
  if (total > projects.length) main.append(el("p", { class: "muted" }, `${projects.length} of ${total} shown`));
}

async function renderLogstores(main, project) {
  main.append(el("h2", {}, `Logstores of ${project}`));
  const { logstores, total } = await api.logstores(project);
  main.append(
    createForm(
      "new-logstore",
      [
        el("input", { name: "name", placeholder: "new logstore name", required: true, title: NAME_RULE, "aria-label": "logstore name" }),
        el("input", { name: "shardCount", type: "number", min: 1, max: 256, value: 2, "aria-label": "shards", title: "shards" }),
        el("input", { name: "ttl", type: "number", min: 1, max: 3650, value: 30, "aria-label": "TTL in days", title: "TTL (days)" }),
      ],
      "Create logstore",
      ({ name, shardCount, ttl }) => api.createLogstore(project, { name, shardCount: Number(shardCount), ttl: Number(ttl) }),
      ({ name }) => logstoreHash(project, name, { tab: "index" }), // next: its index
    ),
  );
  if (!logstores.length) {
    main.append(el("p", { class: "muted" }, "No logstores in this project yet."));
    return;
  }
  main.append(
    table(
      ["Logstore", "Shards", "TTL (days)", "Created"],
      logstores.map((l) => [
        link(logstoreHash(project, l.name), l.name),
        l.shardCount,
        l.ttl,
        formatSeconds(l.createTime),
      ]),
    ),
  );
  if (total > logstores.length) main.append(el("p", { class: "muted" }, `${logstores.length} of ${total} shown`));
}

// ------------------------------------------------------------------- logstore

const TABS = [
  ["search", "Search"],
  ["tail", "Live tail"],
  ["shards", "Shards"],
  ["groups", "Consumer groups"],
  ["index", "Index"],
];

async function renderLogstore(main, project, logstore, params, signal) {
  const tab = TABS.some(([id]) => id === params.tab) ? params.tab : "search";
  main.append(
    el("h2", {}, logstore),
    el(
      "nav",
      { class: "tabs" },
      TABS.map(([id, label]) =>
        el("a", { href: logstoreHash(project, logstore, { tab: id }), class: id === tab ? "active" : null, id: `tab-${id}` }, label),
      ),
    ),
  );
  const body = el("section", { class: "tab-body" });
  main.append(body);
  if (tab === "search") await renderSearch(body, project, logstore, params, signal);
  else if (tab === "tail") renderTail(body, project, logstore, signal);
  else if (tab === "shards") await renderShards(body, project, logstore);
  else if (tab === "groups") await renderGroups(body, project, logstore);
  else await renderIndex(body, project, logstore);
}

// ------------------------------------------------------------------- search

async function renderSearch(body, project, logstore, params, signal) {
  const range = RANGES.some(([id]) => id === params.range) ? params.range : "15m";
  const custom = /^\d+$/.test(params.from ?? "") && /^\d+$/.test(params.to ?? "");
  const offset = Math.max(0, Number.parseInt(params.offset ?? "0", 10) || 0);
  const newestFirst = params.order !== "oldest";
  const input = el("input", {
    id: "query",
    class: "query",
    value: params.q ?? "",
    placeholder: "* · status: 500 and path: /api* · error | select path, count(*) c group by path order by c desc",
    spellcheck: "false",
    "aria-label": "query",
  });
  const select = el(
    "select",
    { id: "range", "aria-label": "time range" },
    custom
      ? el("option", { value: "custom", selected: true }, `${formatSeconds(+params.from)} – ${formatSeconds(+params.to)}`)
      : null,
    RANGES.map(([id, label]) => el("option", { value: id, selected: !custom && id === range }, label)),
  );
  const order = el("input", { type: "checkbox", id: "newest-first", checked: newestFirst });
  const form = el(
    "form",
    {
      class: "search",
      onsubmit: (event) => {
        event.preventDefault();
        const chosen = select.value === "custom" ? { from: params.from, to: params.to } : { range: select.value };
        location.hash = logstoreHash(project, logstore, {
          tab: "search",
          q: input.value,
          ...chosen,
          order: order.checked ? "newest" : "oldest",
          run: String(Date.now()), // a new hash, so that the same query runs again
        });
      },
    },
    input,
    select,
    el("label", { class: "check" }, order, " newest first"),
    el("button", { type: "submit", id: "run" }, "Search"),
  );
  const results = el("div", { id: "results" });
  body.append(form, results);
  if (params.q === undefined) {
    results.append(
      el("p", { class: "muted" }, "Type a search (or * for everything), optionally followed by | and SQL. See docs/search.md for the syntax."),
    );
    return;
  }
  const query = params.q.trim() || "*";
  let from, to;
  if (custom) {
    [from, to] = [Number(params.from), Number(params.to)];
  } else {
    to = Math.floor(serverNow() / 1000) + 1;
    from = to - RANGES.find(([id]) => id === range)[2];
  }
  // the pages of this search keep its window, though newer logs arrive meanwhile
  const fixed = { ...params, from: String(from), to: String(to) };
  results.append(el("p", { class: "muted" }, "Searching…"));
  const request = { query, from, to, line: PAGE_LINES, offset, reverse: newestFirst };
  let answer, histogram;
  try {
    [answer, histogram] = await Promise.all([
      api.query(project, logstore, request, signal),
      api.histogram(project, logstore, { query: searchPart(query) || "*", from, to }, signal).catch((error) => error),
    ]);
  } catch (error) {
    if (signal.aborted) return;
    results.replaceChildren(errorBox(error));
    if (error instanceof ApiError && error.code === "IndexConfigNotExist") results.append(noIndexHint(project, logstore));
    return;
  }
  if (signal.aborted) return;
  results.replaceChildren();
  if (!(histogram instanceof Error)) {
    // a bar opens its own stretch of time
    const zoom = (bucket) => logstoreHash(project, logstore, { ...params, from: String(bucket.from), to: String(bucket.to), offset: "0" });
    results.append(renderHistogram(histogram, zoom));
  }
  const meta = answer.meta;
  if (meta.hasSql) {
    results.append(
      el(
        "p",
        { class: "summary", id: "summary" },
        `${meta.count} rows · ${meta.elapsedMs} ms${meta.complete ? "" : " · partial"}`,
        // as in SLS, SQL without LIMIT answers its first 100 rows
        meta.count === DEFAULT_SQL_ROWS && !/\blimit\b/i.test(query.slice(searchPart(query).length))
          ? " · the first 100 rows: add LIMIT n for more"
          : "",
      ),
      el("div", { class: "scroll" }, table(meta.keys, answer.rows.map((row) => row.map(cell)))),
    );
    return;
  }
  const shown = answer.logs.length;
  results.append(
    el(
      "p",
      { class: "summary", id: "summary" },
      `${meta.matched} logs matched`,
      shown ? ` · ${offset + 1}–${offset + shown} shown` : "",
      ` · ${meta.elapsedMs} ms`,
      meta.complete ? "" : " · partial (the index is still catching up)",
    ),
    el("div", { class: "logs", id: "logs" }, answer.logs.map((log) => logEntry(log, project, logstore))),
    pager(project, logstore, fixed, offset, shown, meta.matched),
  );
}

function cell(value) {
  if (value === null) return el("span", { class: "muted" }, "null");
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function pager(project, logstore, params, offset, shown, matched) {
  const nav = el("nav", { class: "pager" });
  if (offset > 0) {
    const last = Math.max(0, Math.floor((matched - 1) / PAGE_LINES) * PAGE_LINES);
    const previous = Math.max(0, Math.min(offset - PAGE_LINES, last));
    nav.append(link(logstoreHash(project, logstore, { ...params, offset: String(previous) }), "‹ previous"));
  }
  if (offset + shown < matched) {
    nav.append(link(logstoreHash(project, logstore, { ...params, offset: String(offset + shown) }), "next ›"));
  }
  return nav;
}

function renderHistogram(answer, zoom) {
  const buckets = answer.buckets;
  const highest = Math.max(1, ...buckets.map((b) => b.count));
  const bars = el("div", { class: "bars", id: "histogram" });
  for (const bucket of buckets) {
    const height = bucket.count ? Math.max(2, Math.round((bucket.count / highest) * 100)) : 0;
    const bar = el("div", {
      class: "bar",
      title: `${formatSeconds(bucket.from)} – ${formatSeconds(bucket.to)}: ${bucket.count}`,
      "data-count": bucket.count,
    });
    bar.style.height = `${height}%`;
    bars.append(el("a", { class: "slot", href: zoom(bucket), "aria-label": bar.title }, bar));
  }
  const first = buckets[0];
  const last = buckets[buckets.length - 1];
  return el(
    "figure",
    { class: "histogram" },
    bars,
    first ? el("figcaption", {}, el("span", {}, formatSeconds(first.from)), el("span", {}, `${answer.total} logs`), el("span", {}, formatSeconds(last.to))) : null,
  );
}

/** One log: its time and fields on a line; opened, every field, tag and where it is,
 * and (for search results) a button for the logs around it in its shard. */
function logEntry(log, project = null, logstore = null) {
  const fields = log.contents.map(([k, v]) => el("span", { class: "field" }, el("span", { class: "key" }, k), "=", v));
  const details = [
    ...(log.topic ? [["__topic__", log.topic]] : []),
    ...(log.source ? [["__source__", log.source]] : []),
    ...Object.entries(log.tags ?? {}).map(([k, v]) => [`__tag__:${k}`, v]),
    ...(log.shardId === undefined ? [] : [["shard", String(log.shardId)], ["cursor", log.cursor], ["index", String(log.index)]]),
    ...log.contents,
  ];
  const entry = el(
    "details",
    { class: "log" },
    el("summary", {}, el("time", {}, formatTime(Number(log.timeNs) / 1e6)), " ", fields),
    el("dl", {}, details.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
  );
  if (project !== null && log.cursor !== undefined) {
    const around = el("div", { class: "context" });
    const button = el("button", { type: "button", class: "link context-button" }, "Logs around this one");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const { before, after } = await api.context(project, logstore, log, CONTEXT_LOGS);
        const here = logEntry(log);
        here.classList.add("here");
        around.replaceChildren(
          el("p", { class: "muted" }, `${before.length} before and ${after.length} after it in shard ${log.shardId}`),
          el("div", { class: "logs" }, before.map((l) => logEntry(l)), here, after.map((l) => logEntry(l))),
        );
      } catch (error) {
        around.replaceChildren(errorBox(error));
      } finally {
        button.disabled = false;
      }
    });
    entry.append(el("div", { class: "entry-actions" }, button), around);
  }
  return entry;
}

// ------------------------------------------------------------------- live tail

function renderTail(body, project, logstore, signal) {
  const filter = el("input", { id: "tail-filter", placeholder: "show only entries containing…", "aria-label": "filter" });
  const status = el("span", { class: "muted", id: "tail-status" }, "starting…");
  const list = el("div", { class: "logs", id: "tail" });
  let paused = false;
  const pause = el("button", { id: "tail-pause", type: "button" }, "Pause");
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    status.textContent = paused ? "paused" : "following…";
  });
  const matches = (entry) => !filter.value || entry.textContent.toLowerCase().includes(filter.value.toLowerCase());
  filter.addEventListener("input", () => {
    for (const entry of list.children) entry.hidden = !matches(entry);
  });
  body.append(
    el("div", { class: "toolbar" }, pause, filter, el("button", { type: "button", onclick: () => list.replaceChildren() }, "Clear"), status),
    el("p", { class: "muted" }, `New logs as they arrive, newest first (the last ${TAIL_LIMIT} kept).`),
    list,
  );
  const show = (group, log) => {
    const entry = logEntry({ ...log, topic: group.topic, source: group.source, tags: group.tags });
    entry.hidden = !matches(entry);
    list.prepend(entry);
    while (list.children.length > TAIL_LIMIT) list.lastElementChild.remove();
  };
  const report = (text) => {
    status.textContent = text;
  };
  follow(project, logstore, signal, show, report, () => paused);
}

/** Pull every shard in turn until ``signal`` aborts: the shards there at the start
 * from their end, shards that appear later (a split or a merge) from their
 * beginning, so that no log written to them is missed; a readonly shard is dropped
 * once read to its end. Failures (a server restart, say) are retried, with waits
 * that grow, and shown until the next success. */
async function follow(project, logstore, signal, show, report, isPaused) {
  const cursors = new Map(); // shard id → next cursor
  const seen = new Set(); // every shard met, followed or not
  const held = []; // [group, log] pulled while paused (the newest TAIL_LIMIT)
  let readonly = new Set();
  let started = false;
  let listed = -Infinity;
  let received = 0;
  let failures = 0;
  while (!signal.aborted) {
    try {
      if (Date.now() - listed > TAIL_LIST_MS) {
        const { shards } = await api.shards(project, logstore);
        for (const shard of shards) {
          if (seen.has(shard.shardId)) continue;
          if (!started && shard.status !== "readwrite") {
            seen.add(shard.shardId); // finished before the tail began
            continue;
          }
          const from = started ? "begin" : "end";
          const { cursor } = await api.cursor(project, logstore, shard.shardId, from);
          cursors.set(shard.shardId, cursor);
          seen.add(shard.shardId);
        }
        readonly = new Set(shards.filter((s) => s.status === "readonly").map((s) => s.shardId));
        started = true;
        listed = Date.now();
      }
      let found = false;
      if (!isPaused()) {
        for (const entry of held.splice(0)) show(...entry);
        for (const [shard, cursor] of [...cursors]) {
          if (signal.aborted) return;
          // one shard: the server holds the pull until data comes (long polling)
          const wait = cursors.size === 1 ? TAIL_LONG_POLL_MS : 0;
          const answer = await api.pull(project, logstore, shard, cursor, wait, signal);
          cursors.set(shard, answer.nextCursor);
          const logs = answer.logGroups.flatMap((group) =>
            group.tooLarge // the server sends such a log group without its logs
              ? [[group, { timeNs: group.receiveTimeNs, contents: [["(log group)", `${group.logCount} logs, too many to show here: read them with format=frames`]] }]]
              : group.logs.map((log) => [group, log]),
          );
          for (const entry of logs.slice(-TAIL_LIMIT)) {
            // the rest would scroll away; what a pull brings back after a pause is
            // held until the tail resumes
            if (isPaused()) held.push(entry);
            else show(...entry);
          }
          held.splice(0, Math.max(0, held.length - TAIL_LIMIT));
          received += logs.length;
          found ||= answer.count > 0;
          if (readonly.has(shard) && answer.nextCursor === answer.endCursor) cursors.delete(shard);
        }
      }
      failures = 0;
      report(`${isPaused() ? "paused" : "following"} ${cursors.size} shards · ${received} logs received`);
      if (!found && (isPaused() || cursors.size !== 1)) await sleep(TAIL_IDLE_MS, signal);
    } catch (error) {
      if (signal.aborted) return;
      const wait = TAIL_RETRY_MS[Math.min(failures, TAIL_RETRY_MS.length - 1)];
      failures += 1;
      report(`${error.message}; trying again in ${wait / 1000} s · ${received} logs received`);
      await sleep(wait, signal);
    }
  }
}

// ------------------------------------------------------------------- shards, index

async function renderShards(body, project, logstore) {
  const { shards } = await api.shards(project, logstore);
  body.append(
    table(
      ["Shard", "Status", "Begin key", "End key", "Created", "Parents", "Children"],
      shards.map((s) => [String(s.shardId), s.status, s.beginKey, s.endKey, formatSeconds(s.createTime), s.parents.join(", "), s.children.join(", ")]),
    ),
  );
}

/** Each consumer group of the logstore: who holds which shard, how far behind each
 * shard is, and where its checkpoint stands. */
async function renderGroups(body, project, logstore) {
  const { consumerGroups } = await api.consumerGroups(project, logstore);
  if (!consumerGroups.length) {
    body.append(el("p", { class: "muted", id: "no-groups" }, "No consumer groups read this logstore."));
    return;
  }
  for (const group of consumerGroups) {
    const [status, { checkpoints }] = await Promise.all([
      api.consumerGroupStatus(project, logstore, group.name),
      api.checkpoints(project, logstore, group.name),
    ]);
    const holders = new Map();
    for (const consumer of status.consumers) {
      for (const shard of consumer.shards) holders.set(String(shard), consumer.name);
    }
    const saved = new Map(checkpoints.map((c) => [String(c.shardId), c]));
    body.append(
      el(
        "section",
        { class: "group", "data-group": group.name },
        el("h3", {}, group.name),
        el(
          "p",
          { class: "muted" },
          `timeout ${group.timeout} s · ${group.inOrder ? "in order" : "any order"} · ${status.consumers.length} consumers`,
        ),
        table(
          ["Shard", "Held by", "Behind (log groups)", "Behind (seconds)", "Checkpoint", "Saved"],
          status.shards.map((lag) => {
            const point = saved.get(String(lag.shard));
            return [
              String(lag.shard),
              holders.get(String(lag.shard)) ?? el("span", { class: "muted" }, "nobody"),
              String(lag.behindLogGroups),
              String(lag.behindSeconds),
              point?.cursor || el("span", { class: "muted" }, "none"),
              point?.updateTime ? formatSeconds(point.updateTime) : "",
            ];
          }),
        ),
      ),
    );
  }
}

function noIndexHint(project, logstore) {
  return el(
    "p",
    { id: "no-index" },
    "This logstore has no index, so it cannot be searched yet. Create one with: ",
    el("code", {}, `logharbor index set ${project} ${logstore}`),
  );
}

// SLS's default separators, full text on: what "logharbor index set" creates
const DEFAULT_INDEX = {
  line: { token: [..." ,'\";=()[]{}?@&<>/:\n\t\r"], caseSensitive: false },
  keys: {},
};

/** The index configuration, editable: created from a default, or changed in place
 * (docs/search.md: a change needs no re-indexing). */
async function renderIndex(body, project, logstore) {
  let current = null;
  try {
    current = await api.index(project, logstore);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) throw error;
  }
  const exists = current !== null;
  const editor = el("textarea", { id: "index-config", class: "config", rows: 18, spellcheck: "false", "aria-label": "index configuration" });
  editor.value = JSON.stringify(exists ? current.config : DEFAULT_INDEX, null, 2);
  const status = el("div", { id: "index-status" });
  const save = el("button", { type: "button", id: "index-save" }, exists ? "Save changes" : "Create the index");
  save.addEventListener("click", async () => {
    let config;
    try {
      config = JSON.parse(editor.value);
    } catch (error) {
      status.replaceChildren(el("div", { class: "error", role: "alert" }, `Not JSON: ${error.message}`));
      return;
    }
    save.disabled = true;
    try {
      await api.saveIndex(project, logstore, config, exists);
      route(); // show what the server kept
    } catch (error) {
      status.replaceChildren(errorBox(error));
    } finally {
      save.disabled = false;
    }
  });
  if (exists) {
    const lag = current.lag.reduce((sum, shard) => sum + shard.behindLogGroups, 0);
    body.append(el("p", { class: "muted", id: "index-lag" }, lag ? `${lag} log groups not indexed yet` : "Every log is indexed."));
  } else {
    body.append(noIndexHint(project, logstore), el("p", { class: "muted" }, "Or create it here, from SLS's defaults below (full text; add keys for fields to compare as numbers or search one by one)."));
  }
  body.append(editor, el("div", { class: "toolbar" }, save), status);
}

// ------------------------------------------------------------------- start

async function start() {
  window.addEventListener("hashchange", route);
  const saved = sessionStorage.getItem(CREDENTIALS);
  if (saved) {
    api = new Api(JSON.parse(saved));
  } else {
    // a server run with --no-auth answers unsigned requests
    const unsigned = new Api(null);
    try {
      await unsigned.projects();
      api = unsigned;
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) {
        root.replaceChildren(el("main", {}, errorBox(error)));
        return;
      }
    }
  }
  await route();
}

if (root) start();
