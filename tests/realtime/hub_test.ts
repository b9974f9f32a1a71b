import assert from "node:assert/strict";
import { Hub, type Subscriber, type SyncEvent } from "../../src/realtime/hub.ts";

interface FakeSubscriber extends Subscriber {
  events: SyncEvent[];
  closes: { code: number; reason: string }[];
  /** What the next deliver() returns. */
  keepsUp: boolean;
}

function subscriber(
  userId: string,
  options: { appId?: string; clientId?: string; keepsUp?: boolean } = {},
): FakeSubscriber {
  return {
    userId,
    appId: options.appId,
    clientId: options.clientId,
    events: [],
    closes: [],
    keepsUp: options.keepsUp ?? true,
    deliver(event) {
      if (!this.keepsUp) return false;
      this.events.push(event);
      return true;
    },
    close(code, reason) {
      this.closes.push({ code, reason });
    },
  };
}

const event = (overrides: Partial<SyncEvent> = {}): SyncEvent => ({
  userId: "alice",
  appId: "todo",
  tables: ["tasks"],
  clientId: "device-a",
  ...overrides,
});

Deno.test("Hub.publish() delivers only to the event's user", () => {
  const hub = new Hub();
  const alice = subscriber("alice");
  const bob = subscriber("bob");
  hub.add(alice);
  hub.add(bob);

  const sent = event();
  hub.publish(sent);

  assert.deepEqual(alice.events, [sent]);
  assert.deepEqual(bob.events, []);
  assert.equal(hub.stats().delivered, 1);
});

Deno.test("Hub.publish() does nothing for a user without subscribers", () => {
  const hub = new Hub();
  const alice = subscriber("alice");
  hub.add(alice);
  hub.publish(event({ userId: "carol" }));
  assert.deepEqual(alice.events, []);
  assert.deepEqual(hub.stats(), { connections: 1, users: 1, delivered: 0, dropped: 0 });
});

Deno.test("Hub.publish() routes by app", async (t) => {
  await t.step("a subscriber with an appId gets only that app's events", () => {
    const hub = new Hub();
    const todo = subscriber("alice", { appId: "todo" });
    hub.add(todo);
    hub.publish(event({ appId: "notes" }));
    assert.deepEqual(todo.events, []);
    const sent = event({ appId: "todo" });
    hub.publish(sent);
    assert.deepEqual(todo.events, [sent]);
  });

  await t.step("a subscriber without an appId gets every app's events", () => {
    const hub = new Hub();
    const all = subscriber("alice");
    hub.add(all);
    const notes = event({ appId: "notes" });
    const todo = event({ appId: "todo" });
    hub.publish(notes);
    hub.publish(todo);
    assert.deepEqual(all.events, [notes, todo]);
  });
});

Deno.test("Hub.publish() skips the publishing client's own subscribers", async (t) => {
  await t.step("same clientId: nothing", () => {
    const hub = new Hub();
    const self = subscriber("alice", { clientId: "device-a" });
    const other = subscriber("alice", { clientId: "device-b" });
    hub.add(self);
    hub.add(other);
    const sent = event({ clientId: "device-a" });
    hub.publish(sent);
    assert.deepEqual(self.events, []);
    assert.deepEqual(other.events, [sent]);
    assert.equal(hub.stats().delivered, 1);
  });

  await t.step("a subscriber without clientId gets everything", () => {
    const hub = new Hub();
    const anonymous = subscriber("alice");
    hub.add(anonymous);
    const a = event({ clientId: "device-a" });
    const b = event({ clientId: "device-b" });
    hub.publish(a);
    hub.publish(b);
    assert.deepEqual(anonymous.events, [a, b]);
  });
});

Deno.test("Hub.publish() drops a subscriber that cannot keep up", () => {
  const hub = new Hub();
  const first = subscriber("alice");
  const slow = subscriber("alice", { keepsUp: false });
  const last = subscriber("alice");
  hub.add(first);
  hub.add(slow);
  hub.add(last);

  const sent = event();
  hub.publish(sent);

  assert.deepEqual(slow.closes, [{ code: 1013, reason: "too slow" }]);
  assert.deepEqual(slow.events, []);
  assert.deepEqual(first.events, [sent], "the others in the same publish are still delivered");
  assert.deepEqual(last.events, [sent]);
  assert.deepEqual(hub.stats(), { connections: 2, users: 1, delivered: 2, dropped: 1 });

  // Dropped for good: even once it could keep up again, later publishes do not reach it.
  slow.keepsUp = true;
  const later = event({ tables: ["notes"] });
  hub.publish(later);
  assert.deepEqual(slow.events, []);
  assert.equal(slow.closes.length, 1, "closed once");
  assert.deepEqual(first.events, [sent, later]);
  assert.deepEqual(hub.stats(), { connections: 2, users: 1, delivered: 4, dropped: 1 });
});

Deno.test("Hub.publish() removes the user when their only subscriber is dropped", () => {
  const hub = new Hub();
  const slow = subscriber("alice", { keepsUp: false });
  const remove = hub.add(slow);
  hub.publish(event());
  assert.deepEqual(hub.stats(), { connections: 0, users: 0, delivered: 0, dropped: 1 });
  remove(); // the session's own cleanup after the close must not count it twice
  assert.deepEqual(hub.stats(), { connections: 0, users: 0, delivered: 0, dropped: 1 });
});

Deno.test("Hub.add() returns an idempotent remover", async (t) => {
  await t.step("10,000 add/remove cycles across many users leave the hub empty", () => {
    const hub = new Hub();
    const removers: (() => void)[] = [];
    for (let i = 0; i < 10_000; i++) {
      removers.push(hub.add(subscriber(`user-${i % 97}`, { clientId: `c-${i}` })));
      // Interleave: keep a window of live subscribers, remove the oldest.
      if (removers.length > 50) removers.shift()!();
    }
    assert.deepEqual(hub.stats(), { connections: 50, users: 50, delivered: 0, dropped: 0 });
    for (const remove of removers) remove();
    assert.deepEqual(hub.stats(), { connections: 0, users: 0, delivered: 0, dropped: 0 });
  });

  await t.step("calling the remover twice does not make counts negative", () => {
    const hub = new Hub();
    const removeA = hub.add(subscriber("alice"));
    const keep = subscriber("alice");
    hub.add(keep);
    removeA();
    removeA();
    assert.deepEqual(hub.stats(), { connections: 1, users: 1, delivered: 0, dropped: 0 });
    const sent = event();
    hub.publish(sent);
    assert.deepEqual(keep.events, [sent]);
  });
});

Deno.test("Hub.closeAll() closes every subscriber with 1001 and empties the hub", () => {
  const hub = new Hub();
  const subscribers = [
    subscriber("alice"),
    subscriber("alice", { appId: "todo" }),
    subscriber("bob", { clientId: "b1" }),
    subscriber("carol"),
  ];
  const removers = subscribers.map((s) => hub.add(s));
  assert.deepEqual(hub.stats().connections, 4);

  hub.closeAll();

  for (const s of subscribers) {
    assert.equal(s.closes.length, 1);
    assert.equal(s.closes[0]!.code, 1001);
  }
  assert.deepEqual(hub.stats(), { connections: 0, users: 0, delivered: 0, dropped: 0 });
  for (const remove of removers) remove(); // sessions clean up after the close: no-ops
  assert.deepEqual(hub.stats(), { connections: 0, users: 0, delivered: 0, dropped: 0 });
  hub.publish(event());
  assert.ok(subscribers.every((s) => s.events.length === 0));
});

Deno.test("Hub.closeAll() passes the given code and reason", () => {
  const hub = new Hub();
  const s = subscriber("alice");
  hub.add(s);
  hub.closeAll(1012, "restarting");
  assert.deepEqual(s.closes, [{ code: 1012, reason: "restarting" }]);
});

Deno.test("Hub.stats() counts connections, users, deliveries and drops", () => {
  const hub = new Hub();
  assert.deepEqual(hub.stats(), { connections: 0, users: 0, delivered: 0, dropped: 0 });
  const removeA1 = hub.add(subscriber("alice"));
  hub.add(subscriber("alice", { clientId: "device-a" }));
  hub.add(subscriber("bob"));
  hub.add(subscriber("bob", { keepsUp: false }));
  assert.deepEqual(hub.stats(), { connections: 4, users: 2, delivered: 0, dropped: 0 });

  hub.publish(event({ userId: "alice", clientId: "device-a" })); // one skipped as its own echo
  hub.publish(event({ userId: "bob" }));
  assert.deepEqual(hub.stats(), { connections: 3, users: 2, delivered: 2, dropped: 1 });

  removeA1();
  assert.deepEqual(hub.stats(), { connections: 2, users: 2, delivered: 2, dropped: 1 });
});

Deno.test("Hub.add() counts a subscriber added twice once", () => {
  const hub = new Hub();
  const alice = subscriber("alice");
  const remove = hub.add(alice);
  hub.add(alice);
  assert.deepEqual(hub.stats().connections, 1);
  remove();
  assert.deepEqual({ ...hub.stats(), delivered: 0, dropped: 0 }, {
    connections: 0,
    users: 0,
    delivered: 0,
    dropped: 0,
  });
});

Deno.test("Hub.publish() drops a subscriber that throws and still reaches the others", () => {
  const hub = new Hub();
  const broken = subscriber("alice");
  broken.deliver = () => {
    throw new Error("socket exploded");
  };
  const fine = subscriber("alice");
  hub.add(broken);
  hub.add(fine);
  hub.publish(event());
  assert.equal(fine.events.length, 1);
  assert.deepEqual(broken.closes, [{ code: 1013, reason: "too slow" }]);
  assert.equal(hub.stats().connections, 1);
});
