//! The stylesheet and the script, compiled in and cached by browsers for an hour.

use axum::http::header;
use axum::response::IntoResponse;

const STYLESHEET: &str = r##"
:root{--bg:#f7f7f8;--fg:#1b1d21;--muted:#6a6f78;--line:#e2e4e8;--card:#fff;--accent:#2457d6;
--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--run:#0969da}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;background:var(--bg);color:var(--fg)}
header{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1.25rem;padding:.6rem 1rem;background:#111827;color:#fff}
header a{color:#d1d5db;text-decoration:none}header a.active,header a:hover{color:#fff}
header .brand{font-weight:700;color:#fff}header nav{display:flex;gap:1rem}header .who{margin-left:auto}
header button.link{background:none;border:0;color:#d1d5db;padding:0;font:inherit;cursor:pointer}
main{max-width:1200px;margin:0 auto;padding:1rem}
h1{font-size:1.5rem;margin:.5rem 0 1rem}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
a{color:var(--accent)}.muted{color:var(--muted)}.small{font-size:.8rem;font-weight:400}
code,pre,.sha{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85em}
table.list{width:100%;border-collapse:collapse;background:var(--card);border:1px solid var(--line)}
table.list th,table.list td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid var(--line);vertical-align:top}
table.list th{font-size:.8rem;color:var(--muted);font-weight:600}
tr.live{background:#f0fbf3}td.image code{word-break:break-all}
.badge{display:inline-block;padding:.05rem .45rem;border-radius:1rem;font-size:.75rem;font-weight:600;background:#eef0f3;color:#444;white-space:nowrap}
.s-succeeded,.s-queued_job{background:#dafbe1;color:var(--ok)}
.s-live{background:var(--ok);color:#fff}
.s-failed,.s-rolled_back{background:#ffebe9;color:var(--bad)}
.s-running,.s-in_progress{background:#ddf4ff;color:var(--run)}
.s-queued,.s-pending,.s-awaiting_approval{background:#fff8c5;color:var(--warn)}
.s-cancelled,.s-superseded,.s-skipped,.s-ignored,.s-duplicate,.s-replaced{background:#eef0f3;color:var(--muted)}
tr.attempt td{color:var(--muted)}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:.25rem 1rem;margin:1rem 0}
ul.jobs{list-style:none;padding:0}ul.jobs li{padding:.25rem 0}
form.filters{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:end;margin:0 0 1rem}
form.inline{display:inline}
button,.button{font:inherit;padding:.3rem .8rem;border-radius:5px;border:1px solid #1f4fc0;background:var(--accent);color:#fff;cursor:pointer;text-decoration:none;display:inline-block}
button.secondary{background:#fff;color:var(--accent);border-color:var(--line);font-size:.85rem;padding:.15rem .55rem;margin:.15rem 0 0 .4rem}
button.danger{background:var(--bad);border-color:var(--bad)}
select,input{font:inherit;padding:.3rem;border:1px solid var(--line);border-radius:5px;background:#fff}
.stack{display:flex;flex-direction:column;gap:.5rem;max-width:24rem}
.narrow{max-width:32rem}
.error{color:var(--bad)}.warning{color:var(--warn)}.notice{color:var(--ok)}.empty{color:var(--muted);padding:1rem;background:var(--card);border:1px dashed var(--line);border-radius:6px}
.pager{display:flex;gap:1rem;margin:1rem 0}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.5rem 0}dl.meta dt{color:var(--muted)}dl.meta dd{margin:0;word-break:break-all}
pre#log{background:#0d1117;color:#e6edf3;padding:.75rem;border-radius:6px;overflow:auto;max-height:70vh;white-space:pre-wrap;word-break:break-all;font-size:.8rem}
pre.plan{background:#f6f8fa;padding:.75rem;border-radius:6px;overflow:auto;max-height:50vh;font-size:.8rem}
ul.changes{padding-left:1.2rem}
pre#log .t{color:#7d8590;margin-right:.75em}pre#log .err{color:#ffa198}pre#log .sys{color:#79c0ff}
@media (max-width:720px){
 table.list thead{display:none}table.list,table.list tbody,table.list tr,table.list td{display:block;width:100%}
 table.list tr{border-bottom:2px solid var(--line);padding:.4rem 0}table.list td{border:0;padding:.15rem .6rem}
 header .who{margin-left:0}
}
"##;

const SCRIPT: &str = r##"
(function(){
"use strict";
var units=[["day",86400],["hour",3600],["minute",60]];
var rtf=window.Intl&&Intl.RelativeTimeFormat?new Intl.RelativeTimeFormat(undefined,{numeric:"auto"}):null;
function pad(n,w){n=String(n);while(n.length<(w||2))n="0"+n;return n}
function clock(d){return pad(d.getHours())+":"+pad(d.getMinutes())+":"+pad(d.getSeconds())+"."+pad(d.getMilliseconds(),3)}
function relative(ms){
  var s=Math.round((ms-Date.now())/1000);
  if(!rtf||Math.abs(s)<45)return "just now";
  for(var i=0;i<units.length;i++){if(Math.abs(s)>=units[i][1]||i===units.length-1)return rtf.format(Math.round(s/units[i][1]),units[i][0])}
}
function showTimes(root){
  var times=(root||document).querySelectorAll("time[data-ms]");
  for(var i=0;i<times.length;i++){
    var t=times[i],ms=Number(t.getAttribute("data-ms")),d=new Date(ms);
    if(t.classList.contains("t")){t.textContent=clock(d);continue}
    t.title=d.toLocaleString();t.textContent=relative(ms)+" · "+d.toLocaleString();
  }
}
document.addEventListener("submit",function(e){
  var q=e.target.getAttribute("data-confirm");
  if(q&&!window.confirm(q))e.preventDefault();
});
function badge(state){var s=document.createElement("span");s.className="badge s-"+state;s.textContent=state;return s}
function dur(a,b){if(a==null)return"";if(b==null)return"running";var ms=Math.max(0,b-a),s=Math.floor(ms/1000);
  return s>=60?Math.floor(s/60)+"m "+pad(s%60)+"s":s+"."+Math.floor(ms%1000/100)+"s"}
function follow(log){
  var job=log.getAttribute("data-job"),after=log.getAttribute("data-after");
  var source=new EventSource("/api/jobs/"+job+"/logs?after="+after);
  source.onmessage=function(e){
    var line=JSON.parse(e.data);
    var near=log.scrollHeight-log.scrollTop-log.clientHeight<40;
    var span=document.createElement("span");
    span.className="l "+(line.stream==="stderr"?"err":line.stream==="system"?"sys":"out");
    span.setAttribute("data-seq",line.seq);
    var t=document.createElement("time");t.className="t";t.setAttribute("data-ms",line.at);t.textContent=clock(new Date(line.at));
    span.appendChild(t);span.appendChild(document.createTextNode(line.line));
    log.appendChild(span);log.appendChild(document.createTextNode("\n"));
    var empty=document.getElementById("no-log");if(empty)empty.remove();
    if(near)log.scrollTop=log.scrollHeight;
  };
  source.addEventListener("job",function(e){
    var job=JSON.parse(e.data);
    var st=document.getElementById("job-state");if(st){st.textContent="";st.appendChild(badge(job.state))}
    var err=document.getElementById("job-error");if(err){err.textContent=job.error||"";err.hidden=!job.error}
    var d=document.getElementById("job-duration");if(d)d.textContent=dur(job.started_at,job.finished_at);
    if(["succeeded","failed","cancelled","superseded"].indexOf(job.state)>=0){var c=document.getElementById("cancel-job");if(c)c.remove()}
    var body=document.querySelector("#steps tbody");if(!body)return;
    body.textContent="";
    job.steps.forEach(function(step){
      var tr=document.createElement("tr");tr.setAttribute("data-step",step.name);tr.id="step-"+step.name;
      var words=step.summary&&step.error&&step.error.indexOf(step.summary)<0?step.summary+"; "+step.error:(step.error||step.summary||"");
      var cells=[step.name,null,dur(step.started_at,step.finished_at),words];
      cells.forEach(function(c,i){var td=document.createElement("td");if(i===1)td.appendChild(badge(step.state));else td.textContent=c;tr.appendChild(td)});
      body.appendChild(tr);
    });
    var none=document.getElementById("no-steps");if(none&&job.steps.length)none.remove();
  });
  source.addEventListener("end",function(){source.close();log.setAttribute("data-live","false")});
}
document.addEventListener("DOMContentLoaded",function(){
  showTimes();setInterval(function(){showTimes()},30000);
  var log=document.getElementById("log");
  if(log){log.scrollTop=log.scrollHeight;if(log.getAttribute("data-live")==="true"&&window.EventSource)follow(log)}
});
})();
"##;

pub async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
}

pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        SCRIPT,
    )
}
