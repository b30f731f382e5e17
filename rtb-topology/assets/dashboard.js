// The rtb dashboard: polls /v1/dashboard every second with the admin token and draws tables and uPlot
// charts. The token comes from the URL fragment (#token=…, never sent to the server in a URL) or the form,
// and is kept in localStorage.
(function () {
  "use strict";
  const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];
  const state = { updates: 0, windows: 0, charts: {}, keys: {} };
  window.__rtb = state;

  const frag = new URLSearchParams(location.hash.slice(1));
  let token = frag.get("token") || localStorage.getItem("rtb-token");
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  const krw = (n) => Number(n).toLocaleString("en-US");

  function table(head, rows) {
    if (!rows.length) return '<p class="muted">none yet</p>';
    const th = head.map((h) => `<th class="${h.n ? "n" : ""}">${esc(h.t)}</th>`).join("");
    const tr = rows.map((r) => "<tr>" + r.map((c, i) => `<td class="${head[i].n ? "n" : ""}">${c}</td>`).join("") + "</tr>").join("");
    return `<table><thead><tr>${th}</tr></thead><tbody>${tr}</tbody></table>`;
  }

  function chart(id, campaigns, field, fmt) {
    const times = [...new Set(campaigns.flatMap((c) => c.windows.map((w) => w.t)))].sort((a, b) => a - b);
    const data = [times].concat(campaigns.map((c) => {
      const by = new Map(c.windows.map((w) => [w.t, w[field]]));
      return times.map((t) => (by.has(t) ? by.get(t) : null));
    }));
    const key = campaigns.map((c) => c.campaign_id).join(",");
    const el = $(id);
    if (state.charts[id] && state.keys[id] === key) {
      state.charts[id].setData(data);
      return;
    }
    if (state.charts[id]) state.charts[id].destroy();
    el.innerHTML = "";
    const opts = {
      width: Math.max(480, el.clientWidth || 480), height: 220,
      scales: { x: { time: true } },
      series: [{}].concat(campaigns.map((c, i) => ({
        label: c.campaign_id, stroke: PALETTE[i % PALETTE.length], width: 3, spanGaps: true,
        points: { show: true, size: 7, fill: PALETTE[i % PALETTE.length] }, value: (u, v) => (v == null ? "–" : fmt(v)),
      }))),
      axes: [{}, { size: 80, values: (u, vals) => vals.map(fmt) }],
    };
    state.charts[id] = new uPlot(opts, data, el);
    state.keys[id] = key;
  }

  function render(d) {
    $("rankings").innerHTML = d.rankings.length ? d.rankings.map((r) =>
      `<h3 style="font-size:13px;margin:6px 0 2px">${esc(r.placement)} / ${esc(r.category)}</h3>` +
      table([{ t: "#" }, { t: "campaign" }, { t: "bid", n: 1 }, { t: "pCTR", n: 1 }, { t: "CPC", n: 1 }],
        r.entries.map((e) => [e.rank, esc(e.campaign_id), krw(e.bid_price), (e.pctr * 100).toFixed(2) + " %", krw(e.cpc)]))
    ).join("") : '<p class="muted">no ranking yet</p>';
    const withData = d.campaigns.filter((c) => c.windows.length);
    state.windows = withData.reduce((n, c) => n + c.windows.length, 0);
    chart("spend", withData, "spend", (v) => krw(v));
    chart("ctr", withData, "ctr", (v) => (v * 100).toFixed(1) + " %");
    chart("cvr", withData, "cvr", (v) => (v * 100).toFixed(1) + " %");
    $("budgets").innerHTML = table(
      [{ t: "campaign" }, { t: "status" }, { t: "spend today", n: 1 }, { t: "daily budget", n: 1 }, { t: "use" }],
      d.campaigns.map((c) => {
        const pct = c.daily_budget > 0 ? (100 * c.spend_today) / c.daily_budget : 0;
        const cls = pct >= 100 ? "over" : pct >= 80 ? "warn" : "ok";
        return [esc(c.campaign_id), esc(c.status) + (c.paused_by_budget ? " (budget)" : ""), krw(c.spend_today), krw(c.daily_budget),
          `<span class="bar"><span class="${cls}" style="width:${Math.min(100, pct).toFixed(0)}%"></span></span> ${pct.toFixed(0)} %`];
      }));
    $("balances").innerHTML = table([{ t: "advertiser" }, { t: "opening", n: 1 }, { t: "balance", n: 1 }],
      d.advertisers.map((a) => [esc(a.advertiser_id), krw(a.opening_balance), krw(a.balance)]));
    $("refunds").innerHTML = table([{ t: "time" }, { t: "advertiser" }, { t: "campaign" }, { t: "refund", n: 1 }],
      d.refunds.map((r) => [esc(r.event_time), esc(r.advertiser_id), esc(r.campaign_id || ""), krw(r.amount)]));
    $("dead").innerHTML = `<p>${krw(d.dead_letters.total)} dead letters in total</p>` +
      table([{ t: "stage" }, { t: "reason" }], d.dead_letters.recent.map((x) => [esc(x.stage), esc(x.reason)]));
    state.updates += 1;
    document.body.dataset.updates = String(state.updates);
    $("status").textContent = `live · as of ${d.as_of} · ${state.updates} updates`;
  }

  async function poll() {
    try {
      const r = await fetch("/v1/dashboard", { headers: { Authorization: "Bearer " + token } });
      if (r.status === 401 || r.status === 403) {
        localStorage.removeItem("rtb-token");
        $("main").hidden = true; $("login").hidden = false;
        $("status").textContent = "an admin token is needed";
        return;
      }
      if (!r.ok) throw new Error("HTTP " + r.status);
      render(await r.json());
    } catch (e) {
      $("status").textContent = "disconnected (" + e.message + "); retrying";
    }
    setTimeout(poll, 1000);
  }

  function start() {
    localStorage.setItem("rtb-token", token);
    $("login").hidden = true; $("main").hidden = false;
    poll();
  }
  $("login-form").addEventListener("submit", (ev) => { ev.preventDefault(); token = $("token").value.trim(); start(); });
  if (token) start(); else { $("login").hidden = false; $("status").textContent = "an admin token is needed"; }
})();
