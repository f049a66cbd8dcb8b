// The chat example's page: Chat (messages, presence) and Cursors over one
// WebSocket, speaking the Snorky protocol directly (examples/PROTOCOL.md).
(function () {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const CHANNEL = 'lobby';
  const DOCUMENT = 'board';
  const HANDLE = 1; // our cursor's private handle

  let ws = null;
  let me = null;
  const pending = new Map(); // callId → {resolve, reject}
  let nextCall = 0;
  const members = new Set();
  const cursors = new Map(); // publicHandle → element

  function setStatus(state, text) {
    $('status').dataset.state = state;
    $('status').textContent = text;
  }

  function call(service, command, params) {
    const callId = nextCall++;
    ws.send(JSON.stringify({ service, message: { command, params, callId } }));
    return new Promise((resolve, reject) => pending.set(callId, { resolve, reject }));
  }

  function colorOf(name) {
    let h = 0;
    for (const c of String(name)) h = (h * 31 + c.codePointAt(0)) % 360;
    return `hsl(${h}, 60%, 40%)`;
  }

  function renderMembers() {
    const ul = $('members');
    ul.replaceChildren(...[...members].sort().map((m) => {
      const li = document.createElement('li');
      li.textContent = m;
      li.dataset.name = m;
      return li;
    }));
  }

  function say(text, from) {
    const li = document.createElement('li');
    if (from === undefined) {
      li.className = 'system';
      li.textContent = text;
    } else {
      const who = document.createElement('span');
      who.className = 'from';
      who.textContent = from;
      li.append(who, document.createTextNode(text));
      li.dataset.from = from;
    }
    $('messages').append(li);
    $('messages').scrollTop = $('messages').scrollHeight;
  }

  function placeCursor(c) {
    let el = cursors.get(c.publicHandle);
    if (!el) {
      el = document.createElement('div');
      el.className = 'cursor';
      $('board').append(el);
      cursors.set(c.publicHandle, el);
    }
    if (c.owner !== undefined) {
      el.textContent = String(c.owner);
      el.dataset.owner = String(c.owner);
      el.style.color = colorOf(c.owner);
    }
    const p = c.position || {};
    if (typeof p.x === 'number' && typeof p.y === 'number') {
      el.style.left = p.x + 'px';
      el.style.top = p.y + 'px';
      el.dataset.x = p.x;
      el.dataset.y = p.y;
    }
  }

  function removeCursor(c) {
    const el = cursors.get(c.publicHandle);
    if (el) el.remove();
    cursors.delete(c.publicHandle);
  }

  function onNotification(service, m) {
    if (service === 'chat' && m.type === 'message') say(m.body, m.from);
    else if (service === 'chat' && m.type === 'presence') {
      if (m.status === 'joined') { members.add(m.from); say(`${m.from} joined`); }
      if (m.status === 'left') { members.delete(m.from); say(`${m.from} left`); }
      renderMembers();
    } else if (service === 'cursors' && (m.type === 'cursorAdded' || m.type === 'cursorUpdated')) placeCursor(m.cursor);
    else if (service === 'cursors' && m.type === 'cursorRemoved') removeCursor(m.cursor);
  }

  async function enter(url) {
    setStatus('connecting', 'connecting…');
    ws = new WebSocket(url);
    ws.onmessage = (ev) => {
      const env = JSON.parse(ev.data);
      const m = env.message || {};
      if (m.type === 'response' || m.type === 'error') {
        const p = pending.get(m.callId);
        pending.delete(m.callId);
        if (!p) return;
        if (m.type === 'response') p.resolve(m.data);
        else p.reject(new Error(`${env.service}: ${m.message}`));
        return;
      }
      onNotification(env.service, m);
    };
    ws.onclose = (ev) => {
      setStatus('error', `disconnected (${ev.code} ${ev.reason || ''})`);
      for (const p of pending.values()) p.reject(new Error('disconnected'));
      pending.clear();
    };
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error('the WebSocket failed to open'));
    });
    const joined = await call('chat', 'join', { channel: CHANNEL });
    for (const m of joined.members) members.add(m);
    renderMembers();
    const doc = await call('cursors', 'join', { document: DOCUMENT });
    for (const c of doc.cursors) placeCursor(c);
    await call('cursors', 'createCursor', { privateHandle: HANDLE, document: DOCUMENT, position: null, status: 'here' });
    setStatus('live', `live as ${me}`);
  }

  $('login').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('login-error').textContent = '';
    try {
      const r = await fetch('/api/identity', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: $('name').value.trim() }),
      });
      const body = await r.json();
      if (!r.ok) throw new Error(body.error || r.statusText);
      me = body.name;
      $('login').hidden = true;
      $('room').hidden = false;
      await enter(body.url);
    } catch (e) {
      $('login-error').textContent = e.message;
      setStatus('error', 'not connected');
    }
  });

  $('say').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = $('text').value.trim();
    if (!text) return;
    $('text').value = '';
    // The server echoes our own message to us, like everyone's.
    call('chat', 'send', { channel: CHANNEL, body: text }).catch((e) => say(e.message));
  });

  // Our pointer on the board, at most every 40 ms.
  let last = 0, timer = null, latest = null;
  function sendPosition() {
    timer = null;
    last = Date.now();
    if (ws && ws.readyState === WebSocket.OPEN) {
      call('cursors', 'updateCursor', { privateHandle: HANDLE, newData: { position: latest } }).catch(() => {});
    }
  }
  $('board').addEventListener('mousemove', (ev) => {
    const r = $('board').getBoundingClientRect();
    latest = { x: Math.round(ev.clientX - r.left), y: Math.round(ev.clientY - r.top) };
    if (timer) return;
    timer = setTimeout(sendPosition, Math.max(0, 40 - (Date.now() - last)));
  });

  window.chat = { disconnect: () => ws && ws.close() };
})();
