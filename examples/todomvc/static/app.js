// The TodoMVC page of the Snorky example. It loads Snorky's JavaScript
// client from the Snorky server (/snorky.js beside the WebSocket endpoint)
// and keeps its list in an ArrayCollection: syncCollection fetches the list
// with the header "X-Snorky: Subscribe", acquires the subscription whose
// token came in the X-Subscription-Token header (acquireSubscription), and
// applies the deltas. The client reconnects by itself after a network
// failure or a server restart, resumes the subscription, or fetches the list
// again when it cannot: the page survives a restart without a reload.
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

  const tasks = []; // the rows, as the server sends them (an ArrayCollection's array)
  const items = new Map(); // id → <li>
  let snorky = null;
  let live = null;

  const taskById = (id) => tasks.find((t) => t.id === id);

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

  // showState shows the connection state: live once the list is loaded and
  // subscribed on an open connection.
  function showState() {
    const state = snorky ? snorky.state : 'connecting';
    const texts = {
      connecting: 'connecting…',
      reconnecting: 'offline; reconnecting…',
      closed: 'disconnected',
      loading: 'loading the list…',
      live: 'live: in sync with Snorky',
    };
    let shown = state;
    if (state === 'open') shown = live && live.state === 'live' ? 'live' : 'loading';
    status.dataset.state = shown;
    status.textContent = texts[shown] || shown;
    if (snorky && snorky.lastCloseCode && shown !== 'live') {
      status.title = 'last close: ' + snorky.lastCloseCode + ' ' + (snorky.lastCloseReason || '');
    }
  }

  async function loadList() {
    const r = await fetch('/api/tasks', { headers: { 'X-Snorky': 'Subscribe' } });
    if (!r.ok) throw new Error('GET /api/tasks: ' + r.status);
    const token = r.headers.get('X-Subscription-Token');
    if (!token) throw new Error('GET /api/tasks: no X-Subscription-Token header');
    return { items: await r.json(), token };
  }

  function start() {
    snorky = new Snorky(WebSocket, cfg.url, { datasync: Snorky.DataSync });
    const datasync = snorky.services.datasync;
    live = datasync.syncCollection({
      model: MODEL,
      collection: new Snorky.DataSync.ArrayCollection(tasks),
      load: loadList,
    });
    snorky.stateChanged.add(showState);
    live.stateChanged.add(() => { showState(); render(); });
    datasync.deltaReceived.add(() => queueMicrotask(render));
    live.ready.then(showState);
    showState();
  }

  // The client is served by the Snorky server itself, next to the
  // WebSocket endpoint.
  function loadClient() {
    const u = new URL(cfg.url);
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    u.pathname = '/snorky.js';
    u.search = '';
    const script = document.createElement('script');
    script.src = u.href;
    script.onload = start;
    script.onerror = () => {
      status.dataset.state = 'offline';
      status.textContent = 'cannot load ' + u.href + '; retrying…';
      script.remove();
      setTimeout(loadClient, 2000);
    };
    document.head.appendChild(script);
  }

  // ---- the view

  function currentFilter() {
    if (location.hash === '#/active') return 'active';
    if (location.hash === '#/completed') return 'completed';
    return 'all';
  }

  function render() {
    const all = tasks.slice().sort((a, b) => a.id - b.id);
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
      const t = taskById(id);
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
      const t = taskById(id);
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
  window.todomvc = { disconnect() { if (snorky && snorky.socket) snorky.socket.close(); } };

  render();
  loadClient();
})();
