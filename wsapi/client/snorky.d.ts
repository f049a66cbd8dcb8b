// Type declarations of the Snorky JavaScript client (snorky.js / snorky.mjs).
// Checked by `tsc --noEmit` in the tests (test/types.test.mjs).

export type JSONValue = null | boolean | number | string | JSONValue[] | { [key: string]: JSONValue };

/** Anything with the shape of the browser's WebSocket: WebSocket, SockJS, the ws package. */
export interface SocketLike {
  onopen: ((event?: any) => void) | null;
  onmessage: ((event: { data: any }) => void) | null;
  onclose: ((event: { code?: number; reason?: string }) => void) | null;
  onerror?: ((event?: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type SocketClass = new (url: string) => SocketLike;

export class SignalBinding<A extends any[] = any[]> {
  active: boolean;
  context: any;
  params: any[] | null;
  detach(): ((...args: A) => any) | null;
  execute(args?: A): any;
  isBound(): boolean;
  isOnce(): boolean;
  getListener(): (...args: A) => any;
  getSignal(): Signal<A>;
}

/** A js-signals compatible signal. */
export class Signal<A extends any[] = any[]> {
  active: boolean;
  memorize: boolean;
  add(listener: (...args: A) => any, context?: any, priority?: number): SignalBinding<A>;
  addOnce(listener: (...args: A) => any, context?: any, priority?: number): SignalBinding<A>;
  remove(listener: (...args: A) => any, context?: any): (...args: A) => any;
  removeAll(): void;
  has(listener: (...args: A) => any, context?: any): boolean;
  getNumListeners(): number;
  halt(): void;
  forget(): void;
  dispose(): void;
  dispatch(...args: A): void;
}

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface Clock {
  setTimeout(fn: () => void, ms: number): any;
  clearTimeout(id: any): void;
  now(): number;
}

export interface SnorkyOptions {
  /** Log every frame with console.log. */
  debug?: boolean;
  /** Reconnect by itself after a close (default true). */
  reconnect?: boolean;
  /** Ask for resumable DataSync subscriptions (default true). */
  resumable?: boolean;
  /** Reconnection delays in milliseconds. */
  backoff?: { initial?: number; max?: number; factor?: number; rateLimited?: number; stableAfter?: number };
  /** Timers (tests). */
  clock?: Clock;
  /** A random source in [0, 1) for the jitter (tests). */
  random?: () => number;
}

export type ServiceClass<S extends Service = Service> = new (name: string, snorky: Snorky) => S;

export interface Notification {
  type: string;
  [key: string]: any;
}

export class Service {
  constructor(name: string, snorky: Snorky);
  name: string;
  snorky: Snorky;
  packetReceived: Signal<[any]>;
  init(): void;
  onMessage(message: any): void;
  sendMessage(message: any): boolean;
}

export class RPCService extends Service {
  callIdCounter: number;
  notificationReceived: Signal<[Notification]>;
  rpcCall<T = any>(command: string, params: { [key: string]: any }): Promise<T>;
  onNotification(message: Notification): void;
  static addRPCMethods(names: string[]): void;
}

export interface PubSubMessage {
  type: 'message';
  channel: JSONValue;
  message: JSONValue;
}
export class PubSub extends RPCService {
  messagePublished: Signal<[PubSubMessage]>;
  onMessagePublished: ((message: PubSubMessage) => void) | null;
  subscribe(params: { channel: JSONValue }): Promise<null>;
  unsubscribe(params: { channel: JSONValue }): Promise<null>;
  publish(params: { channel: JSONValue; message: JSONValue }): Promise<null>;
}

export interface ParticipantMessage {
  type: 'message';
  sender: JSONValue;
  dest: JSONValue;
  body: JSONValue;
}
export class Messaging extends RPCService {
  messageReceived: Signal<[ParticipantMessage]>;
  onParticipantMessage: ((message: ParticipantMessage) => void) | null;
  registerParticipant(params: { name: JSONValue }): Promise<null>;
  unregisterParticipant(params: { name: JSONValue }): Promise<null>;
  listParticipants(params?: {}): Promise<JSONValue[]>;
  send(params: { sender: JSONValue; dest: JSONValue; body: JSONValue }): Promise<null>;
}

export class Identity extends RPCService {
  identity: JSONValue | undefined;
  authenticate(params: { token: string }): Promise<JSONValue>;
}

export class Chat extends RPCService {
  messageReceived: Signal<[Notification]>;
  presenceReceived: Signal<[Notification]>;
  readReceived: Signal<[Notification]>;
  /** After a reconnect, each channel is joined again: (channel, join result). */
  rejoined: Signal<[JSONValue, { members: JSONValue[] }]>;
  join(params: { channel: JSONValue }): Promise<{ members: JSONValue[] }>;
  leave(params: { channel: JSONValue }): Promise<null>;
  send(params: { channel: JSONValue; body: JSONValue }): Promise<null>;
  read(params: { channel: JSONValue }): Promise<null>;
}

export namespace Cursors {
  class Cursor {
    publicHandle: number | null;
    document: JSONValue;
    position: JSONValue;
    status: JSONValue;
    owner: JSONValue | undefined;
    isMine: boolean;
  }
  class ForeignCursor extends Cursor {
    isMine: false;
  }
  class OwnCursor extends Cursor {
    isMine: true;
    privateHandle: number;
    update(newData: { position?: JSONValue; status?: JSONValue }): Promise<null>;
    remove(): Promise<null>;
    isSynchronized(): boolean;
  }
  class Document {
    service: Cursors;
    name: JSONValue;
    cursors: Cursor[];
    cursorAdded: Signal<[Cursor]>;
    cursorUpdated: Signal<[Cursor]>;
    cursorRemoved: Signal<[Cursor]>;
    createCursor(params: { position?: JSONValue; status?: JSONValue }): [OwnCursor, Promise<number>];
  }
}
export class Cursors extends RPCService {
  documents: { [key: string]: Cursors.Document };
  join(params: { document: JSONValue }): Promise<Cursors.Document>;
}

export interface Delta {
  type: 'insert' | 'update' | 'delete' | 'truncate';
  model: string;
  data?: any;
  newData?: any;
  oldData?: any;
  offset?: string;
  lsn?: string;
  xid?: number;
  tag?: any;
  unchanged?: string[];
}

export interface MustRefetchEvent {
  /** Why, e.g. "offset is outside the replay window". */
  reason: string;
  /** The models concerned; null: every model. */
  models: string[] | null;
  /** The token of the subscription that ended (null when unknown). */
  token: string | null;
}

export interface ResumeInfo {
  epoch: string;
  offset: string;
  resume: string;
}

export interface SubscriptionState {
  token: string;
  models: string[] | null;
  resume: string | null;
  epoch?: string | null;
  offset?: string | null;
  live: boolean;
}

export namespace DataSync {
  interface Iterator<T = any> {
    hasNext(): boolean;
    next(): T;
    remove(): void;
    update(newItem: any): void;
  }
  class Collection<T = any> {
    mustRefetch: Signal<[MustRefetchEvent]>;
    insert(item: any): void;
    getIterator(): Iterator<T>;
    clear(): void;
    replaceAll(items: any[]): void;
  }
  class ArrayIterator<T = any> implements Iterator<T> {
    hasNext(): boolean;
    next(): T;
    remove(): void;
    update(newItem: any): void;
  }
  class ArrayCollection<T = any> extends Collection<T> {
    constructor(array?: T[], options?: { transformItem?: (item: any) => T });
    array: T[];
    transformItem(item: any): T;
  }
  class SingleItemIterator<T = any> implements Iterator<T> {
    hasNext(): boolean;
    next(): T;
    remove(): void;
    update(newItem: any): void;
  }
  class SingleItemCollection<T = any> extends Collection<T> {
    constructor(readHandler: () => T, updateHandler: (item: any) => void, removeHandler?: () => void);
  }
  type Collections = { [model: string]: Collection | { [tag: string]: Collection } };
  class CollectionDeltaProcessor {
    constructor(collections?: Collections, options?: { itemsAreEqual?: (item: any, other: any) => boolean; maxRememberedOffsets?: number });
    collections: Collections;
    itemsAreEqual(item: any, other: any): boolean;
    processDelta(delta: Delta): void;
    hasApplied(offset: string): boolean;
    reset(): void;
    handleMustRefetch(event: MustRefetchEvent): void;
  }
  interface LoadResult {
    items: any[];
    token: string;
  }
  interface SyncOptions<T = any> {
    model: string;
    collection: Collection<T>;
    load: () => LoadResult | Promise<LoadResult>;
    processor?: CollectionDeltaProcessor;
    itemsAreEqual?: (item: any, other: any) => boolean;
    /** Wait before trying again after a failed load or acquire (ms, default 1000). */
    retryDelay?: number;
  }
  class LiveCollection<T = any> {
    model: string;
    collection: Collection<T>;
    processor: CollectionDeltaProcessor;
    token: string | null;
    state: 'loading' | 'live' | 'error' | 'cancelled';
    stateChanged: Signal<[string]>;
    error: any;
    ready: Promise<void>;
    reload(): Promise<void>;
    cancel(): void;
  }
}
export class DataSync extends RPCService {
  deltaReceived: Signal<[Delta]>;
  /** A subscription ended: fetch again with a new token. */
  mustRefetch: Signal<[MustRefetchEvent]>;
  positionReceived: Signal<[{ type: 'position'; epoch: string; offset: string }]>;
  onDelta: ((delta: Delta) => void) | null;
  resumable: boolean;
  epoch: string | null;
  offset: string | null;
  subscriptions: { [token: string]: SubscriptionState };
  acquireSubscription(params: { token: string }, options?: { models?: string[] }): Promise<null | ResumeInfo>;
  cancelSubscription(params: { token: string }): Promise<null>;
  resumeSubscription(params: { resume: string; epoch: string; offset: string }): Promise<ResumeInfo>;
  /** Resolves once a delta of transaction xid has been received and handled. */
  awaitXid(xid: number | string, options?: { timeout?: number }): Promise<number>;
  syncCollection<T = any>(options: DataSync.SyncOptions<T>): DataSync.LiveCollection<T>;
}

export class CycleError extends Error {}
export function stableStringify(value: any): string;

export interface ClassDefinition {
  constructor?: Function;
  STATIC?: { [key: string]: any };
  [method: string]: any;
}
export interface ClassFactory {
  new (parent: Function, definition?: ClassDefinition): any;
  new (definition: ClassDefinition): any;
  (parent: Function, definition?: ClassDefinition): any;
  (definition: ClassDefinition): any;
}

export type ServiceMap = { [name: string]: ServiceClass<any> };

export class Snorky<S extends ServiceMap = ServiceMap> {
  constructor(socketClass: SocketClass, url: string, services: S, options?: SnorkyOptions);
  socketClass: SocketClass;
  address: string;
  debug: boolean;
  services: { [K in keyof S]: InstanceType<S[K]> };
  isConnected: boolean;
  isConnecting: boolean;
  /** connecting, open, reconnecting or closed. */
  state: ConnectionState;
  lastCloseCode: number | null;
  lastCloseReason: string | null;
  /** Reconnection attempts since the connection was last stable. */
  attempts: number;
  reconnect: boolean;
  connected: Signal<[]>;
  disconnected: Signal<[]>;
  stateChanged: Signal<[ConnectionState, ConnectionState]>;
  /** Opens the socket unless one is open, opening or scheduled. */
  connect(): void;
  /** Skips the wait of a scheduled reconnection. */
  reconnectNow(): void;
  /** Closes the socket (1000) and stops reconnecting until connect(). */
  disconnect(): void;
  sendMessage(serviceName: string, message: any): boolean;
  retryDelay(attempt: number, closeCode?: number): number;

  static VERSION: string;
  static Class: ClassFactory;
  static Signal: typeof Signal;
  static SignalBinding: typeof SignalBinding;
  static Promise: PromiseConstructor;
  static Service: typeof Service;
  static RPCService: typeof RPCService;
  static PubSub: typeof PubSub;
  static Messaging: typeof Messaging;
  static Chat: typeof Chat;
  static Cursors: typeof Cursors;
  static Identity: typeof Identity;
  static DataSync: typeof DataSync;
  static STATES: ConnectionState[];
  static stableStringify: typeof stableStringify;
  static CycleError: typeof CycleError;
}

export default Snorky;
