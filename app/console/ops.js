// The `ops` room: pages showing queues or workers follow `ops:snapshot` (every 2 s from the clock)
// and fall back to reading the API when no snapshot came for a while (socket down, no clock).

const STALE_MS = 6000;

/** Call `render(snapshot)` on every `ops:snapshot`, `load()` now and whenever snapshots stop. */
export function followOps(ctx, { onSnapshot, load }) {
  let last = 0;
  const off = ctx.socket.on("ops:snapshot", (snapshot) => {
    last = Date.now();
    onSnapshot(snapshot);
  });
  ctx.socket.subscribe("ops", "subscribe:ops", {}).then((ack) => {
    if (ack && ack.ok === false) ctx.toast("error", `Live updates refused: ${ack.error.message}`);
  }).catch(() => null);
  const timer = setInterval(() => {
    if (Date.now() - last > STALE_MS) load();
  }, STALE_MS - 1000);
  load();
  return () => {
    off();
    clearInterval(timer);
    ctx.socket.unsubscribe("ops", "unsubscribe:ops", {});
  };
}
