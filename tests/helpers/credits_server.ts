/** A fake mana-credits: answers the sync status per user as the test says, and counts requests. */

export type CreditsAnswer = "active" | "inactive" | "garbage" | "error" | {
  delayMs: number;
  active: boolean;
};

export interface CreditsServer {
  url: string;
  /** Requests per user id, and the service keys they carried. */
  requests: { userId: string; serviceKey: string | null }[];
  answer(userId: string, answer: CreditsAnswer): void;
  close(): Promise<void>;
}

export function startCreditsServer(fallback: CreditsAnswer = "active"): CreditsServer {
  const answers = new Map<string, CreditsAnswer>();
  const requests: CreditsServer["requests"] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const m = /^\/api\/v1\/internal\/sync\/status\/(.+)$/.exec(new URL(req.url).pathname);
    if (!m) return new Response("not found", { status: 404 });
    const userId = decodeURIComponent(m[1]!);
    requests.push({ userId, serviceKey: req.headers.get("x-service-key") });
    const answer = answers.get(userId) ?? fallback;
    if (answer === "garbage") return new Response("<html>oops</html>", { status: 200 });
    if (answer === "error") return new Response("boom", { status: 500 });
    if (typeof answer === "object") {
      await new Promise((r) => setTimeout(r, answer.delayMs));
      return Response.json({ active: answer.active });
    }
    return Response.json({ active: answer === "active", plan: "test" });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    requests,
    answer: (userId, answer) => answers.set(userId, answer),
    close: () => server.shutdown(),
  };
}
