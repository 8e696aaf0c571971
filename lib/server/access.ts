/**
 * Who may use the server from a browser. Two checks run on every request, before any work:
 *
 * - `Origin`: browsers send it on cross-origin requests, including "simple" ones (a `text/plain`
 *   POST, a GET) that go out without a CORS preflight and would still run a generation. A request
 *   from another origin is refused unless that origin was allowed (`corsOrigin`). Requests without
 *   an Origin (curl, SDKs, other servers) and same-origin ones pass.
 * - `Host`: DNS rebinding points an attacker's name at 127.0.0.1, making the attacker's page
 *   same-origin with this server; its requests then carry `Host: attacker.example`. Only names that
 *   cannot be rebound are accepted by default: IP literals, `localhost` and `*.localhost`; other
 *   names must be allowed (`allowedHosts`, `--allow-host`). The port is not checked: a rebound name
 *   is refused whatever its port, and a reverse proxy may forward a Host with its own port.
 */
import { isIP } from "node:net";
import { InvalidOptionError } from "../errors.js";
import { RequestError } from "./openai.js";

/** The checked form of the server's access options. */
export interface AccessPolicy {
  /** The allowed cross-origin origin, `"*"` for any, or undefined for none. */
  corsOrigin: string | undefined;
  /** Host names accepted besides IP literals and localhost: exact names, `.example.com` for it and its subdomains, `"*"` for any. */
  allowedHosts: readonly string[];
}

/**
 * Validates the options once, when the server is created (or, by the CLI, before a model loads).
 * @param names how errors name the two options (the CLI's flags are `--cors` and `--allow-host`).
 */
export function accessPolicy(
  corsOrigin: string | undefined,
  allowedHosts: readonly string[] = [],
  names = { cors: "corsOrigin", hosts: "allowedHosts" },
): AccessPolicy {
  let cors = corsOrigin;
  if (cors !== undefined && cors !== "*") {
    const origin = originOf(cors);
    if (origin === undefined) throw new InvalidOptionError(names.cors, 'an origin such as "http://localhost:5173", or "*"', cors);
    cors = origin;
  }
  if (!Array.isArray(allowedHosts)) throw new InvalidOptionError(names.hosts, "an array of host names", allowedHosts);
  const hosts = allowedHosts.map((name) => {
    if (typeof name !== "string" || !(name === "*" || /^\.?[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?$/i.test(name))) {
      throw new InvalidOptionError(names.hosts, 'host names such as "mybox.lan" (".lan": it and its subdomains; "*": any)', name);
    }
    return name.toLowerCase().replace(/\.$/, "");
  });
  return { corsOrigin: cors, allowedHosts: hosts };
}

/**
 * Throws a 403 RequestError when the request's Host or Origin is not allowed.
 * @param host the Host header (undefined when absent: HTTP/1.0 clients, never a browser).
 * @param origin the Origin header, when present.
 */
export function checkAccess(policy: AccessPolicy, host: string | undefined, origin: string | undefined): void {
  const hostname = host === undefined ? undefined : hostnameOf(host);
  if (host !== undefined && (hostname === undefined || !hostAllowed(hostname, policy.allowedHosts))) {
    throw new RequestError(
      403,
      `The Host ${JSON.stringify(host)} is not allowed (a protection against DNS rebinding): ` +
        "use an IP address or localhost, or allow the name (--allow-host / allowedHosts)",
      null,
      "host_not_allowed",
    );
  }
  if (origin === undefined || policy.corsOrigin === "*") return;
  const from = originOf(origin);
  // Same-origin (a page this server's host served): compared by host and port, since a TLS proxy
  // in front changes the scheme the page sees; the Host check above already vouched for the name.
  const sameOrigin = from !== undefined && host !== undefined && new URL(from).host === new URL(`http://${host}`).host;
  if (from !== undefined && (from === policy.corsOrigin || sameOrigin)) return;
  throw new RequestError(
    403,
    `Requests from the origin ${JSON.stringify(origin)} are not allowed: web pages may call this server only from an origin given with --cors (corsOrigin)`,
    null,
    "origin_not_allowed",
  );
}

function hostAllowed(hostname: string, allowed: readonly string[]): boolean {
  if (isIP(hostname.replace(/^\[(.*)\]$/, "$1")) !== 0) return true;
  if (hostname === "localhost" || hostname.endsWith(".localhost")) return true;
  return allowed.some((name) => name === "*" || name === hostname || (name.startsWith(".") && (hostname === name.slice(1) || hostname.endsWith(name))));
}

/** The lowercase host name of a Host header (IPv6 in brackets, IPv4 normalized), or undefined when it is malformed. */
function hostnameOf(host: string): string | undefined {
  // Only what a URL's host can hold: no userinfo ("a@b"), paths or spaces that a URL parser would reinterpret.
  if (!/^(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(:\d{1,5})?$/i.test(host)) return undefined;
  try {
    return new URL(`http://${host}`).hostname.replace(/\.$/, "");
  } catch {
    return undefined;
  }
}

/** The serialized origin of an http(s) URL, or undefined ("null" origins, other schemes, garbage). */
function originOf(value: string): string | undefined {
  try {
    const url = new URL(value);
    return url.protocol === "http:" || url.protocol === "https:" ? url.origin : undefined;
  } catch {
    return undefined;
  }
}
