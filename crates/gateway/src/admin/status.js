'use strict';
// No external asset: the page polls /status with the token the operator typed, and draws
// what it answers. Every value is set as text, never as HTML.
const $ = (id) => document.getElementById(id);
let timer = null;

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
}

function fill(tbody, rows, columns) {
  tbody.replaceChildren();
  for (const r of rows) {
    const tr = tbody.insertRow();
    for (const [value, cls] of columns(r)) cell(tr, value, cls);
  }
}

function chart(samples) {
  const w = 640, h = 160, pad = 20;
  const peak = Math.max(1, ...samples.map((s) => Math.max(s.toListener, s.toSender)));
  const x = (i) => samples.length < 2 ? 0 : (i * (w - 2)) / (samples.length - 1) + 1;
  const y = (v) => h - 2 - (v / peak) * (h - pad);
  $('up').setAttribute('points', samples.map((s, i) => `${x(i)},${y(s.toListener)}`).join(' '));
  $('down').setAttribute('points', samples.map((s, i) => `${x(i)},${y(s.toSender)}`).join(' '));
  $('peak').textContent = `peak ${Math.round(peak)} B/s`;
}

async function poll() {
  const token = sessionStorage.getItem('ferry-token') || '';
  try {
    const reply = await fetch('/status', { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' });
    if (!reply.ok) {
      $('state').textContent = reply.status === 401 || reply.status === 403 ? 'token refused' : 'error ' + reply.status;
      $('state').className = 'error';
      return;
    }
    const s = await reply.json();
    $('state').textContent = 'live';
    $('state').className = '';
    $('namespace').textContent = s.namespace;
    $('node').textContent = s.node || 'single';
    $('updated').textContent = new Date(s.time).toLocaleTimeString();
    fill($('entities').tBodies[0], s.entities, (e) => [
      [e.name], [e.kind], [String(e.listenerCount), 'num'],
      [e.listeners.map((l) => l.node || 'here').join(', ')],
      [String(e.activeConnections), 'num'],
    ]);
    fill($('errors').tBodies[0], s.recentErrors.slice().reverse(), (e) => [
      [new Date(e.time).toLocaleTimeString()], [e.entity || '-'], [String(e.status), 'num'], [e.message],
    ]);
    chart(s.throughput);
  } catch (err) {
    $('state').textContent = 'gateway unreachable';
    $('state').className = 'error';
  }
}

$('login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sessionStorage.setItem('ferry-token', $('token').value.trim());
  $('token').value = '';
  clearInterval(timer);
  poll();
  timer = setInterval(poll, 2000);
});
if (sessionStorage.getItem('ferry-token')) {
  poll();
  timer = setInterval(poll, 2000);
}
