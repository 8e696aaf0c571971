/**
 * String `format`s as anchored regular expressions (regex.ts) of a subset of each format: every
 * string they allow is valid for ajv-formats' "full" checks (calendar-correct dates, ranges of
 * time fields, time zones), which tests/json-schema-corpus.test.ts verifies with ajv itself.
 * February 29 is left out (leap years are not regular), IPv6 is written in full 8-group form.
 */

const MONTH_DAY = "(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)";
const DATE = `[0-9]{4}-${MONTH_DAY}`;
const TIME = `(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])`;
const OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
const LABEL = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";
const HEX4 = "[0-9a-f]{1,4}";
const DURATION_DATE = "(?:[0-9]+Y(?:[0-9]+M)?(?:[0-9]+D)?|[0-9]+M(?:[0-9]+D)?|[0-9]+D)";
const DURATION_TIME = "T(?:[0-9]+H(?:[0-9]+M)?(?:[0-9]+S)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S)";

/** Regex source (anchored when compiled) and an overall length cap per supported format. */
export const FORMATS: Readonly<Record<string, { source: string; maxLength?: number }>> = {
  date: { source: DATE },
  time: { source: TIME },
  "date-time": { source: `${DATE}T${TIME}` },
  duration: { source: `P(?:${DURATION_DATE}(?:${DURATION_TIME})?|${DURATION_TIME}|[0-9]+W)` },
  email: { source: `[a-z0-9_+-]+(?:\\.[a-z0-9_+-]+)*@(?:${LABEL}\\.)+[a-z]{2,}`, maxLength: 254 },
  uuid: { source: `[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}` },
  ipv4: { source: `${OCTET}(?:\\.${OCTET}){3}` },
  ipv6: { source: `${HEX4}(?::${HEX4}){7}` },
  hostname: { source: `${LABEL}(?:\\.${LABEL})*`, maxLength: 253 },
  uri: { source: `https?://${LABEL}(?:\\.${LABEL})*(?:/[A-Za-z0-9._~-]*)*(?:\\?[A-Za-z0-9._~=&-]*)?`, maxLength: 2000 },
};

export const FORMAT_NAMES = Object.keys(FORMATS);
