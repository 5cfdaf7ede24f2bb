// The live fabric page: polls fabric.json and redraws. No framework, nothing fetched from
// elsewhere; every value goes in through textContent or setAttribute, never as markup.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const params = new URLSearchParams(window.location.search);
  const INTERVAL = Math.max(250, Number(params.get("interval")) || 2000);
  const W = 800, SELF_R = 40, PEER_R = 32;
  let H = 500, CX = W / 2, CY = H / 2;
  let lastOk = null;

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
  }

  function reach(value) {
    return value === true ? "true" : value === false ? "false" : "unknown";
  }

  function labels(obj) {
    return Object.entries(obj || {}).map(([k, v]) => k + "=" + v).join(", ");
  }

  function drawGraph(doc) {
    const svg = document.getElementById("graph");
    svg.replaceChildren();
    H = doc.peers.length <= 2 ? 220 : 500;  // one or two peers sit left and right: a low graph
    CY = H / 2;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    const defs = el("defs");
    const marker = el("marker", {
      id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
    });
    marker.appendChild(el("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }));
    defs.appendChild(marker);
    svg.appendChild(defs);
    const edges = el("g", { class: "edges" });
    const nodes = el("g", { class: "nodes" });
    svg.append(edges, nodes);

    const peers = doc.peers;
    const radius = peers.length <= 2 ? 190 : H / 2 - PEER_R - 34;
    const usedBy = {};
    for (const imp of doc.imports) {
      for (const s of imp.sources) (usedBy[s.peer] = usedBy[s.peer] || new Set()).add(imp.name);
    }
    peers.forEach((peer, i) => {
      // one or two peers left and right (the graph is wide), more around from the top
      const start = peers.length <= 2 ? Math.PI : -Math.PI / 2;
      const angle = start + (2 * Math.PI * i) / Math.max(peers.length, 1);
      const x = CX + radius * 1.45 * Math.cos(angle), y = CY + radius * Math.sin(angle);
      const r = reach(peer.reachable);
      // the edge runs from the dialing side to the other: forward we dial, reverse they do
      const dx = x - CX, dy = y - CY, len = Math.hypot(dx, dy) || 1;
      const ux = dx / len, uy = dy / len;
      const a = [CX + ux * SELF_R, CY + uy * SELF_R], b = [x - ux * PEER_R, y - uy * PEER_R];
      const [from, to] = peer.via === "reverse" ? [b, a] : [a, b];
      const line = el("line", {
        class: "edge", x1: from[0], y1: from[1], x2: to[0], y2: to[1],
        "marker-end": "url(#arrow)",
        "data-edge": doc.gateway.name + "--" + peer.name, "data-peer": peer.name,
        "data-reachable": r, "data-via": peer.via, "data-links": peer.links,
        "data-reverse-links": peer.reverse_links,
        "data-rtt-ms": peer.rtt_ms === null || peer.rtt_ms === undefined ? "" : peer.rtt_ms,
      });
      line.appendChild(el("title", {}, peer.via === "reverse"
        ? peer.name + " dials " + doc.gateway.name + " (reverse links)"
        : doc.gateway.name + " dials " + peer.name));
      edges.appendChild(line);

      const mx = (a[0] + b[0]) / 2, my = (a[1] + b[1]) / 2;
      const label = el("g", { class: "edge-label", "data-peer": peer.name, "data-reachable": r });
      let main;
      if (r === "false") main = "unreachable";
      else if (peer.rtt_ms !== null && peer.rtt_ms !== undefined) main = peer.rtt_ms.toFixed(1) + " ms";
      else main = "\u2026";
      label.appendChild(el("text", { x: mx, y: my - 4, class: "main" }, main));
      const links = peer.links + (peer.links === 1 ? " link" : " links") +
        (peer.via === "reverse" ? " (reverse)" : "") +
        (peer.reverse_links ? ", lending " + peer.reverse_links : "");
      label.appendChild(el("text", { x: mx, y: my + 12, class: "sub" }, links));
      edges.appendChild(label);

      const g = el("g", {
        class: "node", "data-node": peer.name, "data-role": "peer", "data-reachable": r,
      });
      g.appendChild(el("circle", { cx: x, cy: y, r: PEER_R }));
      g.appendChild(el("text", { x: x, y: y + 4, class: "name" }, peer.name));
      const used = usedBy[peer.name] ? Array.from(usedBy[peer.name]).sort() : [];
      if (used.length) {
        // on the outer side of the node, away from its edge
        const ty = y < CY - 1 ? y - PEER_R - 8 : y + PEER_R + 15;
        g.appendChild(el("text", { x: x, y: ty, class: "sub" }, "imports: " + used.join(", ")));
      }
      const tip = [peer.name, labels(peer.labels), peer.last_seen ? "last seen " + peer.last_seen : "",
        peer.error ? "error: " + peer.error : ""].filter(Boolean).join("\n");
      g.appendChild(el("title", {}, tip));
      nodes.appendChild(g);
    });

    const self = el("g", {
      class: "node", "data-node": doc.gateway.name, "data-role": "self", "data-reachable": "true",
    });
    self.appendChild(el("circle", { cx: CX, cy: CY, r: SELF_R }));
    self.appendChild(el("text", { x: CX, y: CY - 2, class: "name" }, doc.gateway.name));
    self.appendChild(el("text", { x: CX, y: CY + 14, class: "sub" }, "this gateway"));
    self.appendChild(el("title", {}, doc.gateway.name + "\n" + labels(doc.gateway.labels)));
    nodes.appendChild(self);
    if (!peers.length) {
      svg.appendChild(el("text", { x: CX, y: 40, "text-anchor": "middle", class: "sub" }, "no peers"));
    }
  }

  function fillTable(id, items, render, empty) {
    const body = document.querySelector("#" + id + " tbody");
    body.replaceChildren();
    if (!items.length) {
      const row = document.createElement("tr");
      row.className = "empty";
      const td = cell(row, empty);
      td.colSpan = document.querySelectorAll("#" + id + " thead th").length;
      body.appendChild(row);
      return;
    }
    for (const item of items) {
      const row = document.createElement("tr");
      render(row, item);
      body.appendChild(row);
    }
  }

  function counts(row, item) {
    for (const key of ["active", "connections", "failures", "bytes_in", "bytes_out"]) {
      row.dataset[key.replace("_i", "I").replace("_o", "O")] = item[key];
    }
  }

  function render(doc) {
    document.getElementById("gateway-name").textContent = doc.gateway.name;
    document.title = "ClusterLink fabric \u2014 " + doc.gateway.name;
    const scope = document.getElementById("scope");
    const p = doc.processes;
    if (p.scope.length) {
      scope.hidden = false;
      scope.textContent = "Data-plane processes " + p.answered.join(", ") + " answered" +
        (p.missing.length ? " (not: " + p.missing.join(", ") + ")" : "") + " \u2014 " +
        p.scope.join("; ") + ".";
    } else {
      scope.hidden = true;
    }
    drawGraph(doc);
    fillTable("imports", doc.imports, (row, imp) => {
      row.dataset.import = imp.name;
      row.dataset.listening = String(imp.listening);
      counts(row, imp);
      cell(row, imp.name).title = imp.error || "";
      cell(row, imp.listening ? imp.listen : (imp.error || "not listening"));
      cell(row, imp.sources.map((s) => s.export === imp.name ? s.peer : s.peer + "/" + s.export).join(", "));
      cell(row, imp.active, "num active");
      cell(row, imp.connections, "num connections");
      cell(row, imp.failures, "num failures");
      cell(row, bytes(imp.bytes_in), "num");
      cell(row, bytes(imp.bytes_out), "num");
    }, "no imports");
    fillTable("exports", doc.exports, (row, exp) => {
      row.dataset.export = exp.name;
      counts(row, exp);
      cell(row, exp.name);
      cell(row, exp.allowed_peers.length ? exp.allowed_peers.join(", ") : "any peer");
      cell(row, exp.active, "num active");
      cell(row, exp.connections, "num connections");
      cell(row, bytes(exp.bytes_in), "num");
      cell(row, bytes(exp.bytes_out), "num");
    }, "no exports");
    fillTable("refusals", doc.refusals, (row, r) => {
      row.dataset.side = r.side;
      row.dataset.reason = r.reason;
      row.dataset.policy = r.policy || "";
      row.dataset.peer = r.peer || "";
      cell(row, new Date(r.time * 1000).toLocaleTimeString());
      cell(row, r.side);
      cell(row, r.peer || "");
      const via = r.export && r.export !== r.import_name ? " \u2192 " + r.export : "";
      cell(row, r.side === "egress" ? (r.import_name || "") + via : (r.export || ""));
      cell(row, r.reason);
      cell(row, r.policy || "");
      cell(row, r.decision || r.detail || "");
    }, "no refused connection since the gateway started");
    const total = document.getElementById("refusals-total");
    total.textContent = doc.refusals_total > doc.refusals.length
      ? "(last " + doc.refusals.length + " of " + doc.refusals_total + ")" : "";
  }

  function setStatus(state, text) {
    const status = document.getElementById("status");
    status.dataset.state = state;
    status.textContent = text;
  }

  async function poll() {
    try {
      const resp = await fetch("fabric.json", { cache: "no-store" });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const doc = await resp.json();
      render(doc);
      lastOk = new Date();
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
      setStatus("live", "live \u2014 updated " + lastOk.toLocaleTimeString() + " (gateway time " + doc.time + ")");
    } catch (err) {
      setStatus("stale", "gateway not answering (" + err.message + ")" +
        (lastOk ? "; showing data from " + lastOk.toLocaleTimeString() : ""));
    } finally {
      window.setTimeout(poll, INTERVAL);
    }
  }

  poll();
})();
