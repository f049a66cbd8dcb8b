// The Snorky JavaScript client: the body shared by snorky.js (classic script,
// global Snorky) and snorky.mjs (ES module). build.mjs wraps it; edit this
// file, then run `npm run build` (the tests check that the outputs are current).
//
// A drop-in superset of the original Snorky client (spec §5): the same
// classes, signals and RPC methods, plus reconnection with backoff, PubSub,
// Chat and Cursors restored after a reconnect, resumable DataSync
// subscriptions (§3.9), must-refetch signals, an idempotent delta processor,
// awaitXid and a connection state.

var VERSION = "1.0.0";

// ---------------------------------------------------------------------------
// Utilities

function hasOwn(obj, key) {
  return Object.prototype.hasOwnProperty.call(obj, key);
}

function isObject(v) {
  return v !== null && typeof v === "object";
}

function logError() {
  if (typeof console !== "undefined" && console.error) {
    console.error.apply(console, arguments);
  }
}

// CycleError is thrown by stableStringify for cyclic input.
function CycleError(message) {
  var e = new Error(message || "Cyclic structure");
  Object.setPrototypeOf(e, CycleError.prototype);
  return e;
}
CycleError.prototype = Object.create(Error.prototype, {
  constructor: { value: CycleError, writable: true, configurable: true },
  name: { value: "CycleError", writable: true, configurable: true },
});

// stableStringify returns JSON text with object keys sorted, so that equal
// values give equal text (used to index channels and documents).
function stableStringify(value) {
  var seen = [];
  function walk(v) {
    if (v !== null && typeof v === "object" && typeof v.toJSON === "function") {
      v = v.toJSON();
    }
    if (v === undefined || typeof v === "function" || typeof v === "symbol") {
      return undefined;
    }
    if (v === null || typeof v !== "object") {
      return JSON.stringify(v);
    }
    if (seen.indexOf(v) !== -1) {
      throw new CycleError("stableStringify: cyclic structure");
    }
    seen.push(v);
    var out;
    if (Array.isArray(v)) {
      var parts = [];
      for (var i = 0; i < v.length; i++) {
        var s = walk(v[i]);
        parts.push(s === undefined ? "null" : s);
      }
      out = "[" + parts.join(",") + "]";
    } else {
      var keys = Object.keys(v).sort();
      var fields = [];
      for (var k = 0; k < keys.length; k++) {
        var fv = walk(v[keys[k]]);
        if (fv !== undefined) {
          fields.push(JSON.stringify(keys[k]) + ":" + fv);
        }
      }
      out = "{" + fields.join(",") + "}";
    }
    seen.pop();
    return out;
  }
  return walk(value);
}

// Class defines a constructor: Class(Parent?, {constructor?, ...methods,
// STATIC: {...}}). Without a constructor of its own, a class calls its
// parent's. Statics are inherited. Works with and without `new`.
function Class(Parent, def) {
  if (def === undefined && typeof Parent !== "function") {
    def = Parent;
    Parent = null;
  }
  def = def || {};
  var ctor;
  if (hasOwn(def, "constructor") && typeof def.constructor === "function") {
    // Wrapped: a method shorthand `constructor() {}` cannot be called with new.
    var own = def.constructor;
    ctor = function () {
      return own.apply(this, arguments);
    };
  } else if (Parent) {
    ctor = function () {
      return Parent.apply(this, arguments);
    };
  } else {
    ctor = function () {};
  }
  if (Parent) {
    ctor.prototype = Object.create(Parent.prototype);
    for (var sk in Parent) {
      if (hasOwn(Parent, sk) && sk !== "prototype" && sk !== "Super") {
        ctor[sk] = Parent[sk];
      }
    }
    ctor.Super = Parent;
  }
  Object.defineProperty(ctor.prototype, "constructor", { value: ctor, writable: true, configurable: true });
  for (var k in def) {
    if (hasOwn(def, k) && k !== "constructor" && k !== "STATIC") {
      ctor.prototype[k] = def[k];
    }
  }
  if (def.STATIC) {
    for (var s in def.STATIC) {
      if (hasOwn(def.STATIC, s)) {
        ctor[s] = def.STATIC[s];
      }
    }
  }
  return ctor;
}

// ---------------------------------------------------------------------------
// Signals (the js-signals interface)

function SignalBinding(signal, listener, isOnce, context, priority) {
  this._signal = signal;
  this._listener = listener;
  this._isOnce = isOnce;
  this.context = context;
  this._priority = priority || 0;
  this.active = true;
  this.params = null;
}
SignalBinding.prototype.execute = function (args) {
  if (!this.active || !this._signal) {
    return undefined;
  }
  var params = this.params ? this.params.concat(args) : args;
  var r = this._listener.apply(this.context, params);
  if (this._isOnce) {
    this.detach();
  }
  return r;
};
SignalBinding.prototype.detach = function () {
  return this.isBound() ? this._signal.remove(this._listener, this.context) : null;
};
SignalBinding.prototype.isBound = function () {
  return !!this._signal && !!this._listener;
};
SignalBinding.prototype.isOnce = function () {
  return this._isOnce;
};
SignalBinding.prototype.getListener = function () {
  return this._listener;
};
SignalBinding.prototype.getSignal = function () {
  return this._signal;
};
SignalBinding.prototype._destroy = function () {
  this._signal = null;
  this._listener = null;
  this.context = null;
};

function Signal() {
  this._bindings = [];
  this._prevParams = null;
  this._shouldPropagate = true;
  this.memorize = false;
  this.active = true;
}
Signal.prototype.VERSION = "1.0.0-snorky";
Signal.prototype._indexOf = function (listener, context) {
  for (var i = this._bindings.length - 1; i >= 0; i--) {
    var b = this._bindings[i];
    if (b._listener === listener && b.context === context) {
      return i;
    }
  }
  return -1;
};
Signal.prototype._register = function (listener, isOnce, context, priority) {
  if (typeof listener !== "function") {
    throw new Error("listener is a required param of add() and addOnce() and should be a Function.");
  }
  var i = this._indexOf(listener, context);
  var binding;
  if (i !== -1) {
    binding = this._bindings[i];
    if (binding.isOnce() !== isOnce) {
      throw new Error("You cannot add" + (isOnce ? "" : "Once") + "() then add" + (isOnce ? "Once" : "") + "() the same listener without removing the relationship first.");
    }
  } else {
    binding = new SignalBinding(this, listener, isOnce, context, priority);
    var n = this._bindings.length;
    do {
      --n;
    } while (this._bindings[n] && binding._priority <= this._bindings[n]._priority);
    this._bindings.splice(n + 1, 0, binding);
  }
  if (this.memorize && this._prevParams) {
    binding.execute(this._prevParams);
  }
  return binding;
};
Signal.prototype.add = function (listener, context, priority) {
  return this._register(listener, false, context, priority);
};
Signal.prototype.addOnce = function (listener, context, priority) {
  return this._register(listener, true, context, priority);
};
Signal.prototype.remove = function (listener, context) {
  var i = this._indexOf(listener, context);
  if (i !== -1) {
    this._bindings[i]._destroy();
    this._bindings.splice(i, 1);
  }
  return listener;
};
Signal.prototype.removeAll = function () {
  for (var i = this._bindings.length - 1; i >= 0; i--) {
    this._bindings[i]._destroy();
  }
  this._bindings.length = 0;
};
Signal.prototype.has = function (listener, context) {
  return this._indexOf(listener, context) !== -1;
};
Signal.prototype.getNumListeners = function () {
  return this._bindings.length;
};
Signal.prototype.halt = function () {
  this._shouldPropagate = false;
};
Signal.prototype.forget = function () {
  this._prevParams = null;
};
Signal.prototype.dispose = function () {
  this.removeAll();
  this._bindings = [];
  this._prevParams = null;
};
Signal.prototype.dispatch = function () {
  if (!this.active) {
    return;
  }
  var args = Array.prototype.slice.call(arguments);
  if (this.memorize) {
    this._prevParams = args;
  }
  var bindings = this._bindings.slice();
  this._shouldPropagate = true;
  for (var i = bindings.length - 1; i >= 0; i--) {
    if (!this._shouldPropagate || bindings[i].execute(args) === false) {
      break;
    }
  }
};
Signal.prototype.toString = function () {
  return "[Signal active:" + this.active + " numListeners:" + this.getNumListeners() + "]";
};

function newSignal() {
  return new Snorky.Signal();
}

// ---------------------------------------------------------------------------
// The connection

var STATES = ["connecting", "open", "reconnecting", "closed"];

var defaultClock = {
  setTimeout: function (fn, ms) {
    return setTimeout(fn, ms);
  },
  clearTimeout: function (id) {
    clearTimeout(id);
  },
  now: function () {
    return Date.now();
  },
};

// Snorky(socketClass, url, services, options) opens a connection at once.
// options: debug, reconnect (default true), backoff {initial, max, factor,
// rateLimited, stableAfter} in ms, clock {setTimeout, clearTimeout, now} and
// random (for tests).
function Snorky(socketClass, url, services, options) {
  if (!(this instanceof Snorky)) {
    return new Snorky(socketClass, url, services, options);
  }
  options = options || {};
  this.socketClass = socketClass;
  this.address = url;
  this.debug = !!options.debug;
  this.options = options;
  this.reconnect = options.reconnect !== false;
  var b = options.backoff || {};
  this.backoff = {
    initial: b.initial != null ? b.initial : 500,
    max: b.max != null ? b.max : 30000,
    factor: b.factor != null ? b.factor : 2,
    rateLimited: b.rateLimited != null ? b.rateLimited : 30000,
    stableAfter: b.stableAfter != null ? b.stableAfter : 5000,
  };
  this._clock = options.clock || defaultClock;
  this._random = options.random || Math.random;

  this.isConnected = false;
  this.isConnecting = false;
  this.state = "closed";
  this.lastCloseCode = null;
  this.lastCloseReason = null;
  this.attempts = 0;
  this.connected = newSignal();
  this.disconnected = newSignal();
  this.stateChanged = newSignal();
  this.socket = null;
  this._queue = [];
  this._timer = null;
  this._wantOpen = false;
  this._hadOpen = false;
  this._lazy = false;
  this._openedAt = 0;

  this.services = {};
  for (var name in services || {}) {
    if (hasOwn(services, name)) {
      this.services[name] = new services[name](name, this);
    }
  }
  this.connect();
}

Snorky.VERSION = VERSION;

Snorky.prototype._setState = function (state) {
  if (this.state === state) {
    return;
  }
  var prev = this.state;
  this.state = state;
  this.stateChanged.dispatch(state, prev);
};

Snorky.prototype._log = function () {
  if (this.debug && typeof console !== "undefined") {
    console.log.apply(console, ["[snorky]"].concat(Array.prototype.slice.call(arguments)));
  }
};

// connect opens the socket unless one is open or opening, or a reconnection
// is already scheduled: calling it again never opens a second socket.
Snorky.prototype.connect = function () {
  this._wantOpen = true;
  this._lazy = false;
  if (this.socket || this._timer !== null) {
    return;
  }
  this._open();
};

// reconnectNow skips the wait of a scheduled reconnection.
Snorky.prototype.reconnectNow = function () {
  if (this._timer !== null) {
    this._clock.clearTimeout(this._timer);
    this._timer = null;
  }
  this.connect();
};

Snorky.prototype._open = function () {
  var self = this;
  this.isConnecting = true;
  this.isConnected = false;
  this._setState(this._hadOpen || this.attempts > 0 ? "reconnecting" : "connecting");
  var sock;
  try {
    sock = new this.socketClass(this.address);
  } catch (e) {
    this.isConnecting = false;
    logError("Snorky: could not create the socket:", e);
    this._closed(sock, { code: 1006, reason: String(e && e.message) });
    return;
  }
  this.socket = sock;
  sock.onopen = function () {
    if (self.socket === sock) {
      self._opened();
    }
  };
  sock.onmessage = function (event) {
    if (self.socket === sock) {
      self._received(event);
    }
  };
  sock.onclose = function (event) {
    if (self.socket === sock) {
      self._closed(sock, event || {});
    }
  };
  sock.onerror = function () {};
};

Snorky.prototype._eachService = function (method) {
  var args = Array.prototype.slice.call(arguments, 1);
  for (var name in this.services) {
    var svc = this.services[name];
    if (svc && typeof svc[method] === "function") {
      try {
        svc[method].apply(svc, args);
      } catch (e) {
        logError("Snorky: " + name + "." + method + ":", e);
      }
    }
  }
};

Snorky.prototype._opened = function () {
  var reopened = this._hadOpen;
  this.isConnecting = false;
  this.isConnected = true;
  this._hadOpen = true;
  this._openedAt = this._clock.now();
  this._log("open", this.address);
  // Identity first, then what the app queued, then the rest of the state:
  // the server handles messages in order.
  if (reopened) {
    this._eachService("_restoreIdentity");
  }
  var queue = this._queue;
  this._queue = [];
  for (var i = 0; i < queue.length; i++) {
    this._write(queue[i]);
  }
  this._eachService("_markSent");
  if (reopened) {
    this._eachService("_restore");
    this._eachService("_settleOrphans");
  }
  this._setState("open");
  this.connected.dispatch();
};

Snorky.prototype._received = function (event) {
  var data = event.data;
  if (typeof data !== "string") {
    data = data == null ? "" : String(data);
  }
  this._log("<", data);
  var env;
  try {
    env = JSON.parse(data);
  } catch (e) {
    logError("Snorky: invalid JSON received:", data);
    return;
  }
  if (!isObject(env)) {
    return;
  }
  var svc = typeof env.service === "string" && hasOwn(this.services, env.service) ? this.services[env.service] : null;
  if (!svc) {
    if (env.service === null && isObject(env.message) && env.message.type === "error") {
      logError("Snorky: server error:", env.message.message);
    }
    return;
  }
  svc.packetReceived.dispatch(env.message);
};

// retryDelay is the wait before reconnection attempt n (0-based) after a
// close with code: exponential backoff with jitter (between half and all of
// the step); after 4029 at least backoff.rateLimited (and up to half as
// much again); the first attempt after 4008 at most 100 ms.
Snorky.prototype.retryDelay = function (n, code) {
  var b = this.backoff;
  var step = Math.min(b.max, b.initial * Math.pow(b.factor, n));
  if (code === 4029) {
    // Rate limited: at least backoff.rateLimited, up to half as much again.
    return Math.round(Math.max(step, b.rateLimited) * (1 + this._random() / 2));
  }
  if (code === 4008 && n === 0) {
    step = Math.min(step, 100);
  }
  return Math.round(step / 2 + (step / 2) * this._random());
};

Snorky.prototype._closed = function (sock, event) {
  var code = typeof event.code === "number" ? event.code : 1006;
  var reason = event.reason || "";
  var wasOpen = this.isConnected;
  this.socket = null;
  this.isConnected = false;
  this.isConnecting = false;
  this.lastCloseCode = code;
  this.lastCloseReason = reason;
  this._log("closed", code, reason);
  if (wasOpen && this._clock.now() - this._openedAt >= this.backoff.stableAfter) {
    this.attempts = 0;
  }
  this._eachService("_disconnected");
  if (code === 1009) {
    logError("Snorky: the server closed the connection: a message was too big");
  }
  if (this._wantOpen && this.reconnect && code !== 4001 && code !== 4002) {
    var delay = this.retryDelay(this.attempts, code);
    this.attempts++;
    var self = this;
    this._setState("reconnecting");
    this._timer = this._clock.setTimeout(function () {
      self._timer = null;
      if (self._wantOpen && !self.socket) {
        self._open();
      }
    }, delay);
  } else {
    if (code === 4002 && this._wantOpen && this.reconnect) {
      this._lazy = true; // reconnect when the app next sends
    }
    this._wantOpen = false;
    this._setState("closed");
  }
  this.disconnected.dispatch();
};

// disconnect closes the socket and stops reconnecting until connect().
Snorky.prototype.disconnect = function () {
  this._wantOpen = false;
  this._lazy = false;
  if (this._timer !== null) {
    this._clock.clearTimeout(this._timer);
    this._timer = null;
  }
  var sock = this.socket;
  var wasOpen = this.isConnected || this.isConnecting;
  this.socket = null;
  this.isConnected = false;
  this.isConnecting = false;
  if (sock) {
    try {
      sock.close(1000, "bye");
    } catch (e) {
      try {
        sock.close();
      } catch (e2) {
        /* already closed */
      }
    }
    this.lastCloseCode = 1000;
    this.lastCloseReason = "bye";
  }
  this._setState("closed");
  if (wasOpen) {
    this._eachService("_disconnected");
    this.disconnected.dispatch();
  }
};

Snorky.prototype._write = function (text) {
  this._log(">", text);
  this.socket.send(text);
};

// sendMessage sends one envelope; before the socket opens it is queued.
Snorky.prototype.sendMessage = function (serviceName, message) {
  var text = JSON.stringify({ service: serviceName, message: message });
  if (this.isConnected && this.socket) {
    this._write(text);
    return true;
  }
  this._queue.push(text);
  if (this._lazy) {
    this.connect();
  }
  return false;
};

// ---------------------------------------------------------------------------
// Services

var Service = Class({
  constructor: function (name, snorky) {
    this.name = name;
    this.snorky = snorky;
    this.packetReceived = newSignal();
    this.packetReceived.add(this.onMessage, this);
    this.init();
  },
  init: function () {},
  onMessage: function () {},
  sendMessage: function (message) {
    return this.snorky.sendMessage(this.name, message);
  },
});

var RPCService = Class(Service, {
  init: function () {
    this.callIdCounter = 0;
    this.calls = {};
    this.notificationReceived = newSignal();
    this._orphans = [];
    this._restored = {}; // command + key → the promise of its restoration on this socket
  },
  rpcCall: function (command, params) {
    var self = this;
    var callId = this.callIdCounter++;
    var P = Snorky.Promise || Promise;
    return new P(function (resolve, reject) {
      var call = { resolve: resolve, reject: reject, command: command, params: params, sent: false };
      self.calls[callId] = call;
      call.sent = self.sendMessage({ command: command, params: params, callId: callId });
    });
  },
  onMessage: function (message) {
    if (!isObject(message)) {
      logError("Snorky: " + this.name + ": message is not an object:", message);
      return;
    }
    if (message.type === "response" || message.type === "error") {
      var call = typeof message.callId === "number" && hasOwn(this.calls, message.callId) ? this.calls[message.callId] : null;
      if (!call) {
        logError("Snorky: " + this.name + ": reply to an unknown call:", message);
        return;
      }
      delete this.calls[message.callId];
      if (message.type === "response") {
        call.resolve(message.data);
      } else {
        call.reject(new Error(message.message));
      }
    } else if (message.type === undefined) {
      logError("Snorky: " + this.name + ": message without type:", message);
    } else {
      this.notificationReceived.dispatch(message);
      this.onNotification(message);
    }
  },
  onNotification: function (message) {
    logError("Snorky: " + this.name + ": unknown notification type:", message.type);
  },
  // _disconnected rejects the calls sent on the closed socket: their
  // replies cannot come. A call of what is restored after a reconnect
  // (subscribe, join, …) is settled by its restoration instead. Queued
  // calls are sent on the next socket.
  _disconnected: function () {
    this._restored = {};
    for (var id in this.calls) {
      var call = this.calls[id];
      if (call.sent) {
        delete this.calls[id];
        if (call.key !== undefined) {
          this._orphans.push(call);
        } else {
          call.reject(new Error("Connection lost"));
        }
      }
    }
  },
  // _track marks the call just made as restorable under key.
  _track: function (key) {
    var call = this.calls[this.callIdCounter - 1];
    if (call) {
      call.key = key;
    }
  },
  // _restoreCall makes command again after a reconnect; the calls of the
  // same command and key that the lost socket left unanswered get its
  // result. A failure is logged.
  _restoreCall: function (command, params, key) {
    var self = this;
    var orphans = this._orphans.filter(function (c) {
      return c.command === command && c.key === key;
    });
    this._orphans = this._orphans.filter(function (c) {
      return orphans.indexOf(c) === -1;
    });
    var p = this.rpcCall(command, params);
    this._track(key);
    var restored = p.then(
      function (data) {
        orphans.forEach(function (c) {
          c.resolve(data);
        });
        return data;
      },
      function (err) {
        orphans.forEach(function (c) {
          c.reject(err);
        });
        logError("Snorky: " + self.name + ": restoring after a reconnect: " + command + ":", err && err.message);
        throw err;
      }
    );
    this._restored[command + " " + key] = restored;
    return restored;
  },
  // _alreadyRestored returns the restoration of command on key made on this
  // socket, if any: an original app that subscribes again on `connected`
  // gets its result instead of "Already subscribed".
  _alreadyRestored: function (command, key) {
    return hasOwn(this._restored, command + " " + key) ? this._restored[command + " " + key] : null;
  },
  // _settleOrphans resolves the unanswered calls of things no longer
  // wanted (unsubscribed while disconnected).
  _settleOrphans: function () {
    var orphans = this._orphans;
    this._orphans = [];
    orphans.forEach(function (c) {
      c.resolve(null);
    });
  },
  // _markSent marks the calls just flushed from the queue as sent.
  _markSent: function () {
    for (var id in this.calls) {
      var c = this.calls[id];
      c.justFlushed = !c.sent;
      c.sent = true;
    }
  },
  // _isQueued reports whether a call of command on key is queued or was
  // flushed by this open (so restoring it would send it twice).
  _isQueued: function (command, key) {
    for (var id in this.calls) {
      var c = this.calls[id];
      if ((!c.sent || c.justFlushed) && c.command === command && c.key === key) {
        return true;
      }
    }
    return false;
  },
  STATIC: {
    addRPCMethods: function (names) {
      var proto = this.prototype;
      names.forEach(function (name) {
        if (name in proto) {
          throw new Error("Method already exists: " + name);
        }
        proto[name] = function (params) {
          return this.rpcCall(name, params || {});
        };
      });
    },
  },
});

function ignore() {}

// A keyed set of things to restore after a reconnect (channels, names,
// documents), keyed by stableStringify.
function trackedCall(svc, command, params, field, onOk, onErr) {
  var key = stableStringify(params[field]);
  var p = svc.rpcCall(command, params);
  svc._track(key);
  return p.then(
    function (data) {
      if (onOk) onOk(key, data);
      return data;
    },
    function (err) {
      if (onErr) onErr(key, err);
      throw err;
    }
  );
}

var PubSub = Class(RPCService, {
  init: function () {
    RPCService.prototype.init.call(this);
    this.messagePublished = newSignal();
    this.onMessagePublished = null;
    this._channels = {};
  },
  subscribe: function (params) {
    params = params || {};
    var self = this;
    var key = stableStringify(params.channel);
    var restored = this._alreadyRestored("subscribe", key);
    if (restored && hasOwn(this._channels, key)) {
      return restored;
    }
    var had = hasOwn(this._channels, key);
    this._channels[key] = params.channel;
    return trackedCall(this, "subscribe", params, "channel", null, function (k, err) {
      if (!had && err.message !== "Connection lost") {
        delete self._channels[k];
      }
    });
  },
  unsubscribe: function (params) {
    params = params || {};
    delete this._channels[stableStringify(params.channel)];
    return this.rpcCall("unsubscribe", params);
  },
  publish: function (params) {
    return this.rpcCall("publish", params || {});
  },
  _restore: function () {
    for (var key in this._channels) {
      if (!this._isQueued("subscribe", key)) {
        this._restoreCall("subscribe", { channel: this._channels[key] }, key).then(null, ignore);
      }
    }
  },
  onNotification: function (message) {
    if (message.type === "message") {
      this.messagePublished.dispatch(message);
      if (typeof this.onMessagePublished === "function") {
        this.onMessagePublished(message);
      }
    } else {
      RPCService.prototype.onNotification.call(this, message);
    }
  },
});

var Messaging = Class(RPCService, {
  init: function () {
    RPCService.prototype.init.call(this);
    this.messageReceived = newSignal();
    this.onParticipantMessage = null;
    this._names = {};
  },
  registerParticipant: function (params) {
    params = params || {};
    var self = this;
    var key = stableStringify(params.name);
    var restored = this._alreadyRestored("registerParticipant", key);
    if (restored && hasOwn(this._names, key)) {
      return restored;
    }
    this._names[key] = params.name;
    return trackedCall(this, "registerParticipant", params, "name", null, function (k, err) {
      if (err.message !== "Connection lost") {
        delete self._names[k];
      }
    });
  },
  unregisterParticipant: function (params) {
    params = params || {};
    delete this._names[stableStringify(params.name)];
    return this.rpcCall("unregisterParticipant", params);
  },
  listParticipants: function (params) {
    return this.rpcCall("listParticipants", params || {});
  },
  send: function (params) {
    return this.rpcCall("send", params || {});
  },
  _restore: function () {
    for (var key in this._names) {
      if (!this._isQueued("registerParticipant", key)) {
        this._restoreCall("registerParticipant", { name: this._names[key] }, key).then(null, ignore);
      }
    }
  },
  onNotification: function (message) {
    if (message.type === "message") {
      this.messageReceived.dispatch(message);
      if (typeof this.onParticipantMessage === "function") {
        this.onParticipantMessage(message);
      }
    } else {
      RPCService.prototype.onNotification.call(this, message);
    }
  },
});

var Identity = Class(RPCService, {
  init: function () {
    RPCService.prototype.init.call(this);
    this.identity = undefined;
    this._token = null;
  },
  authenticate: function (params) {
    params = params || {};
    var self = this;
    var token = params.token;
    var prev = this._token;
    this._token = token;
    var p = this.rpcCall("authenticate", params);
    this._track("token");
    return p.then(
      function (identity) {
        self.identity = identity;
        return identity;
      },
      function (err) {
        if (self._token === token) self._token = prev;
        throw err;
      }
    );
  },
  _restoreIdentity: function () {
    if (this._token !== null && !this._isQueued("authenticate", "token")) {
      var self = this;
      this._restoreCall("authenticate", { token: this._token }, "token").then(function (identity) {
        self.identity = identity;
      }, ignore);
    }
  },
  onNotification: function (message) {
    RPCService.prototype.onNotification.call(this, message);
  },
});

var Chat = Class(RPCService, {
  init: function () {
    RPCService.prototype.init.call(this);
    this.messageReceived = newSignal();
    this.presenceReceived = newSignal();
    this.readReceived = newSignal();
    this.rejoined = newSignal();
    this._channels = {};
  },
  join: function (params) {
    params = params || {};
    var self = this;
    var key = stableStringify(params.channel);
    var restored = this._alreadyRestored("join", key);
    if (restored && hasOwn(this._channels, key)) {
      return restored;
    }
    var had = hasOwn(this._channels, key);
    this._channels[key] = params.channel;
    return trackedCall(this, "join", params, "channel", null, function (k, err) {
      if (!had && err.message !== "Connection lost") {
        delete self._channels[k];
      }
    });
  },
  leave: function (params) {
    params = params || {};
    delete this._channels[stableStringify(params.channel)];
    return this.rpcCall("leave", params);
  },
  send: function (params) {
    return this.rpcCall("send", params || {});
  },
  read: function (params) {
    return this.rpcCall("read", params || {});
  },
  _restore: function () {
    var self = this;
    Object.keys(this._channels).forEach(function (key) {
      if (self._isQueued("join", key)) {
        return;
      }
      var channel = self._channels[key];
      self._restoreCall("join", { channel: channel }, key).then(function (result) {
        self.rejoined.dispatch(channel, result);
      }, ignore);
    });
  },
  onNotification: function (message) {
    if (message.type === "message") {
      this.messageReceived.dispatch(message);
    } else if (message.type === "presence") {
      this.presenceReceived.dispatch(message);
    } else if (message.type === "read") {
      this.readReceived.dispatch(message);
    } else {
      RPCService.prototype.onNotification.call(this, message);
    }
  },
});

// ---------------------------------------------------------------------------
// Cursors

var Cursor = Class({
  constructor: function (data) {
    data = data || {};
    this.publicHandle = data.publicHandle;
    this.document = data.document;
    this.position = data.position;
    this.status = data.status;
    this.owner = data.owner;
  },
});

var ForeignCursor = Class(Cursor, {
  isMine: false,
  _set: function (data) {
    for (var k in data) {
      if (hasOwn(data, k)) {
        this[k] = data[k];
      }
    }
  },
});

var OwnCursor = Class(Cursor, {
  constructor: function (doc, privateHandle, position, status) {
    Cursor.call(this, { document: doc.name, position: position, status: status });
    this.privateHandle = privateHandle;
    this.publicHandle = null;
    this.owner = undefined;
    this._doc = doc;
    this._pending = 0;
    this._removed = false;
  },
  isMine: true,
  _track: function (promise) {
    var self = this;
    this._pending++;
    return promise.then(
      function (v) {
        self._pending--;
        return v;
      },
      function (e) {
        self._pending--;
        throw e;
      }
    );
  },
  update: function (newData) {
    newData = newData || {};
    var changes = {};
    var changed = false;
    for (var k in newData) {
      if (!hasOwn(newData, k)) continue;
      if (k !== "position" && k !== "status") {
        throw new Error("Invalid key: " + k + " (only position and status may be updated)");
      }
      if (stableStringify(this[k]) !== stableStringify(newData[k])) {
        changes[k] = newData[k];
        this[k] = newData[k];
        changed = true;
      }
    }
    var P = Snorky.Promise || Promise;
    if (!changed) {
      return P.resolve(null);
    }
    return this._track(this._doc.service.rpcCall("updateCursor", { privateHandle: this.privateHandle, newData: changes }));
  },
  remove: function () {
    this._removed = true;
    this._doc._dropOwn(this);
    return this._track(this._doc.service.rpcCall("removeCursor", { privateHandle: this.privateHandle }));
  },
  isSynchronized: function () {
    return this._pending === 0;
  },
});

var CursorsDocument = Class({
  constructor: function (service, name, cursors) {
    this.service = service;
    this.name = name;
    this.cursors = [];
    this.cursorAdded = newSignal();
    this.cursorUpdated = newSignal();
    this.cursorRemoved = newSignal();
    var self = this;
    (cursors || []).forEach(function (c) {
      self.cursors.push(new ForeignCursor(c));
    });
  },
  createCursor: function (params) {
    params = params || {};
    var svc = this.service;
    if (svc._ownCount() > 100) {
      throw new Error("Too many cursors (thrown at client side)");
    }
    var used = svc._usedHandles();
    var free = [];
    for (var h = 0; h < 256; h++) {
      if (!used[h]) free.push(h);
    }
    if (free.length === 0) {
      throw new Error("Too many cursors (thrown at client side)");
    }
    var handle = free[Math.floor(Math.random() * free.length)];
    var own = new OwnCursor(this, handle, params.position, params.status);
    this.cursors.push(own);
    var promise = own._track(this._createOnServer(own));
    return [own, promise];
  },
  _createOnServer: function (own) {
    return this.service
      .rpcCall("createCursor", {
        privateHandle: own.privateHandle,
        document: this.name,
        position: own.position,
        status: own.status,
      })
      .then(function (publicHandle) {
        own.publicHandle = publicHandle;
        return publicHandle;
      });
  },
  _foreignIndex: function (publicHandle) {
    for (var i = 0; i < this.cursors.length; i++) {
      var c = this.cursors[i];
      if (!c.isMine && c.publicHandle === publicHandle) return i;
    }
    return -1;
  },
  _dropOwn: function (own) {
    var i = this.cursors.indexOf(own);
    if (i !== -1) this.cursors.splice(i, 1);
  },
  _notify: function (message) {
    var data = message.cursor || {};
    var i = this._foreignIndex(data.publicHandle);
    var cursor;
    if (message.type === "cursorAdded") {
      cursor = new ForeignCursor(data);
      if (i !== -1) this.cursors.splice(i, 1);
      this.cursors.push(cursor);
      this.cursorAdded.dispatch(cursor);
    } else if (message.type === "cursorUpdated") {
      if (i === -1) {
        cursor = new ForeignCursor(data);
        this.cursors.push(cursor);
      } else {
        cursor = this.cursors[i];
        cursor._set(data);
      }
      this.cursorUpdated.dispatch(cursor);
    } else if (message.type === "cursorRemoved") {
      cursor = i === -1 ? new ForeignCursor(data) : this.cursors.splice(i, 1)[0];
      this.cursorRemoved.dispatch(cursor);
    }
  },
  // _rejoined reconciles the foreign cursors with the server's list after
  // a reconnect and recreates the own cursors.
  _rejoined: function (list) {
    var self = this;
    var fresh = {};
    (list || []).forEach(function (c) {
      fresh[c.publicHandle] = c;
    });
    this.cursors.slice().forEach(function (c) {
      if (!c.isMine && !hasOwn(fresh, c.publicHandle)) {
        self.cursors.splice(self.cursors.indexOf(c), 1);
        self.cursorRemoved.dispatch(c);
      }
    });
    (list || []).forEach(function (c) {
      var i = self._foreignIndex(c.publicHandle);
      if (i === -1) {
        var nc = new ForeignCursor(c);
        self.cursors.push(nc);
        self.cursorAdded.dispatch(nc);
      } else if (stableStringify([self.cursors[i].position, self.cursors[i].status]) !== stableStringify([c.position, c.status])) {
        self.cursors[i]._set(c);
        self.cursorUpdated.dispatch(self.cursors[i]);
      }
    });
    this.cursors.forEach(function (c) {
      if (c.isMine && !c._removed) {
        c._track(self._createOnServer(c)).then(null, ignore);
      }
    });
  },
});

var Cursors = Class(RPCService, {
  init: function () {
    RPCService.prototype.init.call(this);
    this.documents = {};
  },
  join: function (params) {
    params = params || {};
    var self = this;
    return this.rpcCall("join", params).then(function (result) {
      var doc = new CursorsDocument(self, params.document, result && result.cursors);
      self.documents[stableStringify(params.document)] = doc;
      return doc;
    });
  },
  rpcCall: function (command, params) {
    var p = RPCService.prototype.rpcCall.call(this, command, params);
    if (command === "leave" && params) {
      var self = this;
      var key = stableStringify(params.document);
      return p.then(function (data) {
        delete self.documents[key];
        return data;
      });
    }
    return p;
  },
  _ownCount: function () {
    var n = 0;
    for (var k in this.documents) {
      this.documents[k].cursors.forEach(function (c) {
        if (c.isMine) n++;
      });
    }
    return n;
  },
  _usedHandles: function () {
    var used = {};
    for (var k in this.documents) {
      this.documents[k].cursors.forEach(function (c) {
        if (c.isMine) used[c.privateHandle] = true;
      });
    }
    return used;
  },
  _restore: function () {
    var self = this;
    Object.keys(this.documents).forEach(function (key) {
      var doc = self.documents[key];
      self._restoreCall("join", { document: doc.name }, "doc:" + key).then(function (result) {
        doc._rejoined(result && result.cursors);
      }, ignore);
    });
  },
  onNotification: function (message) {
    if (message.type === "cursorAdded" || message.type === "cursorUpdated" || message.type === "cursorRemoved") {
      var key = stableStringify(message.cursor && message.cursor.document);
      var doc = this.documents[key];
      if (!doc) {
        throw new Error("Notification for a document not joined: " + key);
      }
      doc._notify(message);
    } else {
      RPCService.prototype.onNotification.call(this, message);
    }
  },
});
Cursors.Document = CursorsDocument;
Cursors.Cursor = Cursor;
Cursors.ForeignCursor = ForeignCursor;
Cursors.OwnCursor = OwnCursor;

// ---------------------------------------------------------------------------
// DataSync: collections

var Collection = Class({
  constructor: function () {
    this.mustRefetch = newSignal();
  },
  insert: function () {
    throw new Error("Collection.insert is abstract");
  },
  getIterator: function () {
    throw new Error("Collection.getIterator is abstract");
  },
  // clear removes every item through the iterator.
  clear: function () {
    var it = this.getIterator();
    while (it.hasNext()) {
      it.next();
      it.remove();
    }
  },
  // replaceAll empties the collection and inserts items.
  replaceAll: function (items) {
    this.clear();
    for (var i = 0; i < (items || []).length; i++) {
      this.insert(items[i]);
    }
  },
});

var ArrayIterator = Class({
  constructor: function (collection) {
    this.collection = collection;
    this.array = collection.array;
    this.index = -1;
    this.removed = false;
  },
  hasNext: function () {
    return this.index + 1 < this.array.length;
  },
  next: function () {
    if (!this.hasNext()) {
      throw new Error("Busted iterator");
    }
    this.index++;
    this.removed = false;
    return this.array[this.index];
  },
  _check: function () {
    if (this.removed) {
      throw new Error("Iterator pointing to a deleted item! (call next())");
    }
    if (this.index < 0) {
      throw new Error("Iterator not pointing to an item! (call next())");
    }
  },
  remove: function () {
    this._check();
    this.array.splice(this.index, 1);
    this.index--;
    this.removed = true;
  },
  update: function (newItem) {
    this._check();
    this.array[this.index] = this.collection.transformItem(newItem);
  },
});

function identityTransform(item) {
  return item;
}

var ArrayCollection = Class(Collection, {
  constructor: function (array, options) {
    Collection.call(this);
    this.array = array || [];
    this.transformItem = (options && options.transformItem) || identityTransform;
  },
  insert: function (item) {
    this.array.push(this.transformItem(item));
  },
  getIterator: function () {
    return new ArrayIterator(this);
  },
  clear: function () {
    this.array.splice(0, this.array.length);
  },
});

var SingleItemIterator = Class({
  constructor: function (collection) {
    this.collection = collection;
    this.done = false;
    this.pointing = false;
    this.removed = false;
  },
  hasNext: function () {
    return !this.done;
  },
  next: function () {
    if (this.done) {
      throw new Error("Busted iterator");
    }
    this.done = true;
    this.pointing = true;
    return this.collection.readHandler();
  },
  _check: function () {
    if (!this.pointing) {
      throw new Error("Iterator not pointing to an item! (call next())");
    }
    if (this.removed) {
      throw new Error("Iterator pointing to a deleted item! (call next())");
    }
  },
  update: function (newItem) {
    this._check();
    this.collection.updateHandler(newItem);
  },
  remove: function () {
    this._check();
    this.removed = true;
    if (this.collection.removeHandler) {
      this.collection.removeHandler();
    }
  },
});

var SingleItemCollection = Class(Collection, {
  constructor: function (readHandler, updateHandler, removeHandler) {
    Collection.call(this);
    this.readHandler = readHandler;
    this.updateHandler = updateHandler;
    this.removeHandler = removeHandler || null;
  },
  insert: function () {
    logError("Snorky: SingleItemCollection: insert is not supported");
  },
  getIterator: function () {
    return new SingleItemIterator(this);
  },
  replaceAll: function (items) {
    if (items && items.length) {
      this.updateHandler(items[0]);
    }
  },
});

function looseIdEqual(item, other) {
  // eslint-disable-next-line eqeqeq
  return item != null && other != null && item.id == other.id;
}

// CollectionDeltaProcessor applies deltas to collections: {Model: collection}
// or the tagged form {Model: {tag: collection}}. It is idempotent: an insert
// of an existing item updates it, and a delta whose exact offset it already
// applied is skipped (by offset, not by a high-water mark: a newly acquired
// subscription may deliver offsets older than ones applied already).
var CollectionDeltaProcessor = Class({
  constructor: function (collections, options) {
    this.collections = collections || {};
    this.itemsAreEqual = (options && options.itemsAreEqual) || looseIdEqual;
    this.maxRememberedOffsets = (options && options.maxRememberedOffsets) || 100000;
    this._offsets = new Set();
    this.processDelta = this.processDelta.bind(this);
  },
  // reset forgets the applied offsets (after the collections are reloaded).
  reset: function () {
    this._offsets.clear();
  },
  _remember: function (offset) {
    this._offsets.add(offset);
    if (this._offsets.size > this.maxRememberedOffsets) {
      // Sets iterate in insertion order: forget the oldest.
      var first = this._offsets.values().next().value;
      this._offsets.delete(first);
    }
  },
  hasApplied: function (offset) {
    return this._offsets.has(offset);
  },
  getCollection: function (delta) {
    var entry = this.collections[delta.model];
    if (entry instanceof Collection) {
      return entry;
    }
    if (isObject(entry) && hasOwn(entry, delta.tag) && entry[delta.tag] instanceof Collection) {
      return entry[delta.tag];
    }
    return null;
  },
  processDelta: function (delta) {
    if (!isObject(delta)) {
      logError("Snorky: delta is not an object:", delta);
      return;
    }
    if (typeof delta.offset === "string") {
      if (this._offsets.has(delta.offset)) {
        return;
      }
    }
    var collection = this.getCollection(delta);
    if (!collection) {
      logError("Snorky: no collection for the delta's model" + (delta.tag !== undefined ? " and tag" : "") + ":", delta.model, delta.tag);
      return;
    }
    switch (delta.type) {
      case "insert":
        if (!this._update(collection, delta.data, delta.data)) {
          collection.insert(delta.data);
        }
        break;
      case "update":
        this._update(collection, delta.oldData, delta.newData);
        break;
      case "delete":
        this._remove(collection, delta.data);
        break;
      case "truncate":
        collection.clear();
        break;
      default:
        logError("Snorky: unknown delta type:", delta.type);
        return;
    }
    if (typeof delta.offset === "string") {
      this._remember(delta.offset);
    }
  },
  _update: function (collection, match, newData) {
    var it = collection.getIterator();
    while (it.hasNext()) {
      if (this.itemsAreEqual(it.next(), match)) {
        it.update(newData);
        return true;
      }
    }
    return false;
  },
  _remove: function (collection, match) {
    var it = collection.getIterator();
    while (it.hasNext()) {
      if (this.itemsAreEqual(it.next(), match)) {
        it.remove();
        return true;
      }
    }
    return false;
  },
  // handleMustRefetch dispatches mustRefetch(event) on the collections of
  // event.models (every collection when models is null).
  handleMustRefetch: function (event) {
    var models = event && event.models;
    for (var model in this.collections) {
      if (models && models.indexOf(model) === -1) continue;
      var entry = this.collections[model];
      var list = entry instanceof Collection ? [entry] : Object.keys(entry || {}).map(function (t) {
        return entry[t];
      });
      list.forEach(function (c) {
        if (c instanceof Collection) c.mustRefetch.dispatch(event);
      });
    }
  },
});

// ---------------------------------------------------------------------------
// DataSync: the connector

var MUST_REFETCH = "Must refetch: ";

function maxOffset(a, b) {
  if (a == null) return b;
  if (b == null) return a;
  return b > a ? b : a;
}

var DataSync = Class(RPCService, {
  init: function () {
    RPCService.prototype.init.call(this);
    this.deltaReceived = newSignal();
    this.mustRefetch = newSignal();
    this.positionReceived = newSignal();
    this.onDelta = null;
    // resumable: ask for resumable subscriptions (§3.9); turned off by
    // itself against a server that does not know the parameter.
    this.resumable = !(this.snorky.options && this.snorky.options.resumable === false);
    this.epoch = null;
    this.offset = null; // the greatest offset seen
    this.subscriptions = {}; // token → subscription
    this._xidWaiters = [];
    this._recentXids = [];
  },
  acquireSubscription: function (params, options) {
    params = params || {};
    var self = this;
    var token = params.token;
    var models = (options && options.models) || null;
    if (!this.resumable || params.resumable === false) {
      var plain = {};
      for (var k in params) if (hasOwn(params, k) && k !== "resumable") plain[k] = params[k];
      return this.rpcCall("acquireSubscription", plain).then(function (data) {
        if (typeof token === "string") {
          self.subscriptions[token] = { token: token, models: models, resume: null, live: true };
        }
        return data;
      });
    }
    var withResume = {};
    for (var p in params) if (hasOwn(params, p)) withResume[p] = params[p];
    withResume.resumable = true;
    return this.rpcCall("acquireSubscription", withResume).then(
      function (data) {
        var sub = { token: token, models: models, resume: null, epoch: null, offset: null, live: true };
        if (isObject(data) && typeof data.resume === "string") {
          sub.resume = data.resume;
          sub.epoch = data.epoch;
          sub.offset = data.offset;
          self._seen(data.epoch, data.offset);
        }
        if (typeof token === "string") self.subscriptions[token] = sub;
        return data;
      },
      function (err) {
        if (err && err.message === "Invalid params") {
          // A server without resume (§3.9): acquire as the original did.
          self.resumable = false;
          return self.acquireSubscription(params, options);
        }
        throw err;
      }
    );
  },
  cancelSubscription: function (params) {
    params = params || {};
    delete this.subscriptions[params.token];
    return this.rpcCall("cancelSubscription", params);
  },
  resumeSubscription: function (params) {
    return this.rpcCall("resumeSubscription", params || {});
  },
  // _seen records an offset observed on the connection: every live
  // subscription may resume from the greatest one (§3.9).
  _seen: function (epoch, offset) {
    if (typeof epoch === "string") this.epoch = epoch;
    if (typeof offset !== "string") return;
    this.offset = maxOffset(this.offset, offset);
    for (var t in this.subscriptions) {
      var sub = this.subscriptions[t];
      if (sub.live && sub.resume) {
        sub.offset = maxOffset(sub.offset, offset);
        if (typeof epoch === "string") sub.epoch = epoch;
      }
    }
  },
  _disconnected: function () {
    RPCService.prototype._disconnected.call(this);
    for (var t in this.subscriptions) {
      this.subscriptions[t].live = false;
    }
  },
  _restore: function () {
    var self = this;
    Object.keys(this.subscriptions).forEach(function (token) {
      var sub = self.subscriptions[token];
      if (!sub.resume) {
        delete self.subscriptions[token];
        self._refetch(sub, "the server does not support resuming subscriptions");
        return;
      }
      self.rpcCall("resumeSubscription", { resume: sub.resume, epoch: sub.epoch, offset: sub.offset }).then(
        function (data) {
          if (self.subscriptions[token] !== sub) return;
          if (isObject(data)) {
            sub.resume = data.resume || sub.resume;
            sub.epoch = data.epoch || sub.epoch;
            sub.offset = maxOffset(sub.offset, data.offset);
          }
          sub.live = true;
          self._seen(data && data.epoch, data && data.offset);
        },
        function (err) {
          if (self.subscriptions[token] !== sub) return;
          var msg = (err && err.message) || "";
          if (msg === "Connection lost") return; // tried again on the next socket
          delete self.subscriptions[token];
          self._refetch(sub, msg.indexOf(MUST_REFETCH) === 0 ? msg.slice(MUST_REFETCH.length) : msg);
        }
      );
    });
  },
  _refetch: function (sub, reason) {
    this.mustRefetch.dispatch({ reason: reason, models: sub ? sub.models : null, token: sub ? sub.token : null });
  },
  onNotification: function (message) {
    if (message.type === "delta") {
      var delta = message.delta;
      if (isObject(delta)) this._seen(null, delta.offset);
      this.deltaReceived.dispatch(delta);
      if (typeof this.onDelta === "function") {
        this.onDelta(delta);
      }
      if (isObject(delta) && delta.xid !== undefined) this._xidSeen(delta.xid);
    } else if (message.type === "position") {
      this._seen(message.epoch, message.offset);
      this.positionReceived.dispatch(message);
    } else if (message.type === "mustRefetch") {
      var models = Array.isArray(message.models) ? message.models : null;
      var self = this;
      Object.keys(this.subscriptions).forEach(function (token) {
        var sub = self.subscriptions[token];
        var hit = !models || !sub.models || sub.models.some(function (m) {
          return models.indexOf(m) !== -1;
        });
        if (hit) {
          delete self.subscriptions[token];
          self.mustRefetch.dispatch({ reason: message.reason, models: sub.models || models, token: token });
        }
      });
    } else {
      RPCService.prototype.onNotification.call(this, message);
    }
  },
  _xidSeen: function (xid) {
    if (this._recentXids[this._recentXids.length - 1] !== xid) {
      this._recentXids.push(xid);
      if (this._recentXids.length > 1000) this._recentXids.shift();
    }
    var waiters = this._xidWaiters;
    for (var i = waiters.length - 1; i >= 0; i--) {
      if (waiters[i].xid === xid) {
        waiters[i].done(true);
      }
    }
  },
  // awaitXid resolves once a delta of transaction xid has been received
  // and handled (the app's write returned txid_current()); with
  // options.timeout (ms) it rejects after that long.
  awaitXid: function (xid, options) {
    var self = this;
    var P = Snorky.Promise || Promise;
    xid = Number(xid);
    return new P(function (resolve, reject) {
      if (self._recentXids.indexOf(xid) !== -1) {
        resolve(xid);
        return;
      }
      var clock = self.snorky._clock;
      var w = { xid: xid, timer: null };
      w.done = function (ok) {
        var i = self._xidWaiters.indexOf(w);
        if (i === -1) return;
        self._xidWaiters.splice(i, 1);
        if (w.timer !== null) clock.clearTimeout(w.timer);
        if (ok) resolve(xid);
        else reject(new Error("awaitXid: transaction " + xid + " not seen within " + options.timeout + " ms"));
      };
      self._xidWaiters.push(w);
      if (options && options.timeout != null) {
        w.timer = clock.setTimeout(function () {
          w.done(false);
        }, options.timeout);
      }
    });
  },
  // syncCollection keeps collection equal to what load() returns plus the
  // deltas of model: it calls load() (which resolves to {items, token}),
  // replaces the collection's contents, acquires the token, and does it all
  // again on mustRefetch. Returns {ready, reload(), cancel(), state,
  // stateChanged}.
  syncCollection: function (options) {
    return new LiveCollection(this, options);
  },
});

var LiveCollection = Class({
  constructor: function (datasync, options) {
    var self = this;
    this.datasync = datasync;
    this.model = options.model;
    this.collection = options.collection;
    this.load = options.load;
    this.retryDelay = options.retryDelay != null ? options.retryDelay : 1000;
    var colls = {};
    colls[this.model] = this.collection;
    this.processor = options.processor || new CollectionDeltaProcessor(colls, { itemsAreEqual: options.itemsAreEqual });
    this.token = null;
    this.state = "loading";
    this.stateChanged = newSignal();
    this.error = null;
    this._cancelled = false;
    this._generation = 0;
    this._onDelta = function (delta) {
      if (self.state === "loading" || !isObject(delta) || delta.model !== self.model) return;
      self.processor.processDelta(delta);
    };
    this._onRefetch = function (event) {
      if (event.token !== null && event.token === self.token) {
        self.collection.mustRefetch.dispatch(event);
        if (!self._cancelled) self.reload();
      }
    };
    datasync.deltaReceived.add(this._onDelta);
    datasync.mustRefetch.add(this._onRefetch);
    this.ready = this.reload();
  },
  _setState: function (s) {
    if (this.state !== s) {
      this.state = s;
      this.stateChanged.dispatch(s);
    }
  },
  reload: function () {
    var self = this;
    var gen = ++this._generation;
    var ds = this.datasync;
    var P = Snorky.Promise || Promise;
    if (this.token && ds.subscriptions[this.token]) {
      ds.cancelSubscription({ token: this.token }).then(null, ignore);
    }
    this.token = null;
    this._setState("loading");
    return P.resolve()
      .then(function () {
        return self.load();
      })
      .then(function (res) {
        if (gen !== self._generation || self._cancelled) return;
        self.collection.replaceAll(res.items);
        self.processor.reset();
        self.token = res.token;
        // Deltas are applied from here on: the acquire's pending deltas
        // arrive after the replaced contents.
        self._setState("live");
        return ds.acquireSubscription({ token: res.token }, { models: [self.model] });
      })
      .then(null, function (err) {
        if (gen !== self._generation || self._cancelled) return;
        self.error = err;
        self._setState("error");
        // Try again after a while (the loader or the acquire failed), or
        // once the app connects again after disconnect().
        var snorky = ds.snorky;
        return new P(function (resolve) {
          var again = function () {
            resolve(gen === self._generation && !self._cancelled ? self.reload() : undefined);
          };
          if (snorky.state === "closed") {
            snorky.connected.addOnce(again);
          } else {
            snorky._clock.setTimeout(again, self.retryDelay);
          }
        });
      });
  },
  cancel: function () {
    this._cancelled = true;
    this.datasync.deltaReceived.remove(this._onDelta);
    this.datasync.mustRefetch.remove(this._onRefetch);
    if (this.token && this.datasync.subscriptions[this.token]) {
      this.datasync.cancelSubscription({ token: this.token }).then(null, ignore);
    }
    this._setState("cancelled");
  },
});

DataSync.Collection = Collection;
DataSync.ArrayCollection = ArrayCollection;
DataSync.ArrayIterator = ArrayIterator;
DataSync.SingleItemCollection = SingleItemCollection;
DataSync.SingleItemIterator = SingleItemIterator;
DataSync.CollectionDeltaProcessor = CollectionDeltaProcessor;
DataSync.LiveCollection = LiveCollection;

// ---------------------------------------------------------------------------
// The namespace

Snorky.Class = Class;
Snorky.Signal = Signal;
Snorky.SignalBinding = SignalBinding;
Snorky.Promise = typeof Promise !== "undefined" ? Promise : undefined;
Snorky.Service = Service;
Snorky.RPCService = RPCService;
Snorky.PubSub = PubSub;
Snorky.Messaging = Messaging;
Snorky.Chat = Chat;
Snorky.Cursors = Cursors;
Snorky.Identity = Identity;
Snorky.DataSync = DataSync;
Snorky.STATES = STATES;
Snorky.stableStringify = stableStringify;
Snorky.CycleError = CycleError;
Snorky._ = { hasOwn: hasOwn, isObject: isObject, maxOffset: maxOffset };
