/**
 * The raw baseline for the real-time benchmark: a bare `Deno.serve` WebSocket server (no router,
 * no auth, no hub) that holds its sockets and echoes every message.
 */
Deno.serve({
  port: 0,
  hostname: "127.0.0.1",
  onListen: ({ port }) => console.log(JSON.stringify({ msg: "listening", port })),
}, (req) => {
  const { socket, response } = Deno.upgradeWebSocket(req);
  socket.onmessage = (e) => socket.send(e.data);
  return response;
});
