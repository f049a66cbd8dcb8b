// Compiled by test/types.test.mjs with tsc --noEmit: the declarations
// describe the API the way apps use it.
import Snorky, { stableStringify, type Delta, type MustRefetchEvent } from '../../snorky.js';

declare const WebSocket: Snorky['socketClass'];

const snorky = new Snorky(WebSocket, 'ws://localhost:5001/ws', {
  pubsub: Snorky.PubSub,
  datasync: Snorky.DataSync,
  chat: Snorky.Chat,
  cursors: Snorky.Cursors,
  identity: Snorky.Identity,
}, { debug: false, backoff: { initial: 250 } });

const pubsub: InstanceType<typeof Snorky.PubSub> = snorky.services.pubsub;
pubsub.subscribe({ channel: { room: 1 } }).then((v: null) => v);
pubsub.messagePublished.add((m) => console.log(m.channel, m.message));

const datasync = snorky.services.datasync;
interface Task { id: number; title: string; completed: boolean }
const tasks: Task[] = [];
const collection = new Snorky.DataSync.ArrayCollection<Task>(tasks, { transformItem: (t: Task) => t });
const processor = new Snorky.DataSync.CollectionDeltaProcessor({ Task: collection });
datasync.deltaReceived.add((d: Delta) => processor.processDelta(d));
datasync.mustRefetch.add((e: MustRefetchEvent) => console.log(e.reason, e.models, e.token));
datasync.acquireSubscription({ token: 't' }).then((r) => r && r.epoch);
datasync.awaitXid(1234, { timeout: 5000 }).then((xid: number) => xid);

const live = datasync.syncCollection<Task>({
  model: 'Task',
  collection,
  load: async () => ({ items: [] as Task[], token: 'x' }),
});
live.ready.then(() => live.state);

snorky.stateChanged.add((state, prev) => console.log(state, prev, snorky.lastCloseCode, snorky.lastCloseReason));
const s: 'connecting' | 'open' | 'reconnecting' | 'closed' = snorky.state;
void s;

snorky.services.cursors.join({ document: 'Sheet1' }).then((doc) => {
  const [own, created] = doc.createCursor({ position: 0, status: 'idle' });
  created.then((h: number) => own.publicHandle === h);
  own.update({ position: 1 });
  doc.cursorAdded.add((c) => c.owner);
});
snorky.services.chat.join({ channel: '#cats' }).then((r) => r.members.length);
snorky.services.identity.authenticate({ token: 'id' });

const Custom = new Snorky.Class(Snorky.RPCService, { init() {} });
Custom.addRPCMethods(['hello']);
const text: string = stableStringify({ b: 1, a: 2 });
void text;
snorky.connect();
snorky.disconnect();

// The declarations are not `any`: these are errors.
// @ts-expect-error: state is one of four strings
const wrongState: 'nope' = snorky.state;
// @ts-expect-error: subscribe needs a channel
pubsub.subscribe({});
// @ts-expect-error: a delta type is one of four
const wrongDelta: Delta = { type: 'upsert', model: 'Task' };
void wrongState;
void wrongDelta;
