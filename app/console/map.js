// #/map and #/map/<REGION>: a region's rides not final and its online drivers, drawn on an SVG
// from /admin/map's bounds, then moved live by `map:ride` and `map:driver` (a driver that goes
// offline leaves the map). Clicking a ride opens its timeline.

import { field, h, setText, svg } from "./dom.js";
import * as draw from "./map_view.js";
import { drawTimeline } from "./timeline.js";

const FINAL = new Set(["COMPLETED", "CANCELLED", "NO_DRIVERS_AVAILABLE"]);
const FINAL_KEPT_MS = 60000;

function tileTemplate() {
  const meta = document.querySelector('meta[name="console-tile-url"]');
  return meta ? meta.getAttribute("content") : "";
}

function picker(ctx, region) {
  const input = h("input", { testid: "map-region", type: "text", value: region, list: "known-regions",
    placeholder: "BER", maxlength: 16, autocomplete: "off" });
  const options = h("datalist", { id: "known-regions" });
  ctx.api.get("/regions").then((body) => {
    options.replaceChildren(...body.items.map((item) => h("option", { value: item.code }, item.name)));
  }).catch(() => null);
  const form = h("form", { class: "filters" }, field("Region", input), options,
    h("button", { testid: "map-open", type: "submit" }, "Open"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const code = input.value.trim().toUpperCase();
    if (code) ctx.navigate(`#/map/${encodeURIComponent(code)}`);
  });
  return form;
}

export function mount(ctx, route, root) {
  const region = route.region;
  const counts = h("span", { testid: "map-counts", class: "muted" }, "0 rides · 0 drivers");
  const note = h("p", { class: "muted" }, region ? "Loading…" : "Pick a region to watch.");
  const tiles = svg("g", { class: "tiles" });
  const background = svg("g");
  const rideLayer = svg("g");
  const driverLayer = svg("g");
  const canvas = svg("svg", { testid: "map-canvas", class: "map-canvas", viewBox: "0 0 1000 620", role: "img",
    "aria-label": region ? `live map of ${region}` : "live map" }, background, tiles, rideLayer, driverLayer);
  const panel = h("aside", { testid: "ride-timeline", class: "timeline-panel", hidden: true });
  root.append(h("div", { class: "page-head" }, h("h1", {}, "Live map", region ? ` · ${region}` : ""), counts),
    picker(ctx, region), note, h("div", { class: "map-wrap" }, canvas, panel));
  if (!region) return () => null;

  let alive = true;
  let bounds = null;
  let fixed = false;
  let view = null;
  let openRide = null;
  const rides = new Map();
  const drivers = new Map();

  function showCounts() {
    setText(counts, `${rides.size} ride${rides.size === 1 ? "" : "s"} · ${drivers.size} driver${drivers.size === 1 ? "" : "s"}`);
  }

  function redraw() {
    view = draw.projection(bounds);
    canvas.setAttribute("viewBox", `0 0 ${view.width.toFixed(0)} ${view.height.toFixed(0)}`);
    draw.drawBackground(background, view);
    draw.drawTiles(tiles, view, tileTemplate());
    rides.forEach((entry) => draw.placeRide(entry.node, entry.ride, view));
    drivers.forEach((entry) => draw.placeDriver(entry.node, entry.driver, view));
  }

  /** A region without server bounds gets bounds around what is seen, widened when needed. */
  function hold(...places) {
    if (fixed || (bounds && places.every(([lat, lng]) => draw.inside(bounds, lat, lng)))) return;
    const points = [...places];
    rides.forEach(({ ride }) => points.push([ride.pickup.lat, ride.pickup.lng], [ride.dropoff.lat, ride.dropoff.lng]));
    drivers.forEach(({ driver }) => points.push([driver.lat, driver.lng]));
    bounds = draw.boundsAround(points);
    setText(note, "No rides in the last 30 days: the map frames what it sees.");
    redraw();
  }

  function select(rideId) {
    openRide = rideId;
    rides.forEach((entry, id) => entry.node.classList.toggle("selected", id === rideId));
  }

  async function showTimeline(rideId) {
    select(rideId);
    const entry = rides.get(rideId);
    const state = { rideId, ride: null, seen: entry ? entry.seen : [], error: "", onClose: () => {
      select(null);
      panel.hidden = true;
    } };
    drawTimeline(panel, state);
    try {
      state.ride = await ctx.api.get(`/rides/${encodeURIComponent(rideId)}`);
    } catch (error) {
      state.error = ctx.describe(error);
    }
    if (alive && openRide === rideId) {
      drawTimeline(panel, state);
    }
  }

  function upsertRide(ride, at) {
    hold([ride.pickup.lat, ride.pickup.lng], [ride.dropoff.lat, ride.dropoff.lng]);
    let entry = rides.get(ride.rideId);
    if (!entry) {
      entry = { ride, seen: [], node: draw.rideMark(ride, showTimeline), removal: null };
      rides.set(ride.rideId, entry);
      rideLayer.append(entry.node);
    }
    entry.ride = { ...entry.ride, ...ride };
    if (at) entry.seen.push({ status: ride.status, at });
    if (view) draw.placeRide(entry.node, entry.ride, view);
    clearTimeout(entry.removal);
    if (FINAL.has(ride.status)) {
      entry.removal = setTimeout(() => {
        entry.node.remove();
        rides.delete(ride.rideId);
        showCounts();
      }, FINAL_KEPT_MS);
    }
    if (openRide === ride.rideId && at) showTimeline(ride.rideId);
    showCounts();
  }

  function upsertDriver(driver) {
    let entry = drivers.get(driver.driverId);
    if (!driver.online) {
      if (entry) entry.node.remove();
      drivers.delete(driver.driverId);
      showCounts();
      return;
    }
    hold([driver.lat, driver.lng]);
    if (!entry) {
      entry = { driver, node: draw.driverMark(driver) };
      drivers.set(driver.driverId, entry);
      driverLayer.append(entry.node);
    }
    entry.driver = { ...entry.driver, ...driver };
    if (view) draw.placeDriver(entry.node, entry.driver, view);
    showCounts();
  }

  /** After a gap (reconnect), what the map no longer lists is gone (final rides linger anyway). */
  function forgetMissing(body) {
    const listedDrivers = new Set(body.drivers.map((driver) => driver.driverId));
    drivers.forEach((entry, id) => {
      if (!listedDrivers.has(id)) upsertDriver({ ...entry.driver, online: false });
    });
    const listedRides = new Set(body.rides.map((ride) => ride.rideId));
    rides.forEach((entry, id) => {
      if (!listedRides.has(id) && !FINAL.has(entry.ride.status)) {
        entry.node.remove();
        rides.delete(id);
      }
    });
  }

  async function load() {
    try {
      const body = await ctx.api.get("/admin/map", { region });
      if (!alive) return;
      fixed = Boolean(body.bounds);
      if (fixed) {
        bounds = body.bounds;
        redraw();
        setText(note, tileTemplate() ? "" : "Rides: pickup ● drop-off ■ · drivers ● (no map tiles configured).");
      } else {
        setText(note, "No rides in the last 30 days: this region has no bounds yet.");
      }
      forgetMissing(body);
      body.rides.forEach((ride) => upsertRide(ride, null));
      body.drivers.forEach(upsertDriver);
    } catch (error) {
      if (alive) setText(note, error.status === 404 ? `No region has the code ${region}.` : ctx.describe(error));
    }
  }

  const offRide = ctx.socket.on("map:ride", (event) => event.region === region && upsertRide(event, event.at));
  const offDriver = ctx.socket.on("map:driver", (event) => event.region === region && upsertDriver(event));
  const offState = ctx.socket.onState((state) => {
    if (state === "live") load();
  });
  ctx.socket.subscribe(`map:${region}`, "subscribe:map", { region }).then((ack) => {
    if (ack && ack.ok === false) ctx.toast("error", `Live map refused: ${ack.error.message}`);
  }).catch(() => null);
  if (ctx.socket.state !== "live") load();
  return () => {
    alive = false;
    offRide();
    offDriver();
    offState();
    rides.forEach((entry) => clearTimeout(entry.removal));
    ctx.socket.unsubscribe(`map:${region}`, "unsubscribe:map", { region });
  };
}
