// Small fakes for the unit tests: a socket class that records what the
// client does, and a manual clock.
import Snorky from '../snorky.mjs';

export { Snorky };

// fakeSocketClass returns a socket class whose instances are recorded in
// .sockets; each has sent (parsed envelopes), open(), receive(), and
// serverClose(code, reason).
export function fakeSocketClass() {
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.closed = null;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      FakeSocket.sockets.push(this);
    }
    send(text) {
      if (this.closed) throw new Error('send on a closed socket');
      this.sent.push(JSON.parse(text));
    }
    close(code, reason) {
      this.closed = { code, reason };
    }
    open() {
      this.onopen && this.onopen({});
    }
    receive(service, message) {
      this.onmessage({ data: JSON.stringify({ service, message }) });
    }
    serverClose(code, reason = '') {
      this.closed = { code, reason };
      this.onclose && this.onclose({ code, reason });
    }
    // reply answers the last request of command with data (or an error).
    reply(command, data, { error } = {}) {
      const req = [...this.sent].reverse().find((e) => e.message.command === command);
      if (!req) throw new Error(`no ${command} was sent`);
      const m = error
        ? { type: 'error', callId: req.message.callId, message: error }
        : { type: 'response', callId: req.message.callId, data };
      this.receive(req.service, m);
      return req;
    }
    commands() {
      return this.sent.map((e) => `${e.service}.${e.message.command}`);
    }
  }
  FakeSocket.sockets = [];
  FakeSocket.last = () => FakeSocket.sockets[FakeSocket.sockets.length - 1];
  return FakeSocket;
}

// fakeClock runs timers when advanced.
export function fakeClock() {
  let now = 0;
  let seq = 0;
  const timers = new Map();
  return {
    now: () => now,
    setTimeout(fn, ms) {
      const id = ++seq;
      timers.set(id, { at: now + ms, fn });
      return id;
    },
    clearTimeout(id) {
      timers.delete(id);
    },
    pending() {
      return [...timers.values()].map((t) => t.at - now).sort((a, b) => a - b);
    },
    advance(ms) {
      const end = now + ms;
      for (;;) {
        let next = null;
        for (const [id, t] of timers) {
          if (t.at <= end && (next === null || t.at < timers.get(next).at)) next = id;
        }
        if (next === null) break;
        const t = timers.get(next);
        timers.delete(next);
        now = t.at;
        t.fn();
      }
      now = end;
    },
  };
}

// flush lets promise callbacks run.
export const flush = () => new Promise((resolve) => setImmediate(resolve));

// quiet silences console.error for the duration of fn, returning what was logged.
export async function quiet(fn) {
  const logged = [];
  const orig = console.error;
  console.error = (...args) => logged.push(args.map(String).join(' '));
  try {
    await fn();
  } finally {
    console.error = orig;
  }
  return logged;
}
