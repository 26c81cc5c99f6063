// The live map's drawing: a Web Mercator projection of a region's bounds onto an SVG, optional
// raster tiles (only when CONSOLE_TILE_URL is set), and the ride and driver marks.

import { fill, svg } from "./dom.js";

const WIDTH = 1000;
const HEIGHT = 620;
const TILE = 256;
const MAX_TILES = 64;

const mercX = (lng) => (lng + 180) / 360;
const mercY = (lat) => {
  const r = (Math.max(-85, Math.min(85, lat)) * Math.PI) / 180;
  return (1 - Math.log(Math.tan(r) + 1 / Math.cos(r)) / Math.PI) / 2;
};

/** A projection of `bounds` ({minLat, minLng, maxLat, maxLng}) onto 1000 x 620 units: the region
 * fits whole and centred, and the view widens around it to fill the frame. */
export function projection(bounds) {
  const left = mercX(bounds.minLng);
  const top = mercY(bounds.maxLat);
  const dx = Math.max(1e-9, mercX(bounds.maxLng) - left);
  const dy = Math.max(1e-9, mercY(bounds.minLat) - top);
  const scale = Math.min(WIDTH / dx, HEIGHT / dy);
  const x0 = left + dx / 2 - WIDTH / 2 / scale;
  const y0 = top + dy / 2 - HEIGHT / 2 / scale;
  return {
    x0, y0, scale, width: WIDTH, height: HEIGHT,
    point: (lat, lng) => [(mercX(lng) - x0) * scale, (mercY(lat) - y0) * scale],
  };
}

/** Bounds around `points` ([lat, lng]), widened 10 % on each side and at least 0.05°. */
export function boundsAround(points) {
  const lats = points.map(([lat]) => lat);
  const lngs = points.map(([, lng]) => lng);
  const pad = (lo, hi) => Math.max((hi - lo) * 0.1, (0.05 - (hi - lo)) / 2, 0);
  const [minLat, maxLat] = [Math.min(...lats), Math.max(...lats)];
  const [minLng, maxLng] = [Math.min(...lngs), Math.max(...lngs)];
  const padLat = pad(minLat, maxLat);
  const padLng = pad(minLng, maxLng);
  return { minLat: minLat - padLat, maxLat: maxLat + padLat, minLng: minLng - padLng, maxLng: maxLng + padLng };
}

export function inside(bounds, lat, lng) {
  return lat >= bounds.minLat && lat <= bounds.maxLat && lng >= bounds.minLng && lng <= bounds.maxLng;
}

function tileUrl(template, z, x, y) {
  return template.replaceAll("{z}", z).replaceAll("{x}", x).replaceAll("{y}", y)
    .replaceAll("{s}", "abc"[(x + y) % 3]).replaceAll("{r}", "");
}

/** Raster tiles under the marks: nothing unless a tile URL template is configured. */
export function drawTiles(layer, view, template) {
  if (!template) {
    fill(layer);
    return;
  }
  const z = Math.max(0, Math.min(19, Math.round(Math.log2(view.scale / TILE))));
  const n = 2 ** z;
  const size = view.scale / n;
  const [tx0, ty0] = [Math.floor(view.x0 * n), Math.floor(view.y0 * n)];
  const [tx1, ty1] = [Math.floor((view.x0 + view.width / view.scale) * n), Math.floor((view.y0 + view.height / view.scale) * n)];
  const images = [];
  for (let x = tx0; x <= tx1; x += 1) {
    for (let y = ty0; y <= ty1; y += 1) {
      if (images.length >= MAX_TILES) break;
      images.push(svg("image", {
        href: tileUrl(template, z, x, y), x: (x / n - view.x0) * view.scale, y: (y / n - view.y0) * view.scale,
        width: size, height: size, preserveAspectRatio: "none",
      }));
    }
  }
  fill(layer, images);
}

export function drawBackground(layer, view) {
  const lines = [];
  for (let i = 1; i < 10; i += 1) {
    lines.push(svg("line", { x1: (view.width * i) / 10, y1: 0, x2: (view.width * i) / 10, y2: view.height, class: "grid" }));
    lines.push(svg("line", { x1: 0, y1: (view.height * i) / 10, x2: view.width, y2: (view.height * i) / 10, class: "grid" }));
  }
  fill(layer, svg("rect", { x: 0, y: 0, width: view.width, height: view.height, class: "map-bg" }), lines);
}

/** A ride's mark: its pickup (circle), drop-off (square) and the line between them. */
export function rideMark(ride, onClick) {
  const node = svg("g", { testid: "map-ride", class: "ride", tabindex: 0, role: "button",
    dataset: { rideId: ride.rideId, status: ride.status } });
  node.addEventListener("click", () => onClick(ride.rideId));
  node.addEventListener("keydown", (event) => {
    if (event.key === "Enter") onClick(ride.rideId);
  });
  return node;
}

export function placeRide(node, ride, view) {
  const [px, py] = view.point(ride.pickup.lat, ride.pickup.lng);
  const [dx, dy] = view.point(ride.dropoff.lat, ride.dropoff.lng);
  node.dataset.status = ride.status;
  const selected = node.classList.contains("selected") ? " selected" : "";
  node.setAttribute("class", `ride status-${ride.status.toLowerCase()}${selected}`);
  fill(node, svg("title", {}, `ride ${ride.rideId.slice(0, 8)} · ${ride.status}`),
    svg("line", { x1: px, y1: py, x2: dx, y2: dy, class: "ride-hit" }),
    svg("line", { x1: px, y1: py, x2: dx, y2: dy, class: "ride-path" }),
    svg("circle", { cx: px, cy: py, r: 7, class: "ride-pickup" }),
    svg("rect", { x: dx - 5, y: dy - 5, width: 10, height: 10, class: "ride-dropoff" }));
}

export function driverMark(driver) {
  return svg("circle", { testid: "map-driver", class: "driver", r: 5, dataset: { driverId: driver.driverId } },
    svg("title", {}, `driver ${driver.driverId.slice(0, 8)}${driver.vehicleType ? ` · ${driver.vehicleType}` : ""}`));
}

export function placeDriver(node, driver, view) {
  const [x, y] = view.point(driver.lat, driver.lng);
  node.setAttribute("cx", x.toFixed(1));
  node.setAttribute("cy", y.toFixed(1));
  node.dataset.lat = String(driver.lat);
  node.dataset.lng = String(driver.lng);
}
