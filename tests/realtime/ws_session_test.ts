import assert from "node:assert/strict";
import type { Verifier } from "../../src/auth/verifier.ts";
import { Hub, type SyncEvent } from "../../src/realtime/hub.ts";
import {
  createWsSession,
  type Socket,
  type WsSession,
  type WsSessionOptions,
} from "../../src/realtime/ws_session.ts";

/** Deno 2 runs tests unsanitized by default: opt in, so a leaked timer or socket fails the test. */
const sanitized = { sanitizeOps: true, sanitizeResources: true } as const;

interface FakeSocket extends Socket {
  sent: string[];
  closed?: { code: number | undefined; reason: string | undefined };
  bufferedAmount: number;
}

function fakeSocket(): FakeSocket {
  const socket: FakeSocket = {
    sent: [],
    bufferedAmount: 0,
    send(data) {
      socket.sent.push(data);
    },
    close(code, reason) {
      socket.closed = { code, reason };
    },
  };
  return socket;
}

/** token → userId; unknown tokens throw, as the real verifier does. */
function fakeVerifier(tokens: Record<string, string>): Verifier {
  const known = new Map(Object.entries(tokens));
  return {
    verify(token) {
      const userId = known.get(token);
      return userId === undefined
        ? Promise.reject(new Error(`unknown token "${token}"`))
        : Promise.resolve({ userId });
    },
  };
}

const verifier = fakeVerifier({ "token-alice": "alice", "token-bob": "bob" });

const PONG = '{"type":"pong"}';
const AUTH_OK = '{"type":"auth-ok"}';
const INVALID_TOKEN = '{"type":"error","message":"invalid token","tables":["invalid token"]}';

function setup(options: Partial<WsSessionOptions> = {}) {
  const hub = options.hub ?? new Hub();
  const socket = fakeSocket();
  const session = createWsSession(socket, {
    hub,
    verifier,
    // Long enough never to fire during a test; every test still ends with closed() or a close.
    authTimeoutMs: 60_000,
    maxBufferedBytes: 1024,
    ...options,
  });
  return { hub, socket, session };
}

const auth = (token: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ type: "auth", token, ...extra });

const event = (overrides: Partial<SyncEvent> = {}): SyncEvent => ({
  userId: "alice",
  appId: "todo",
  tables: ["tasks"],
  clientId: "other-device",
  ...overrides,
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs `fn` and always ends the session (clears its auth timer, leaves the hub). */
async function using(
  s: { session: WsSession },
  fn: () => Promise<void> | void,
): Promise<void> {
  try {
    await fn();
  } finally {
    s.session.closed();
  }
}

Deno.test("createWsSession() answers ping with pong before auth", sanitized, async () => {
  const s = setup();
  await using(s, async () => {
    await s.session.message('{"type":"ping"}');
    assert.deepEqual(s.socket.sent, [PONG]);
    assert.equal(s.socket.closed, undefined);
    assert.equal(s.hub.stats().connections, 0, "not subscribed before auth");
  });
});

Deno.test("createWsSession() answers ping with pong after auth", sanitized, async () => {
  const s = setup();
  await using(s, async () => {
    await s.session.message(auth("token-alice"));
    await s.session.message('{"type":"ping"}');
    assert.deepEqual(s.socket.sent, [AUTH_OK, PONG]);
  });
});

Deno.test(
  "createWsSession() auth subscribes the socket and replies auth-ok",
  sanitized,
  async () => {
    const authenticated: string[] = [];
    const s = setup({ admit: (userId) => (authenticated.push(userId), true) });
    await using(s, async () => {
      await s.session.message(auth("token-alice"));
      assert.deepEqual(s.socket.sent, [AUTH_OK]);
      assert.equal(s.socket.closed, undefined);
      assert.deepEqual(authenticated, ["alice"]);
      assert.deepEqual(s.hub.stats(), { connections: 1, users: 1, delivered: 0, dropped: 0 });
      s.hub.publish(event({ userId: "alice" }));
      assert.equal(s.socket.sent.length, 2, "the subscriber is alice's");
    });
  },
);

Deno.test("createWsSession() ignores a repeated auth", sanitized, async () => {
  const s = setup();
  await using(s, async () => {
    await s.session.message(auth("token-alice"));
    await s.session.message(auth("token-bob"));
    await s.session.message(auth("no-such-token"));
    assert.deepEqual(s.socket.sent, [AUTH_OK]);
    assert.equal(s.socket.closed, undefined);
    assert.deepEqual(s.hub.stats(), { connections: 1, users: 1, delivered: 0, dropped: 0 });
    s.hub.publish(event({ userId: "bob" }));
    assert.equal(s.socket.sent.length, 1, "still alice's socket, not bob's");
  });
});

Deno.test(
  "createWsSession() refuses a bad token with an error and close 1008",
  sanitized,
  async (t) => {
    const cases: [string, string][] = [
      ["unknown token", auth("no-such-token")],
      ["missing token", '{"type":"auth"}'],
      ["empty token", auth("")],
      ["non-string token", '{"type":"auth","token":42}'],
    ];
    for (const [name, message] of cases) {
      await t.step(name, async () => {
        const s = setup();
        await using(s, async () => {
          await s.session.message(message);
          assert.deepEqual(s.socket.sent, [INVALID_TOKEN]);
          assert.deepEqual(s.socket.closed, { code: 1008, reason: "invalid token" });
          assert.deepEqual(s.hub.stats().connections, 0);
          // Closed: nothing more is answered.
          await s.session.message('{"type":"ping"}');
          assert.deepEqual(s.socket.sent, [INVALID_TOKEN]);
        });
      });
    }
  },
);

Deno.test(
  "createWsSession() closes with 1008 auth timeout a socket that never authenticates",
  sanitized,
  async (t) => {
    await t.step("silent client", async () => {
      const s = setup({ authTimeoutMs: 30 });
      await using(s, async () => {
        await sleep(80);
        assert.deepEqual(s.socket.closed, { code: 1008, reason: "auth timeout" });
        assert.deepEqual(s.socket.sent, []);
      });
    });

    await t.step("client that only pings", async () => {
      const s = setup({ authTimeoutMs: 30 });
      await using(s, async () => {
        await s.session.message('{"type":"ping"}');
        await sleep(80);
        assert.deepEqual(s.socket.closed, { code: 1008, reason: "auth timeout" });
        assert.deepEqual(s.socket.sent, [PONG]);
      });
    });

    await t.step("verification still running at the deadline: never subscribed", async () => {
      let resolve!: (identity: { userId: string }) => void;
      const slow: Verifier = { verify: () => new Promise((r) => resolve = r) };
      const s = setup({ authTimeoutMs: 30, verifier: slow });
      await using(s, async () => {
        const pending = s.session.message(auth("token-alice"));
        await sleep(80);
        assert.deepEqual(s.socket.closed, { code: 1008, reason: "auth timeout" });
        resolve({ userId: "alice" });
        await pending;
        assert.deepEqual(s.socket.sent, [], "no auth-ok after the timeout");
        assert.deepEqual(s.hub.stats().connections, 0);
      });
    });
  },
);

Deno.test(
  "createWsSession() does not time out a socket that authenticated",
  sanitized,
  async () => {
    const s = setup({ authTimeoutMs: 30 });
    await using(s, async () => {
      await s.session.message(auth("token-alice"));
      await sleep(80);
      assert.equal(s.socket.closed, undefined);
      assert.deepEqual(s.hub.stats().connections, 1);
    });
  },
);

Deno.test("createWsSession() clears the auth timer on auth", sanitized, async () => {
  // No closed() here: the ops sanitizer fails the test if the 60 s auth timer is still pending.
  const s = setup({ authTimeoutMs: 60_000 });
  await s.session.message(auth("token-alice"));
  assert.deepEqual(s.socket.sent, [AUTH_OK]);
  assert.equal(s.socket.closed, undefined);
});

Deno.test(
  "createWsSession() sends sync-available in the protocol's format",
  sanitized,
  async () => {
    const s = setup();
    await using(s, async () => {
      await s.session.message(auth("token-alice"));
      s.hub.publish(event({ appId: "todo", tables: ["tasks", "lists"] }));
      assert.deepEqual(s.socket.sent, [
        AUTH_OK,
        '{"type":"sync-available","appId":"todo","tables":["tasks","lists"]}',
      ]);
    });
  },
);

Deno.test(
  "createWsSession() with an appId (legacy /ws/{appId}) gets only that app",
  sanitized,
  async (t) => {
    await t.step("legacy: one app", async () => {
      const s = setup({ appId: "todo" });
      await using(s, async () => {
        await s.session.message(auth("token-alice"));
        s.hub.publish(event({ appId: "notes" }));
        s.hub.publish(event({ appId: "todo" }));
        assert.deepEqual(s.socket.sent, [
          AUTH_OK,
          '{"type":"sync-available","appId":"todo","tables":["tasks"]}',
        ]);
      });
    });

    await t.step("unified: every app", async () => {
      const s = setup();
      await using(s, async () => {
        await s.session.message(auth("token-alice"));
        s.hub.publish(event({ appId: "notes" }));
        s.hub.publish(event({ appId: "todo" }));
        assert.deepEqual(s.socket.sent, [
          AUTH_OK,
          '{"type":"sync-available","appId":"notes","tables":["tasks"]}',
          '{"type":"sync-available","appId":"todo","tables":["tasks"]}',
        ]);
      });
    });
  },
);

Deno.test(
  "createWsSession() suppresses echoes of the clientId given in auth",
  sanitized,
  async (t) => {
    await t.step("own clientId: nothing; another: delivered", async () => {
      const s = setup();
      await using(s, async () => {
        await s.session.message(auth("token-alice", { clientId: "device-a" }));
        s.hub.publish(event({ clientId: "device-a" }));
        assert.deepEqual(s.socket.sent, [AUTH_OK]);
        s.hub.publish(event({ clientId: "device-b" }));
        assert.equal(s.socket.sent.length, 2);
      });
    });

    await t.step("no clientId (or an empty one): everything", async () => {
      for (const extra of [{}, { clientId: "" }]) {
        const s = setup();
        await using(s, async () => {
          await s.session.message(auth("token-alice", extra));
          s.hub.publish(event({ clientId: "device-a" }));
          s.hub.publish(event({ clientId: "" }));
          assert.equal(s.socket.sent.length, 3, JSON.stringify(extra));
        });
      }
    });
  },
);

Deno.test(
  "createWsSession() gets dropped by the hub when its buffer is over maxBufferedBytes",
  sanitized,
  async () => {
    const hub = new Hub();
    const slow = setup({ hub, maxBufferedBytes: 1024 });
    const fast = setup({ hub, maxBufferedBytes: 1024 });
    await using(slow, () =>
      using(fast, async () => {
        await slow.session.message(auth("token-alice"));
        await fast.session.message(auth("token-alice"));

        slow.socket.bufferedAmount = 1024; // at the limit: still delivered
        hub.publish(event());
        assert.equal(slow.socket.sent.length, 2);

        slow.socket.bufferedAmount = 1025;
        hub.publish(event());
        assert.deepEqual(slow.socket.closed, { code: 1013, reason: "too slow" });
        assert.equal(slow.socket.sent.length, 2, "nothing more queued on the slow socket");
        assert.equal(fast.socket.sent.length, 3, "the other socket still got it");
        assert.deepEqual(hub.stats(), { connections: 1, users: 1, delivered: 3, dropped: 1 });

        slow.session.closed(); // the socket's close event, after the hub dropped it
        assert.deepEqual(hub.stats().connections, 1);
      }));
  },
);

Deno.test(
  "createWsSession() answers invalid JSON with an error and stays open",
  sanitized,
  async () => {
    const s = setup();
    await using(s, async () => {
      await s.session.message("{not json");
      assert.deepEqual(s.socket.sent, [
        '{"type":"error","message":"invalid message","tables":["invalid message"]}',
      ]);
      assert.equal(s.socket.closed, undefined);
      await s.session.message(auth("token-alice"));
      assert.equal(s.socket.sent.at(-1), AUTH_OK, "the socket still works");
    });
  },
);

Deno.test(
  "createWsSession() answers an unknown message type with an error and stays open",
  sanitized,
  async (t) => {
    for (const message of ['{"type":"subscribe"}', "{}", "null", "42", '"ping"']) {
      await t.step(message, async () => {
        const s = setup();
        await using(s, async () => {
          await s.session.message(message);
          assert.deepEqual(s.socket.sent, [
            '{"type":"error","message":"unknown message type","tables":["unknown message type"]}',
          ]);
          assert.equal(s.socket.closed, undefined);
        });
      });
    }
  },
);

Deno.test(
  "createWsSession() refuses non-text messages with an error and close 1008",
  sanitized,
  async (t) => {
    for (
      const [name, data] of [
        ["Uint8Array", new TextEncoder().encode('{"type":"ping"}')],
        ["ArrayBuffer", new ArrayBuffer(4)],
        ["Blob", new Blob(['{"type":"ping"}'])],
      ] as const
    ) {
      await t.step(name, async () => {
        const s = setup();
        await using(s, async () => {
          await s.session.message(data);
          assert.deepEqual(s.socket.sent, [
            '{"type":"error","message":"messages must be JSON text","tables":["messages must be JSON text"]}',
          ]);
          assert.deepEqual(s.socket.closed, { code: 1008, reason: "messages must be JSON text" });
        });
      });
    }
  },
);

Deno.test(
  "createWsSession() closes with 1009 on a message over maxMessageBytes",
  sanitized,
  async (t) => {
    await t.step("over the limit", async () => {
      const s = setup({ maxMessageBytes: 100 });
      await using(s, async () => {
        await s.session.message(JSON.stringify({ type: "ping", pad: "x".repeat(100) }));
        assert.deepEqual(s.socket.closed, { code: 1009, reason: "message too large" });
        assert.deepEqual(s.socket.sent, []);
      });
    });

    await t.step("at the limit: accepted", async () => {
      const s = setup({ maxMessageBytes: 100 });
      await using(s, async () => {
        const message = JSON.stringify({ type: "ping", pad: "" });
        await s.session.message(message + " ".repeat(100 - message.length));
        assert.deepEqual(s.socket.sent, [PONG]);
        assert.equal(s.socket.closed, undefined);
      });
    });

    await t.step("default limit 64 KiB", async () => {
      const s = setup();
      await using(s, async () => {
        await s.session.message(JSON.stringify({ type: "ping", pad: "x".repeat(64 * 1024) }));
        assert.deepEqual(s.socket.closed, { code: 1009, reason: "message too large" });
      });
    });
  },
);

Deno.test(
  "createWsSession().closed() leaves the hub and clears the auth timer",
  sanitized,
  async (t) => {
    await t.step("after auth: the subscriber is removed", async () => {
      const s = setup();
      await s.session.message(auth("token-alice"));
      assert.deepEqual(s.hub.stats().connections, 1);
      s.session.closed();
      assert.deepEqual(s.hub.stats(), { connections: 0, users: 0, delivered: 0, dropped: 0 });
      s.hub.publish(event());
      assert.deepEqual(s.socket.sent, [AUTH_OK], "nothing after closed()");
      s.session.closed(); // twice: harmless
      assert.deepEqual(s.hub.stats().connections, 0);
    });

    await t.step("before auth: the timer no longer fires", async () => {
      const s = setup({ authTimeoutMs: 30 });
      s.session.closed();
      await sleep(80);
      assert.equal(s.socket.closed, undefined, "the client closed first; no server close");
    });

    await t.step("messages after closed() are ignored", async () => {
      const s = setup();
      s.session.closed();
      await s.session.message('{"type":"ping"}');
      await s.session.message(auth("token-alice"));
      assert.deepEqual(s.socket.sent, []);
      assert.deepEqual(s.hub.stats().connections, 0);
    });

    await t.step("closed() while the token is being verified: never subscribed", async () => {
      let resolve!: (identity: { userId: string }) => void;
      const slow: Verifier = { verify: () => new Promise((r) => resolve = r) };
      const s = setup({ verifier: slow });
      const pending = s.session.message(auth("token-alice"));
      s.session.closed();
      resolve({ userId: "alice" });
      await pending;
      assert.deepEqual(s.socket.sent, []);
      assert.deepEqual(s.hub.stats().connections, 0);
    });
  },
);

Deno.test("createWsSession() closes with 1001 on Hub.closeAll()", sanitized, async () => {
  const s = setup();
  await using(s, async () => {
    await s.session.message(auth("token-alice"));
    s.hub.closeAll();
    assert.deepEqual(s.socket.closed, { code: 1001, reason: "server shutting down" });
    assert.deepEqual(s.hub.stats().connections, 0);
    await s.session.message('{"type":"ping"}');
    assert.deepEqual(s.socket.sent, [AUTH_OK], "closed: no more answers");
  });
});

Deno.test(
  "createWsSession() measures maxMessageBytes in UTF-8 bytes, not characters",
  sanitized,
  async () => {
    const s = setup({ maxMessageBytes: 100 });
    const message = JSON.stringify({ type: "ping", pad: "é".repeat(60) }); // 81 characters, 141 bytes
    assert.ok(message.length <= 100 && new TextEncoder().encode(message).length > 100);
    await s.session.message(message);
    assert.deepEqual(s.socket.closed, { code: 1009, reason: "message too large" });
    assert.deepEqual(s.socket.sent, []);
    s.session.closed();
  },
);

Deno.test(
  "createWsSession() refuses a user over the socket rate limit with 1013",
  sanitized,
  async () => {
    const s = setup({ admit: () => false });
    await s.session.message(auth("token-alice"));
    assert.deepEqual(s.socket.sent, [
      '{"type":"error","message":"rate limited","tables":["rate limited"]}',
    ]);
    assert.deepEqual(s.socket.closed, { code: 1013, reason: "rate limited" });
    assert.deepEqual(s.hub.stats().connections, 0);
    s.session.closed();
  },
);
