"""The status page: one HTML document whose script follows the proxy's live updates."""

from __future__ import annotations


def render_html(prefix: str) -> bytes:
    return _PAGE.replace("__PREFIX__", prefix).encode()


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sessionha cluster</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em}h2{font-size:1.05em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#eee}td.n,th.n{text-align:right}
.up,.alive{color:#060;font-weight:bold}.down,.dead{color:#b00;font-weight:bold}
.checking{color:#b60;font-weight:bold}.draining,.conflict{color:#666;font-weight:bold}
.evicting{color:#b00}.degraded{color:#b00;font-weight:bold}
#log{font-family:monospace;background:#fff;border:1px solid #ccc;padding:.5em;
max-height:18em;overflow:auto;white-space:pre-wrap}
#log .upstream_down,#log .node_dead{color:#b00}#log .upstream_up,#log .node_alive{color:#060}
#log .takeover,#log .relocation{color:#05a}
.legend{display:flex;flex-wrap:wrap;gap:.2em 1em;max-width:800px}
#live{font-size:.8em;color:#666}
</style></head><body>
<h1>sessionha cluster <small id="meta"></small> <span id="live"></span></h1>
<p id="dns"></p>
<h2>app servers</h2>
<table><thead><tr><th>app server</th><th>state</th><th>route</th>
<th class="n">sessions in memory</th><th class="n">requests/s</th><th class="n">p99 ms</th>
<th class="n">sessions taken over</th><th class="n">sessions relocated</th>
<th class="n">backups failed</th><th>address</th><th class="n">weight</th>
<th class="n">in flight</th><th class="n">requests</th><th class="n">failures</th>
<th class="n">retries</th></tr></thead><tbody id="rows"></tbody></table>
<h2>memcached nodes, as the app servers see them</h2>
<table><thead><tr><th>node</th><th>state</th><th>address</th><th>seen by</th>
<th>backed up to by</th><th class="n">backups failed</th><th class="n">evictions</th></tr>
</thead><tbody id="nodes"></tbody></table>
<h2>requests per second, stacked by app server</h2>
<svg id="chart" width="800" height="220" role="img"
 style="background:#fff;border:1px solid #ccc"></svg>
<div class="legend" id="legend"></div>
<h2>events</h2><div id="log">(none yet)</div>
<script>
"use strict";
const STATUS_JSON="__PREFIX__/status.json",EVENTS="__PREFIX__/status/events";
function esc(s){return String(s).replace(/[&<>"]/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",
'"':"&quot;"}[c]));}
function num(v){return v===null||v===undefined?"-":String(v);}
function ms(v){return v===null||v===undefined?"-":v.toFixed(2);}
function plural(n,one,many){return `${n} ${n===1?one:many}`;}
function color(i){return `hsl(${(i*137.5)%360},65%,45%)`;}
function clock(t){return new Date(t*1000).toTimeString().slice(0,8);}
function draw(ups){
  const svg=document.getElementById("chart"),W=800,H=220,L=50,B=28,T=10;
  let span=1;for(const u of ups){span=Math.max(span,u.history.length);}
  const totals=new Array(span).fill(0);
  const layers=ups.map(u=>{const vals=new Array(span).fill(0);
    u.history.forEach((p,j)=>{vals[span-u.history.length+j]=p[1];});return vals;});
  const base=layers.map(vals=>{const low=totals.slice();
    vals.forEach((v,j)=>{totals[j]+=v;});return low;});
  const max=Math.max(1,...totals);
  const x=j=>L+(W-L-10)*(span===1?1:j/(span-1)),y=v=>(H-B)-(H-B-T)*v/max;
  let out=`<text x="4" y="${T+8}" font-size="11">${max}</text>`+
    `<text x="4" y="${H-B}" font-size="11">0</text>`+
    `<text x="4" y="${(H-B)/2}" font-size="11">req/s</text>`+
    `<line x1="${L}" y1="${H-B}" x2="${W-10}" y2="${H-B}" stroke="#999"/>`+
    `<text x="${L}" y="${H-8}" font-size="11">${span}s ago</text>`+
    `<text x="${W-40}" y="${H-8}" font-size="11">now</text>`;
  layers.forEach((vals,i)=>{
    const top=vals.map((v,j)=>`${x(j).toFixed(1)},${y(base[i][j]+v).toFixed(1)}`);
    const bottom=vals.map((v,j)=>`${x(j).toFixed(1)},${y(base[i][j]).toFixed(1)}`).reverse();
    out+=`<polygon fill="${color(i)}" fill-opacity="0.75" stroke="${color(i)}" `+
      `points="${top.concat(bottom).join(" ")}"><title>${esc(ups[i].name)}</title></polygon>`;});
  svg.innerHTML=out;
  document.getElementById("legend").innerHTML=ups.map((u,i)=>
    `<span style="color:${color(i)}">&#9632; ${esc(u.name)} `+
    `${u.history.length?u.history[u.history.length-1][1]:0}/s</span>`).join("");
}
function show(s){
  document.getElementById("meta").textContent=`policy ${s.policy}, `+
    `${plural(s.client_connections,"client connection","client connections")}, `+
    plural(s.retries,"retry","retries");
  const dns=document.getElementById("dns");
  if(s.discovery){const d=s.discovery;dns.className=s.status;
    dns.textContent=`${s.status.toUpperCase()}: upstreams from ${d.target}, re-resolved `+
      `every ${d.resolver_valid}s, ${plural(d.addresses.length,"address","addresses")}`+
      (d.problem?` \\u2014 ${d.problem}`:"");}
  const apps=new Map(s.cluster.appservers.map(a=>[a.name,a]));
  document.getElementById("rows").innerHTML=!s.upstreams.length?
    '<tr><td colspan="15" class="down">no upstreams</td></tr>':s.upstreams.map(u=>{
    const a=apps.get(u.name)||{};return `<tr><td>${esc(u.name)}</td>`+
    `<td class="${u.state}">${u.state.toUpperCase()}`+
    `${u.reason?" ("+esc(u.reason.replace(u.state+": ",""))+")":""}</td>`+
    `<td>${esc(num(a.route))}</td><td class="n">${num(a.sessions_in_memory)}</td>`+
    `<td class="n">${u.requests_per_second}</td><td class="n">${ms(u.p99_ms)}</td>`+
    `<td class="n">${num(a.sessions_taken_over)}</td>`+
    `<td class="n">${num(a.sessions_relocated)}</td>`+
    `<td class="n">${num(a.backups_failed)}</td><td>${esc(u.address)}</td>`+
    `<td class="n">${u.weight}</td><td class="n">${u.active}</td>`+
    `<td class="n">${u.requests}</td><td class="n">${u.failures}</td>`+
    `<td class="n">${u.retries}</td></tr>`;}).join("");
  const nodes=s.cluster.memcached;
  document.getElementById("nodes").innerHTML=!nodes.length?
    '<tr><td colspan="7">no reports from the app servers yet</td></tr>':nodes.map(n=>
    `<tr><td>${esc(n.id)}</td><td class="${n.alive?"alive":"dead"}">`+
    `${n.alive?"ALIVE":"DEAD"}</td><td>${esc(n.address)}</td><td>`+
    Object.entries(n.seen_by).map(([app,alive])=>
      `<span class="${alive?"alive":"dead"}">${esc(app)}: ${alive?"alive":"dead"}</span>`)
      .join(", ")+`</td><td>${esc(n.backed_up_by.join(", ")||"-")}</td>`+
    `<td class="n">${n.backups_failed}</td><td class="n${n.evicting?" evicting":""}">`+
    `${num(n.evictions)}${n.evicting?" EVICTING SESSIONS":""}</td></tr>`).join("");
  draw(s.upstreams);
  if(s.events.length){document.getElementById("log").innerHTML=s.events.slice().reverse()
    .map(e=>`<div class="${e.kind}">${clock(e.time)} ${esc(e.text)}</div>`).join("");}
}
let last=0;
function connect(){
  const source=new EventSource(EVENTS);
  source.onmessage=m=>{last=Date.now();document.getElementById("live").textContent="live";
    show(JSON.parse(m.data));};
  source.onerror=()=>{document.getElementById("live").textContent="(reconnecting)";};
}
async function poll(){  // when the stream is silent (a proxy in front that buffers it)
  if(Date.now()-last<3000)return;
  try{const r=await fetch(STATUS_JSON,{cache:"no-store"});show(await r.json());}
  catch(e){document.getElementById("meta").textContent="(proxy unreachable)";}
}
connect();poll();setInterval(poll,1000);
</script></body></html>
"""
