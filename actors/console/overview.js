// Overview: per organization (the token's own and its children, each card counting its
// subtree), the last minutes' activity as charts, live. The counts come from the store,
// grouped per minute (GET /overview); the lag chart is drawn from the samples this page has
// polled since it opened (the partitions' backlog has no history to ask for).
import { api, query } from "./api.js";
import { clear, h } from "./dom.js";

const MINUTES = 10;
const POLL_MS = 5000;
const LAG_SAMPLES = 60; // 5 minutes of polls
const SVG = "http://www.w3.org/2000/svg";

function svgNode(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

// Bars per minute; `stacks` is a list of [series, css class] drawn one above the other.
function barChart(stacks, label) {
  const w = 300, hgt = 60;
  const n = stacks[0][0].length;
  const totals = Array.from({ length: n }, (_, i) => stacks.reduce((s, [v]) => s + v[i], 0));
  const max = Math.max(1, ...totals), step = w / n;
  const svg = svgNode("svg", { viewBox: `0 0 ${w} ${hgt}`, role: "img", "aria-label": label, class: "chart" });
  for (let i = 0; i < n; i++) {
    let y = hgt;
    for (const [values, cls] of stacks) {
      const bh = (values[i] / max) * (hgt - 4);
      if (!bh) continue;
      y -= bh;
      const r = svgNode("rect", { x: i * step + 1, y, width: Math.max(1, step - 2), height: bh, class: cls });
      const t = svgNode("title", {});
      t.textContent = `${MINUTES - i - 1 ? `${MINUTES - i - 1} min ago` : "this minute"}: ${values[i]}`;
      r.append(t);
      svg.append(r);
    }
  }
  return svg;
}

function lineChart(values, label) {
  const w = 300, hgt = 60, max = Math.max(1, ...values);
  const step = w / Math.max(1, LAG_SAMPLES - 1);
  const svg = svgNode("svg", { viewBox: `0 0 ${w} ${hgt}`, role: "img", "aria-label": label, class: "chart" });
  const offset = LAG_SAMPLES - values.length;
  const points = values.map((v, i) => `${((offset + i) * step).toFixed(1)},${(hgt - 2 - (v / max) * (hgt - 6)).toFixed(1)}`);
  if (points.length) {
    svg.append(svgNode("polyline", { points: points.join(" "), class: "lag-line" }));
    const [x, y] = points[points.length - 1].split(",");
    svg.append(svgNode("circle", { cx: x, cy: y, r: 3, class: "lag-now" }));
  }
  const t = svgNode("title", {});
  t.textContent = values.length ? `now ${values[values.length - 1]}, peak ${Math.max(...values)}` : "no sample yet";
  svg.append(t);
  return svg;
}

const sum = (values) => values.reduce((a, b) => a + b, 0);

function card(org, lags, dlqOpen) {
  const lagNow = org.lag === null ? "unknown (the stream did not answer)" : `${org.lag} event(s) waiting in partition(s) ${org.partitions.join(", ")}`;
  const failed = sum(org.triggersFailed), ok = sum(org.triggersOk);
  return h("section", { class: "card", "aria-label": `organization ${org.orgId}`, "data-org": org.orgId },
    h("h3", {}, org.name || org.orgId),
    h("h4", {}, "Events stored per minute"),
    barChart([[org.events, "bar"]], `events per minute, ${org.orgId}`),
    h("h4", {}, "Lag"),
    lineChart(lags, `lag, ${org.orgId}`),
    h("h4", {}, "DLQ entries per minute"),
    barChart([[org.dlq, "bar bad"]], `DLQ entries per minute, ${org.orgId}`),
    h("h4", {}, "Trigger deliveries per minute"),
    barChart([[org.triggersOk, "bar"], [org.triggersFailed, "bar bad"]], `trigger deliveries per minute, ${org.orgId}`),
    h("dl", {},
      h("dt", {}, "throughput"), h("dd", { class: "throughput" }, `${(sum(org.events) / MINUTES).toFixed(1)} events/min`),
      h("dt", {}, "lag"), h("dd", { class: "lag" }, lagNow),
      h("dt", {}, "DLQ (not redriven)"), h("dd", { class: org.dlqPending ? "bad dlq" : "dlq" }, dlqOpen),
      h("dt", {}, "trigger deliveries"), h("dd", { class: failed ? "bad triggers" : "triggers" }, `${ok} ok, ${failed} failed`)));
}

// Returns a stop function: the shell calls it when the user leaves the screen.
export async function overviewScreen(view) {
  view.append(h("h2", {}, "Overview"),
    h("p", {}, `Per organization (with its children), the last ${MINUTES} minutes, refreshed every ${POLL_MS / 1000} s. ` +
      "Lag is what the organization's partitions hold unacknowledged (shared with the other organizations hashed to them)."));
  const grid = view.appendChild(h("div", { class: "grid", id: "overview-cards" }));
  const stamp = view.appendChild(h("p", { class: "note", id: "overview-updated" }));
  const lags = new Map();
  let busy = false;
  const refresh = async () => {
    if (busy) return; // a slow answer: skip a beat rather than pile requests up
    busy = true;
    try {
      const { data } = await api("GET", "/overview" + query({ minutes: MINUTES }));
      clear(grid);
      for (const org of data.orgs) {
        const series = lags.get(org.orgId) || [];
        if (org.lag !== null) series.push(org.lag);
        if (series.length > LAG_SAMPLES) series.shift();
        lags.set(org.orgId, series);
        grid.append(card(org, series, `${org.dlqPending}${data.pendingCapped ? "+" : ""}`));
      }
      stamp.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      stamp.textContent = `not updated: ${error.message}`;
      stamp.classList.add("error");
    } finally {
      busy = false;
    }
  };
  await refresh();
  const timer = setInterval(refresh, POLL_MS);
  return () => clearInterval(timer);
}
