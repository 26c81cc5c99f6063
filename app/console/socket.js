// A minimal Socket.IO v5 client (Engine.IO v4 over one WebSocket, the default namespace only).
//
// Engine.IO packets: "0" open {sid, pingInterval, pingTimeout}, "1" close, "2" ping (the server
// asks; we answer "3" pong), "4" message. A message is a Socket.IO packet: "0" connect (we send
// `40{"token": …}` with the auth; the server answers `40{"sid": …}`), "1" disconnect, "2" event
// (`42["name", data]`, or `42<id>[…]` when an ack is wanted), "3" ack (`43<id>[answer]`),
// "4" connect error (`44{"message", "data": {"code"}}`). A lost connection is opened again with
// backoff, and every subscription is sent again once connected.

const TOKEN_CODES = new Set(["TOKEN_EXPIRED", "INVALID_TOKEN", "TOKEN_REVOKED"]);
const ACK_TIMEOUT_MS = 10000;
const MAX_BACKOFF_MS = 15000;

export class LiveSocket {
  /** `token()`: the current access token; `refresh()`: a new one (false when the session ended). */
  constructor({ token, refresh }) {
    this.token = token;
    this.refresh = refresh;
    this.state = "offline";
    this.ws = null;
    this.stopped = true;
    this.attempts = 0;
    this.needsRefresh = false;
    this.listeners = new Map();
    this.stateListeners = new Set();
    this.subscriptions = new Map();
    this.acks = new Map();
    this.nextAck = 1;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pingDeadlineMs = 45000;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.drop();
    this.subscriptions.clear();
    this.setState("offline");
  }

  on(event, handler) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(handler);
    return () => this.listeners.get(event)?.delete(handler);
  }

  onState(handler) {
    this.stateListeners.add(handler);
    handler(this.state);
    return () => this.stateListeners.delete(handler);
  }

  /** Send an event and wait for its ack (rejected when offline or after 10 s). */
  emit(event, data) {
    if (this.state !== "live") return Promise.reject(new Error("The live connection is down."));
    const id = this.nextAck++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.acks.delete(id);
        reject(new Error(`No answer to ${event}.`));
      }, ACK_TIMEOUT_MS);
      this.acks.set(id, { resolve, reject, timer });
      this.send(`42${id}${JSON.stringify([event, data])}`);
    });
  }

  /** Join a room now (if connected) and again after every reconnect; resolves with the ack. */
  subscribe(key, event, data) {
    this.subscriptions.set(key, { event, data });
    return this.state === "live" ? this.emit(event, data) : Promise.resolve(null);
  }

  unsubscribe(key, event, data) {
    this.subscriptions.delete(key);
    if (this.state === "live") this.emit(event, data).catch(() => null);
  }

  // --- the connection -------------------------------------------------------------------------
  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.stateListeners.forEach((handler) => handler(state));
  }

  open() {
    if (this.stopped) return;
    if (!this.token()) {
      this.setState("offline");
      return;
    }
    this.setState("connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/socket.io/?EIO=4&transport=websocket`);
    this.ws = ws;
    ws.onmessage = (message) => {
      if (this.ws === ws) this.receive(String(message.data));
    };
    ws.onclose = () => {
      if (this.ws === ws) this.lost();
    };
  }

  send(packet) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(packet);
  }

  drop() {
    clearTimeout(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close();
    for (const { reject, timer } of this.acks.values()) {
      clearTimeout(timer);
      reject(new Error("The live connection was lost."));
    }
    this.acks.clear();
  }

  async lost() {
    this.drop();
    if (this.stopped) return;
    this.setState("offline");
    if (this.needsRefresh) {
      this.needsRefresh = false;
      if (!(await this.refresh())) {
        this.stop();
        return;
      }
      this.open();
      return;
    }
    const backoff = Math.min(MAX_BACKOFF_MS, 500 * 2 ** this.attempts) * (0.75 + Math.random() * 0.5);
    this.attempts += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.open(), backoff);
  }

  armPing() {
    clearTimeout(this.pingTimer);
    const ws = this.ws;
    // No ping within the server's interval + timeout: the connection is dead, whatever TCP says.
    this.pingTimer = setTimeout(() => {
      if (this.ws === ws) ws.close();
    }, this.pingDeadlineMs + 1000);
  }

  receive(packet) {
    const type = packet[0];
    const rest = packet.slice(1);
    if (type === "0") {
      const info = JSON.parse(rest);
      this.pingDeadlineMs = (info.pingInterval || 25000) + (info.pingTimeout || 20000);
      this.armPing();
      this.send(`40${JSON.stringify({ token: this.token() })}`);
    } else if (type === "2") {
      this.armPing();
      this.send("3");
    } else if (type === "1") {
      this.ws.close();
    } else if (type === "4") {
      this.receivePacket(rest);
    }
  }

  receivePacket(packet) {
    const type = packet[0];
    let rest = packet.slice(1);
    if (rest.startsWith("/")) {
      const comma = rest.indexOf(",");
      rest = comma < 0 ? "" : rest.slice(comma + 1);
    }
    const [, id, body] = /^(\d*)([\s\S]*)$/.exec(rest);
    const payload = body ? JSON.parse(body) : undefined;
    if (type === "0") this.connected();
    else if (type === "1") this.ws.close();
    else if (type === "2") this.dispatch(payload, id);
    else if (type === "3") this.acked(Number(id), payload);
    else if (type === "4") this.refused(payload);
  }

  connected() {
    this.attempts = 0;
    this.setState("live");
    for (const { event, data } of this.subscriptions.values()) this.emit(event, data).catch(() => null);
  }

  dispatch(payload, id) {
    if (!Array.isArray(payload)) return;
    const [event, ...args] = payload;
    if (id) this.send(`43${id}[]`);
    for (const handler of this.listeners.get(event) || []) {
      try {
        handler(...args);
      } catch (error) {
        console.error("console: handler of", event, "failed", error);
      }
    }
  }

  acked(id, payload) {
    const pending = this.acks.get(id);
    if (!pending) return;
    this.acks.delete(id);
    clearTimeout(pending.timer);
    pending.resolve(Array.isArray(payload) ? payload[0] : payload);
  }

  refused(payload) {
    const code = payload && payload.data && payload.data.code;
    this.needsRefresh = TOKEN_CODES.has(code);
    this.ws.close();
  }
}
