// The TodoMVC page of the Snorky example. It speaks the Snorky wire protocol
// directly over a WebSocket (spec §2.5, §3.5): it fetches the list with the
// header "X-Snorky: Subscribe", acquires the subscription whose token came
// in the X-Subscription-Token header, and applies the deltas the server
// sends. After a disconnection it fetches the list again, for a new token.
// The page never applies its own writes: they come back as deltas, like
// everybody else's.
(function () {
  'use strict';

  const MODEL = 'Task';
  const cfg = window.SNORKY_TODOMVC;
  const $ = (sel) => document.querySelector(sel);
  const newTodo = $('.new-todo');
  const list = $('.todo-list');
  const main = $('.main');
  const footer = $('.footer');
  const toggleAll = $('.toggle-all');
  const count = $('.todo-count');
  const clear = $('.clear-completed');
  const status = $('#status');

  let tasks = new Map(); // id → row, as the server sends it
  const items = new Map(); // id → <li>
  let ws = null; // the current WebSocket
  let backoff = 250;

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  async function api(method, path, body) {
    const opts = { method, headers: {} };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(path, opts);
    if (!r.ok) {
      let msg = r.status + ' ' + r.statusText;
      try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
      throw new Error(method + ' ' + path + ': ' + msg);
    }
    return r;
  }

  // save reports a failed write and redraws, undoing what the input shows.
  function save(promise) {
    promise.catch((e) => { console.error(e); render(); });
  }

  // ---- the Snorky connection

  function connect() {
    setStatus('connecting', 'connecting…');
    const sock = new WebSocket(cfg.url);
    ws = sock;
    let callId = 0;
    let acquireId = null;
    sock.onopen = async () => {
      try {
        const r = await fetch('/api/tasks', { headers: { 'X-Snorky': 'Subscribe' } });
        if (!r.ok) throw new Error('GET /api/tasks: ' + r.status);
        const token = r.headers.get('X-Subscription-Token');
        const rows = await r.json();
        if (!token) throw new Error('GET /api/tasks: no X-Subscription-Token header');
        if (ws !== sock) return;
        tasks = new Map(rows.map((t) => [t.id, t]));
        render();
        // The deltas committed since the list was read arrive before the
        // response to this call.
        acquireId = callId++;
        sock.send(JSON.stringify({
          service: 'datasync',
          message: { command: 'acquireSubscription', params: { token }, callId: acquireId },
        }));
      } catch (e) {
        console.error(e);
        sock.close();
      }
    };
    sock.onmessage = (ev) => {
      let env;
      try { env = JSON.parse(ev.data); } catch (e) { return; }
      if (!env || env.service !== 'datasync' || !env.message) return;
      const m = env.message;
      if (m.type === 'delta') {
        apply(m.delta);
      } else if (m.type === 'response' && m.callId === acquireId) {
        backoff = 250;
        setStatus('live', 'live: in sync with Snorky');
      } else if (m.type === 'error') {
        console.error('snorky:', m.message);
        sock.close();
      }
    };
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      setStatus('offline', 'offline; reconnecting…');
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 10000);
    };
  }

  // apply changes the list by one delta (spec §3.6). An insert of a known
  // id is an update.
  function apply(d) {
    if (!d || d.model !== MODEL) return;
    switch (d.type) {
      case 'insert':
        tasks.set(d.data.id, d.data);
        break;
      case 'update': {
        const old = d.oldData && d.oldData.id;
        const prev = tasks.get(old);
        if (old !== undefined && old !== d.newData.id) tasks.delete(old);
        // Columns the server could not send (unchanged TOAST values) keep
        // their known value.
        tasks.set(d.newData.id, Object.assign({}, prev, d.newData));
        break;
      }
      case 'delete':
        tasks.delete(d.data.id);
        break;
      case 'truncate':
        tasks.clear();
        break;
      default:
        return;
    }
    render();
  }

  // ---- the view

  function currentFilter() {
    if (location.hash === '#/active') return 'active';
    if (location.hash === '#/completed') return 'completed';
    return 'all';
  }

  function render() {
    const all = [...tasks.values()].sort((a, b) => a.id - b.id);
    const filter = currentFilter();
    const shown = all.filter((t) => filter === 'all' || (filter === 'active') === !t.completed);
    const keep = new Set();
    shown.forEach((t, i) => {
      let li = items.get(t.id);
      if (!li) {
        li = createItem(t.id);
        items.set(t.id, li);
      }
      updateItem(li, t);
      keep.add(t.id);
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
    });
    for (const [id, li] of items) {
      if (!keep.has(id)) {
        li.remove();
        items.delete(id);
      }
    }
    const left = all.filter((t) => !t.completed).length;
    main.hidden = all.length === 0;
    footer.hidden = all.length === 0;
    toggleAll.checked = all.length > 0 && left === 0;
    const strong = document.createElement('strong');
    strong.textContent = String(left);
    count.replaceChildren(strong, left === 1 ? ' item left' : ' items left');
    clear.hidden = all.length === left;
    const here = location.hash || '#/';
    document.querySelectorAll('.filters a').forEach((a) => {
      a.classList.toggle('selected', a.getAttribute('href') === here);
    });
  }

  function createItem(id) {
    const li = document.createElement('li');
    li.dataset.id = String(id);
    const view = document.createElement('div');
    view.className = 'view';
    const toggle = document.createElement('input');
    toggle.className = 'toggle';
    toggle.type = 'checkbox';
    const label = document.createElement('label');
    const destroy = document.createElement('button');
    destroy.className = 'destroy';
    destroy.title = 'Delete';
    destroy.setAttribute('aria-label', 'Delete');
    view.append(toggle, label, destroy);
    const edit = document.createElement('input');
    edit.className = 'edit';
    edit.maxLength = 1000;
    li.append(view, edit);

    toggle.addEventListener('change', () => {
      save(api('PATCH', '/api/tasks/' + id, { completed: toggle.checked }));
    });
    destroy.addEventListener('click', () => save(api('DELETE', '/api/tasks/' + id)));

    let cancelled = false;
    label.addEventListener('dblclick', () => {
      const t = tasks.get(id);
      if (!t) return;
      cancelled = false;
      li.classList.add('editing');
      edit.value = t.title;
      edit.focus();
    });
    edit.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') edit.blur();
      if (e.key === 'Escape') {
        cancelled = true;
        edit.blur();
      }
    });
    edit.addEventListener('blur', () => {
      if (!li.classList.contains('editing')) return;
      li.classList.remove('editing');
      const t = tasks.get(id);
      const title = edit.value.trim();
      if (cancelled || !t) return;
      if (title === '') save(api('DELETE', '/api/tasks/' + id));
      else if (title !== t.title) save(api('PATCH', '/api/tasks/' + id, { title }));
    });
    return li;
  }

  function updateItem(li, t) {
    li.classList.toggle('completed', !!t.completed);
    li.querySelector('.toggle').checked = !!t.completed;
    li.querySelector('label').textContent = t.title;
  }

  newTodo.addEventListener('keydown', (e) => {
    if (e.key !== 'Enter') return;
    const title = newTodo.value.trim();
    if (title === '') return;
    api('POST', '/api/tasks', { title })
      .then(() => { if (newTodo.value.trim() === title) newTodo.value = ''; })
      .catch((err) => console.error(err));
  });
  toggleAll.addEventListener('change', () => {
    save(api('PATCH', '/api/tasks', { completed: toggleAll.checked }));
  });
  clear.addEventListener('click', () => save(api('DELETE', '/api/tasks?completed=true')));
  window.addEventListener('hashchange', render);

  // For the end-to-end test: drop the connection as a network failure would.
  window.todomvc = { disconnect() { if (ws) ws.close(); } };

  render();
  connect();
})();
