// The native API from the browser: signed requests (LH1-HMAC-SHA256, as
// docs/api.md#authentication describes and protocol/signing.py implements).

import { hex, hmacSha256, sha256 } from "./sha256.js";

export const PREFIX = "/api/v1";
const ALGORITHM = "LH1-HMAC-SHA256";

/** Percent-encoding per RFC 3986: only A-Z a-z 0-9 - _ . ~ stay as they are. */
export function rfc3986(text) {
  return encodeURIComponent(text).replace(
    /[!'()*]/g,
    (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase(),
  );
}

/** Parameters, each written key=value encoded, sorted by key then value, joined by &. */
export function canonicalQuery(params) {
  const pairs = params.map(([k, v]) => [rfc3986(k), rfc3986(v)]);
  pairs.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join("&");
}

/** A moment as the x-lh-date header writes it: 20261122T023613Z (UTC). */
export function formatDate(moment) {
  return moment.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}

export function stringToSign(method, path, params, contentSha256, date) {
  return [ALGORITHM, method.toUpperCase(), path, canonicalQuery(params), contentSha256, date].join(
    "\n",
  );
}

/** The headers that sign a request: x-lh-date, x-lh-content-sha256, authorization. */
export function signHeaders(credentials, method, path, params, body, moment) {
  const contentSha256 = hex(sha256(body));
  const date = formatDate(moment);
  const signature = hex(
    hmacSha256(credentials.secret, stringToSign(method, path, params, contentSha256, date)),
  );
  return {
    "x-lh-date": date,
    "x-lh-content-sha256": contentSha256,
    authorization: `${ALGORITHM} Credential=${credentials.keyId}, Signature=${signature}`,
  };
}

/** An answer with an error: the API's errorCode, errorMessage and requestId. */
export class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(`${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

// The server's clock minus this browser's, when they differ by more than a minute:
// the server refuses requests dated 15 minutes off its clock, and "the last hour"
// means the server's last hour. Learned from the Date of every answer.
let clockOffsetMs = 0;

/** Now, by the server's clock (milliseconds since the epoch). */
export function serverNow() {
  return Date.now() + clockOffsetMs;
}

function noteServerClock(response) {
  const served = Date.parse(response.headers.get("date") ?? "");
  if (Number.isNaN(served)) return;
  const offset = served - Date.now();
  clockOffsetMs = Math.abs(offset) > 60_000 ? offset : 0;
}

/** JSON whose integers beyond 2^53 stay exact, as strings (nanosecond times,
 * 64-bit SQL results), where the engine supports reading a number's source text. */
export function parseJson(text) {
  return JSON.parse(text, (key, value, context) =>
    typeof value === "number" &&
    !Number.isSafeInteger(value) &&
    typeof context?.source === "string" &&
    /^-?\d+$/.test(context.source)
      ? context.source
      : value,
  );
}

/** A path from segments, each percent-encoded: a name can never add a segment. */
export function pathOf(...segments) {
  return segments.map((s) => encodeURIComponent(String(s))).join("/");
}

export class Api {
  /** credentials: {keyId, secret}, or null for a server that runs with --no-auth. */
  constructor(credentials) {
    this.credentials = credentials;
  }

  /** A JSON answer, or an ApiError. params: [[key, value], ...]; body: an object. */
  async request(method, path, { params = [], body = undefined, signal = undefined } = {}) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.send(method, path, params, body, signal);
      } catch (error) {
        // signed by a clock the answer has just corrected: once more, on time
        const stale = error instanceof ApiError && error.code === "RequestTimeExpired";
        if (!stale || attempt > 0) throw error;
      }
    }
  }

  async send(method, path, params, body, signal) {
    const text = body === undefined ? "" : JSON.stringify(body);
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (this.credentials) {
      // the server checks the decoded path
      const signed = decodeURIComponent(path);
      const moment = new Date(serverNow());
      Object.assign(headers, signHeaders(this.credentials, method, signed, params, text, moment));
    }
    const query = params.map(([k, v]) => `${rfc3986(k)}=${rfc3986(v)}`).join("&");
    const url = path + (query ? `?${query}` : "");
    const response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : text,
      signal,
      credentials: "omit",
      cache: "no-store",
    });
    noteServerClock(response);
    let content = null;
    try {
      content = parseJson(await response.text());
    } catch {
      content = null;
    }
    if (!response.ok) {
      const code = content?.errorCode ?? `HTTP${response.status}`;
      const message = content?.errorMessage ?? response.statusText;
      throw new ApiError(response.status, code, message, content?.requestId ?? "");
    }
    return content;
  }

  logstorePath(project, logstore) {
    return `${PREFIX}/${pathOf("projects", project, "logstores", logstore)}`;
  }

  projects() {
    return this.request("GET", `${PREFIX}/projects`, { params: [["size", "500"]] });
  }

  createProject(name, description) {
    return this.request("POST", `${PREFIX}/projects`, { body: { name, description } });
  }

  createLogstore(project, settings) {
    return this.request("POST", `${PREFIX}/${pathOf("projects", project, "logstores")}`, {
      body: settings,
    });
  }

  logstores(project) {
    return this.request("GET", `${PREFIX}/${pathOf("projects", project, "logstores")}`, {
      params: [["size", "500"]],
    });
  }

  shards(project, logstore) {
    return this.request("GET", `${this.logstorePath(project, logstore)}/shards`);
  }

  index(project, logstore) {
    return this.request("GET", `${this.logstorePath(project, logstore)}/index`);
  }

  /** Create the index (``exists`` false) or change it, with an SLS-shaped configuration. */
  saveIndex(project, logstore, config, exists) {
    const method = exists ? "PUT" : "POST";
    return this.request(method, `${this.logstorePath(project, logstore)}/index`, { body: config });
  }

  query(project, logstore, body, signal) {
    return this.request("POST", `${this.logstorePath(project, logstore)}/query`, { body, signal });
  }

  histogram(project, logstore, body, signal) {
    return this.request("POST", `${this.logstorePath(project, logstore)}/histogram`, {
      body,
      signal,
    });
  }

  context(project, logstore, log, around) {
    return this.request("GET", `${this.logstorePath(project, logstore)}/context`, {
      params: [
        ["shard", String(log.shardId)],
        ["cursor", log.cursor],
        ["index", String(log.index)],
        ["back", String(around)],
        ["forward", String(around)],
      ],
    });
  }

  consumerGroups(project, logstore) {
    return this.request("GET", `${this.logstorePath(project, logstore)}/consumergroups`);
  }

  consumerGroupStatus(project, logstore, group) {
    return this.request(
      "GET",
      `${this.logstorePath(project, logstore)}/${pathOf("consumergroups", group, "status")}`,
    );
  }

  checkpoints(project, logstore, group) {
    return this.request(
      "GET",
      `${this.logstorePath(project, logstore)}/${pathOf("consumergroups", group, "checkpoints")}`,
    );
  }

  cursor(project, logstore, shard, from) {
    return this.request("GET", `${this.logstorePath(project, logstore)}/${pathOf("shards", shard, "cursor")}`, {
      params: [["from", from]],
    });
  }

  pull(project, logstore, shard, cursor, waitMs, signal) {
    return this.request("GET", `${this.logstorePath(project, logstore)}/${pathOf("shards", shard, "logs")}`, {
      params: [
        ["cursor", cursor],
        ["count", "100"],
        ["format", "json"],
        ["wait", String(waitMs)],
      ],
      signal,
    });
  }
}
