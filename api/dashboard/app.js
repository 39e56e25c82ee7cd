// The imagejobs dashboard: plain DOM, no build step. User data (prompts, names, errors) is only
// ever written with textContent or attributes, never parsed as HTML.
"use strict";

const KEY_STORAGE = "imagejobs.apiKey";
const STATUS_LABELS = {
  pending: "Queued",
  processing: "Processing…",
  completed: "Ready",
  failed: "Failed",
  cancelled: "Cancelled",
};
// The same labels as imagejobs_step_label() in sql/002_lifecycle.sql.
const STEP_LABELS = {
  queued: "Waiting in queue",
  fetching: "Loading image record from database",
  uploading: "Preparing image for AI processing",
  preparing: "Processing and resizing mask to match image dimensions",
  processing: "AI model is generating the image",
  saving: "Downloading and storing result",
  completed: "Processing finished successfully",
  failed: "Processing failed",
  cancelled: "Cancelled",
};
const STEP_KINDS = new Set(["status", "progress"]);
const RECONNECT_MS = 3000;
const LIVE_FIELDS = [
  "status",
  "step",
  "progress",
  "label",
  "result_image_url",
  "thumbnail_url",
  "error_code",
  "error_message",
  "error_resolution",
];
// The canvas's four words for a node (imagejobs_node_status in sql/migrations/016_canvas.sql),
// each drawn with the badge colour of the generation status it stands for.
const NODE_BADGES = {
  pending: "pending",
  running: "processing",
  completed: "completed",
  error: "failed",
};
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// Where a node without a position goes: a grid below the placed ones (px).
const GRID = { pad: 16, width: 232, height: 320, columns: 4 };

const $ = (id) => document.getElementById(id);

const state = {
  key: sessionStorage.getItem(KEY_STORAGE),
  projects: new Map(), // id -> project
  projectId: null,
  generations: new Map(), // id -> {data, node}
  stream: null, // the selected project's generations and counters
  workspaceStream: null, // every project's counters
  buffered: null, // events that arrived while the list was loading (null: not loading)
  // Ids (projects, generations) an event named before we knew them: read once; the events that
  // arrive meanwhile are kept, and the newest is applied on top.
  fetching: new Map(), // id -> [events]
  reconnectTimer: null,
  canvas: emptyCanvas(),
};

function emptyCanvas() {
  // The open workflow's nodes (id -> {id, element, data, position}) and its stream.
  return { workflowId: null, stream: null, nodes: new Map(), timer: null };
}

class ApiError extends Error {
  constructor(status, problem) {
    super(problemText(problem) || `HTTP ${status}`);
    this.status = status;
  }
}

function problemText(problem) {
  // problem+json (api/problems.py): `detail`, and `errors` naming the field at fault.
  if (!problem || typeof problem !== "object") return "";
  const first = Array.isArray(problem.errors) ? problem.errors[0] : null;
  if (first && first.field && !String(problem.detail || "").startsWith(first.field)) {
    return `${first.field}: ${first.message}`;
  }
  return problem.detail || problem.title || "";
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let payload = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = null;
  }
  if (!response.ok) {
    if (response.status === 401) signOut("The API key was refused.");
    throw new ApiError(response.status, payload);
  }
  return payload;
}

function httpUrl(value) {
  return typeof value === "string" && /^https?:\/\//i.test(value) ? value : null;
}

function setLive(kind, text, live = $("live")) {
  live.dataset.state = kind;
  live.textContent = text;
}

// ---- sign in / out -------------------------------------------------------------------------

async function signIn(key) {
  state.key = key;
  try {
    await loadProjects();
  } catch (error) {
    state.key = null;
    throw error;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  await loadProviders();
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  openWorkspaceStream();
  followHash();
  const first = state.projects.keys().next();
  if (!first.done) await selectProject(first.value);
}

async function loadProviders() {
  // The providers are the catalogue's (GET /v1/models), each shown with its default model.
  let catalogue;
  try {
    catalogue = await api("GET", "/v1/models");
  } catch {
    return; // the page's own list stays
  }
  const defaults = new Map();
  for (const entry of catalogue.data) {
    if (!defaults.has(entry.provider) || entry.default) defaults.set(entry.provider, entry);
  }
  const select = $("provider");
  const chosen = select.value;
  select.replaceChildren(
    ...[...defaults.values()].map((entry) => {
      const option = document.createElement("option");
      option.value = entry.provider;
      option.textContent = entry.default ? `${entry.provider} (${entry.model})` : entry.provider;
      return option;
    }),
  );
  if (defaults.has(chosen)) select.value = chosen;
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  state.key = null;
  closeStream();
  closeWorkspaceStream();
  closeCanvas();
  state.projects.clear();
  state.generations.clear();
  state.projectId = null;
  $("project-list").replaceChildren();
  $("generation-list").replaceChildren();
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  setLive("off", "Not connected");
  $("api-key").focus();
}

// ---- projects ------------------------------------------------------------------------------

async function loadProjects() {
  const page = await api("GET", "/v1/projects?limit=200");
  state.projects.clear();
  for (const project of page.data) state.projects.set(project.id, project);
  renderProjects();
}

function counterText(project) {
  const parts = [`${project.completed_count}/${project.image_count} ready`];
  if (project.processing_count) parts.push(`${project.processing_count} processing`);
  if (project.pending_count) parts.push(`${project.pending_count} queued`);
  if (project.failed_count) parts.push(`${project.failed_count} failed`);
  if (project.cancelled_count) parts.push(`${project.cancelled_count} cancelled`);
  return parts.join(" · ");
}

function fillBadge(element, status) {
  element.className = `badge badge-${status}`;
  element.dataset.status = status;
  element.textContent = STATUS_LABELS[status] || status;
}

function renderProjects() {
  const list = $("project-list");
  const items = [];
  for (const project of state.projects.values()) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "project";
    button.dataset.projectId = project.id;
    if (project.id === state.projectId) button.setAttribute("aria-current", "true");
    const name = document.createElement("span");
    name.className = "project-name";
    name.textContent = project.name;
    const badge = document.createElement("span");
    fillBadge(badge, project.status);
    const counters = document.createElement("span");
    counters.className = "counters muted";
    counters.textContent = counterText(project);
    button.append(name, badge, counters);
    button.addEventListener("click", () => selectProject(project.id));
    item.append(button);
    items.push(item);
  }
  list.replaceChildren(...items);
  renderProjectHeader();
}

function renderProjectHeader() {
  const project = state.projects.get(state.projectId);
  $("no-project").hidden = Boolean(project);
  $("project-view").hidden = !project;
  if (!project) return;
  $("project-title").textContent = project.name;
  fillBadge($("project-badge"), project.status);
  $("project-counters").textContent = counterText(project);
}

function applyProjectEvent(payload) {
  const id = payload.id || payload.project_id;
  const known = state.projects.get(id);
  if (payload.deleted) {
    // The end of a project delete (DELETE /v1/projects/{id}): it is gone.
    if (known) {
      state.projects.delete(id);
      renderProjects();
    }
    return;
  }
  if (!known) {
    // A project made elsewhere: a full row is shown at once, a bare counter change is read first.
    if (payload.name !== undefined) addProject(payload);
    else fetchProject(id, payload);
    return;
  }
  const updated = { ...known };
  for (const field of [
    "status",
    "image_count",
    "pending_count",
    "processing_count",
    "completed_count",
    "failed_count",
    "cancelled_count",
  ]) {
    if (payload[field] !== undefined) updated[field] = payload[field];
  }
  state.projects.set(id, updated);
  renderProjects();
}

function addProject(project) {
  state.projects = new Map([[project.id, project], ...state.projects]);
  renderProjects();
}

function fetchProject(id, event) {
  readOnce(id, event, `/v1/projects/${encodeURIComponent(id)}`, (project) => {
    if (!state.projects.has(project.id)) addProject(project);
    return true;
  }, applyProjectEvent);
}

async function readOnce(id, event, path, show, replay) {
  const waiting = state.fetching.get(id);
  if (waiting) {
    waiting.push(event);
    return;
  }
  const events = [event];
  state.fetching.set(id, events);
  let shown = false;
  try {
    shown = show(await api("GET", path));
  } catch {
    // Gone, or not ours to see: nothing to show.
  } finally {
    state.fetching.delete(id);
  }
  // Events carry the whole state: the newest one is enough, and replaying older ones would
  // move a bar backwards for a moment.
  if (shown) replay(events[events.length - 1]);
}

async function selectProject(projectId) {
  closeStream();
  state.projectId = projectId;
  state.generations.clear();
  $("generation-list").replaceChildren();
  $("generation-error").textContent = "";
  renderWorkflows();
  renderProjects();
  // Subscribe first, then read: whatever changes in between arrives as an event, and the newest
  // of each is applied on top of the list, so the page ends on the latest state.
  const buffer = [];
  state.buffered = buffer;
  openStream(projectId);
  try {
    const page = await api(
      "GET",
      `/v1/generations?project_id=${encodeURIComponent(projectId)}&limit=100`,
    );
    if (state.projectId !== projectId) return;
    for (const generation of page.data.slice().reverse()) upsertGeneration(generation);
  } catch (error) {
    if (state.projectId === projectId) $("generation-error").textContent = error.message;
  } finally {
    // Unless another project was chosen meanwhile: its own call owns the buffer now.
    if (state.buffered === buffer) {
      state.buffered = null;
      for (const [type, payload] of latestPerId(buffer)) {
        if (type === "generation") catchUpGeneration(payload);
        else dispatch(type, payload);
      }
      updateEmpty();
    }
  }
}

function latestPerId(events) {
  // The newest event of each project and generation, in arrival order.
  const latest = new Map();
  for (const [type, payload] of events) {
    const key = `${type}:${payload.id || payload.project_id}`;
    latest.delete(key);
    latest.set(key, [type, payload]);
  }
  return [...latest.values()];
}

// ---- live stream (Server-Sent Events) ------------------------------------------------------

function openStream(projectId) {
  const source = new EventSource(sseUrl(`/v1/projects/${encodeURIComponent(projectId)}/events`));
  state.stream = source;
  setLive("connecting", "Connecting…");
  source.addEventListener("open", () => setLive("on", "Live"));
  source.addEventListener("project", (event) => receive("project", event));
  source.addEventListener("generation", (event) => receive("generation", event));
  source.addEventListener("error", () => {
    if (state.stream !== source) return;
    if (source.readyState === EventSource.CLOSED) {
      // Refused (e.g. the key was revoked) or the server is gone: start over in a moment.
      setLive("off", "Disconnected, retrying…");
      state.reconnectTimer = setTimeout(() => {
        if (state.projectId === projectId && state.key) selectProject(projectId);
      }, RECONNECT_MS);
    } else {
      setLive("connecting", "Reconnecting…");
    }
  });
}

function sseUrl(path) {
  // EventSource cannot send headers: the SSE routes accept the key as ?access_token=.
  return `${path}?access_token=${encodeURIComponent(state.key)}`;
}

function openWorkspaceStream() {
  closeWorkspaceStream();
  const source = new EventSource(sseUrl("/v1/projects/events"));
  state.workspaceStream = source;
  source.addEventListener("project", (event) => {
    try {
      applyProjectEvent(JSON.parse(event.data));
    } catch {
      // A malformed event is skipped; the next one carries the whole state again.
    }
  });
  source.addEventListener("error", () => {
    if (state.workspaceStream === source && source.readyState === EventSource.CLOSED) {
      setTimeout(() => {
        if (state.workspaceStream === source && state.key) openWorkspaceStream();
      }, RECONNECT_MS);
    }
  });
}

function closeWorkspaceStream() {
  if (state.workspaceStream) state.workspaceStream.close();
  state.workspaceStream = null;
}

function closeStream() {
  clearTimeout(state.reconnectTimer);
  if (state.stream) state.stream.close();
  state.stream = null;
}

function receive(type, event) {
  let payload;
  try {
    payload = JSON.parse(event.data);
  } catch {
    return;
  }
  if (state.buffered) state.buffered.push([type, payload]);
  else dispatch(type, payload);
}

function dispatch(type, payload) {
  if (type === "project") applyProjectEvent(payload);
  else if (type === "generation") applyGenerationEvent(payload);
}

const STATUS_ORDER = { pending: 0, processing: 1, completed: 2, failed: 2, cancelled: 2 };

function isBehind(data, event) {
  // For an event that may predate what a read just returned (no event id to compare).
  const shown = STATUS_ORDER[data.status] ?? 0;
  const incoming = STATUS_ORDER[event.status] ?? 0;
  return incoming < shown || (incoming === shown && event.progress < data.progress);
}

function catchUpGeneration(event) {
  const entry = state.generations.get(event.id);
  if (entry && entry.eventId === undefined && isBehind(entry.data, event)) return;
  applyGenerationEvent(event);
}

function applyGenerationEvent(event) {
  const entry = state.generations.get(event.id);
  if (!entry) {
    fetchUnknown(event.id, event);
    return;
  }
  // Ids only grow: an event older than one already shown is stale (a replay that crossed).
  if (entry.eventId !== undefined && event.event_id <= entry.eventId) return;
  entry.eventId = event.event_id;
  const data = { ...entry.data, status: event.status, step: event.step, progress: event.progress };
  if (STEP_KINDS.has(event.kind) && event.label) data.label = event.label;
  if (event.result_image_url) data.result_image_url = event.result_image_url;
  if (event.thumbnail_url) data.thumbnail_url = event.thumbnail_url;
  if (event.status === "failed") {
    if (event.error_code) data.error_code = event.error_code;
    if (event.error_message) data.error_message = event.error_message;
    if (event.error_resolution) data.error_resolution = event.error_resolution;
  } else if (event.kind === "status") {
    data.error_code = null;
    data.error_message = null;
    data.error_resolution = null;
  }
  entry.data = data;
  renderGeneration(entry);
}

function fetchUnknown(id, event) {
  // A generation created elsewhere (another tab, the CLI, psql): read it once, then follow it.
  const projectId = state.projectId;
  readOnce(id, event, `/v1/generations/${encodeURIComponent(id)}`, (generation) => {
    if (state.projectId !== projectId || generation.project_id !== projectId) return false;
    upsertGeneration(generation);
    updateEmpty();
    return true;
  }, catchUpGeneration);
}

// ---- generations ---------------------------------------------------------------------------

function upsertGeneration(generation) {
  let entry = state.generations.get(generation.id);
  if (entry) {
    // The stream may already be ahead of this response: keep the live fields it set.
    const live = {};
    for (const field of LIVE_FIELDS) if (entry.data[field] !== undefined) live[field] = entry.data[field];
    entry.data = { ...generation, ...live };
  } else {
    const node = $("generation-template").content.firstElementChild.cloneNode(true);
    entry = { data: generation, node };
    state.generations.set(generation.id, entry);
    wireGeneration(entry);
    $("generation-list").prepend(node);
  }
  renderGeneration(entry);
  renderWorkflows();
}

function wireGeneration(entry) {
  const node = entry.node;
  node.dataset.generationId = entry.data.id;
  node.querySelector(".thumb").addEventListener("click", () => openViewer(entry.data));
  node.querySelector(".retry").addEventListener("click", () => act(entry, "retry"));
  node.querySelector(".regenerate").addEventListener("click", () => regenerateCard(entry));
  node.querySelector(".cancel").addEventListener("click", () => act(entry, "cancel"));
  node.querySelector(".history").addEventListener("click", () => toggleVersions(entry));
}

function renderGeneration(entry) {
  const g = entry.data;
  const node = entry.node;
  node.dataset.status = g.status;
  fillBadge(node.querySelector(".badge"), g.status);
  node.querySelector(".version").textContent = `v${g.version || 1}`;
  const size = (g.prompt_spec && g.prompt_spec.size) || "";
  const created = g.created_at ? new Date(g.created_at).toLocaleTimeString() : "";
  node.querySelector(".meta").textContent = [g.provider, size, created]
    .filter(Boolean)
    .join(" · ");
  node.querySelector(".prompt").textContent = g.prompt || (g.prompt_spec || {}).base_prompt || "";

  const progress = node.querySelector("progress");
  const value = Math.max(0, Math.min(100, Number(g.progress) || 0));
  progress.value = value;
  progress.setAttribute("aria-valuenow", String(value));
  progress.setAttribute("aria-label", `Progress ${value}%`);
  node.querySelector(".percent").textContent = `${value}%`;
  node.querySelector(".progress-row").hidden = g.status === "cancelled";
  node.querySelector(".step").textContent = g.label || STEP_LABELS[g.step] || g.step || "";

  const failed = g.status === "failed";
  const message = failed ? g.error_message || g.error_code || "Failed" : "";
  showError(node, message, failed ? g.error_resolution : "");
  const alt = `Result: ${g.prompt || ""}`;
  fillThumb(node.querySelector(".thumb"), g.thumbnail_url, g.result_image_url, alt);
  const running = g.status === "pending" || g.status === "processing";
  node.querySelector(".retry").hidden = !(failed || g.status === "cancelled");
  node.querySelector(".regenerate").hidden = running;
  node.querySelector(".cancel").hidden = !running;
}

function showError(node, message, resolution) {
  // The error's message, and beside it what to do about it (error_resolution).
  const error = node.querySelector(".error-message");
  error.hidden = !message;
  error.textContent = message || "";
  const advice = node.querySelector(".resolution");
  advice.hidden = !(message && resolution);
  advice.textContent = message && resolution ? resolution : "";
}

function fillThumb(thumb, thumbnailUrl, fullUrl, alt) {
  // The card shows the thumbnail (the full image when there is none); a click opens the full one.
  const full = httpUrl(fullUrl);
  const shown = httpUrl(thumbnailUrl) || full;
  const img = thumb.querySelector("img");
  thumb.disabled = !full;
  img.hidden = !shown;
  thumb.querySelector(".thumb-placeholder").hidden = Boolean(shown);
  if (shown && img.getAttribute("src") !== shown) {
    img.src = shown;
    img.alt = alt.slice(0, 200);
  }
}

async function act(entry, action) {
  const seenBefore = entry.eventId;
  try {
    const updated = await api("POST", actionPath(entry.data.id, action));
    // The stream may have delivered what followed the action before its response arrived (a
    // retry that fails at once): the response is then the older state, and is not shown.
    if (entry.eventId !== seenBefore) return;
    entry.data = { ...entry.data, ...updated, label: null };
    renderGeneration(entry);
  } catch (error) {
    $("generation-error").textContent = error.message;
  }
}

async function regenerateCard(entry) {
  // The next version is a new generation: a new card, followed like any other.
  $("generation-error").textContent = "";
  try {
    const created = await api("POST", actionPath(entry.data.id, "regenerate"));
    if (created.project_id === state.projectId) {
      upsertGeneration(created);
      updateEmpty();
    }
  } catch (error) {
    $("generation-error").textContent = error.message;
  }
}

function actionPath(generationId, action) {
  return `/v1/generations/${encodeURIComponent(generationId)}/${action}`;
}

async function toggleVersions(entry) {
  const button = entry.node.querySelector(".history");
  const list = entry.node.querySelector(".versions");
  const open = button.getAttribute("aria-expanded") === "true";
  button.setAttribute("aria-expanded", String(!open));
  list.hidden = open;
  if (open) return;
  list.replaceChildren(textItem("Loading…"));
  try {
    const page = await api(
      "GET",
      `/v1/generations/${encodeURIComponent(entry.data.id)}/versions`,
    );
    list.replaceChildren(...page.data.map((version) => versionItem(version, entry.data.id)));
  } catch (error) {
    list.replaceChildren(textItem(error.message));
  }
}

function textItem(text) {
  const item = document.createElement("li");
  item.textContent = text;
  return item;
}

function versionItem(version, currentId) {
  const item = document.createElement("li");
  item.className = "version-item";
  if (version.id === currentId) item.setAttribute("aria-current", "true");
  const url = httpUrl(version.thumbnail_url) || httpUrl(version.result_image_url);
  if (url) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "mini-thumb";
    button.setAttribute("aria-label", `Open version ${version.version}`);
    const img = document.createElement("img");
    img.src = url;
    img.alt = "";
    button.append(img);
    button.addEventListener("click", () => openViewer(version));
    item.append(button);
  }
  const label = document.createElement("span");
  const meta = version.metadata || {};
  const how = meta.editMode ? ` (${meta.editMode})` : version.parent_id ? " (edit)" : " (original)";
  label.textContent = `v${version.version}${how}: ${version.prompt}`;
  const badge = document.createElement("span");
  fillBadge(badge, version.status);
  item.append(badge, label);
  return item;
}

function updateEmpty() {
  $("empty").hidden = state.generations.size > 0;
}

function renderWorkflows() {
  // The workflows the project's generations belong to, each a link to its canvas.
  const ids = new Set();
  for (const { data } of state.generations.values()) {
    if (data.workflow_id) ids.add(String(data.workflow_id));
  }
  $("workflows").hidden = ids.size === 0;
  $("workflow-list").replaceChildren(
    ...[...ids].map((id) => {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = `#workflow=${encodeURIComponent(id)}`;
      link.dataset.workflowId = id;
      link.title = `Canvas of workflow ${id}`;
      link.textContent = id.slice(0, 8);
      item.append(link);
      return item;
    }),
  );
}

function openViewer(generation) {
  const url = httpUrl(generation.result_image_url);
  if (!url) return;
  $("viewer-image").src = url;
  $("viewer-image").alt = generation.prompt || "";
  $("viewer-link").href = url;
  $("viewer").showModal();
}

// ---- canvas: a workflow's nodes, live from GET /v1/workflows/{id}/events ---------------------

function workflowFromHash() {
  const match = /^#workflow=([^&]+)$/.exec(window.location.hash);
  const id = match ? decodeURIComponent(match[1]) : "";
  return UUID_PATTERN.test(id) ? id.toLowerCase() : null;
}

function followHash() {
  // `#workflow=<uuid>` opens that workflow's canvas; any other hash closes it.
  if (!state.key) return;
  const id = workflowFromHash();
  if (id === state.canvas.workflowId) return;
  closeCanvas();
  if (id) openCanvas(id);
}

function openCanvas(workflowId) {
  state.canvas.workflowId = workflowId;
  $("canvas-view").hidden = false;
  $("canvas-workflow").textContent = workflowId;
  $("canvas-error").textContent = "";
  $("canvas-empty").hidden = true;
  connectCanvas(workflowId);
  $("canvas-view").scrollIntoView({ block: "start" });
}

function closeCanvas() {
  clearTimeout(state.canvas.timer);
  if (state.canvas.stream) state.canvas.stream.close();
  state.canvas = emptyCanvas();
  $("canvas").replaceChildren();
  $("canvas-view").hidden = true;
}

function connectCanvas(workflowId) {
  const source = new EventSource(sseUrl(`/v1/workflows/${encodeURIComponent(workflowId)}/events`));
  const live = $("canvas-live");
  state.canvas.stream = source;
  setLive("connecting", "Connecting…", live);
  source.addEventListener("open", () => setLive("on", "Live", live));
  source.addEventListener("node", (event) => {
    if (state.canvas.stream !== source) return;
    let batch;
    try {
      batch = JSON.parse(event.data);
    } catch {
      return; // the next event carries the nodes' whole state again
    }
    // Node data is state: each event's nodes replace what the cards showed.
    for (const item of batch.nodes || []) upsertNode(item);
    layoutCanvas();
  });
  source.addEventListener("error", () => {
    if (state.canvas.stream !== source) return;
    if (source.readyState === EventSource.CLOSED) {
      setLive("off", "Disconnected, retrying…", live);
      state.canvas.timer = setTimeout(() => {
        if (state.canvas.stream === source && state.key) connectCanvas(workflowId);
      }, RECONNECT_MS);
    } else {
      setLive("connecting", "Reconnecting…", live);
    }
  });
}

function upsertNode(item) {
  let entry = state.canvas.nodes.get(item.id);
  if (!entry) {
    const element = $("node-template").content.firstElementChild.cloneNode(true);
    entry = { id: item.id, element, data: {}, position: {} };
    element.dataset.nodeId = item.id;
    const current = entry;
    element.querySelector(".thumb").addEventListener("click", () =>
      openViewer({ result_image_url: current.data.imageUrl, prompt: `Node ${current.id}` }),
    );
    element.querySelector(".retry").addEventListener("click", () => nodeAction(current, "retry"));
    element
      .querySelector(".regenerate")
      .addEventListener("click", () => nodeAction(current, "regenerate"));
    state.canvas.nodes.set(item.id, entry);
    $("canvas").append(element);
  }
  entry.data = item.node_data && typeof item.node_data === "object" ? item.node_data : {};
  entry.position = item.position && typeof item.position === "object" ? item.position : {};
  renderNode(entry);
}

function renderNode(entry) {
  const d = entry.data;
  const element = entry.element;
  const status = NODE_BADGES[d.status] ? d.status : "pending";
  element.dataset.status = status;
  element.dataset.updatedAt = typeof d.updatedAt === "string" ? d.updatedAt : "";
  const badge = element.querySelector(".badge");
  badge.className = `badge badge-${NODE_BADGES[status]}`;
  badge.dataset.status = status;
  badge.textContent = status;
  element.querySelector(".version").textContent = d.version ? `v${d.version}` : "";
  element.querySelector(".node-name").textContent = entry.id;
  const error = status === "error" && d.error && typeof d.error === "object" ? d.error : null;
  const message = error ? error.message || error.code || "Failed" : "";
  showError(element, message, error ? error.resolution : "");
  fillThumb(element.querySelector(".thumb"), d.thumbnailUrl, d.imageUrl, `Node ${entry.id}`);
  const generationId = typeof d.generationId === "string" ? d.generationId : null;
  element.querySelector(".retry").hidden = !(generationId && status === "error");
  element.querySelector(".regenerate").hidden = !generationId;
}

function placed(position) {
  const x = Number(position.x);
  const y = Number(position.y);
  return Number.isFinite(x) && Number.isFinite(y) ? { x, y } : null;
}

function layoutCanvas() {
  // Placed nodes where their position says (shifted so none is off the left or top edge), the
  // others in a grid below them.
  const entries = [...state.canvas.nodes.values()];
  const points = entries.map((entry) => placed(entry.position));
  const known = points.filter(Boolean);
  const minX = Math.min(0, ...known.map((p) => p.x));
  const minY = Math.min(0, ...known.map((p) => p.y));
  let bottom = known.length ? Math.max(...known.map((p) => p.y - minY)) + GRID.height : 0;
  let right = known.length ? Math.max(...known.map((p) => p.x - minX)) + GRID.width : 0;
  const gridTop = bottom;
  let unplaced = 0;
  entries.forEach((entry, index) => {
    let at = points[index] && { x: points[index].x - minX, y: points[index].y - minY };
    if (!at) {
      const cell = unplaced++;
      at = {
        x: (cell % GRID.columns) * GRID.width,
        y: gridTop + Math.floor(cell / GRID.columns) * GRID.height,
      };
      bottom = Math.max(bottom, at.y + GRID.height);
      right = Math.max(right, at.x + GRID.width);
    }
    // CSSOM, not a style attribute: the CSP (style-src 'self') allows it.
    entry.element.style.left = `${at.x + GRID.pad}px`;
    entry.element.style.top = `${at.y + GRID.pad}px`;
  });
  const canvas = $("canvas");
  canvas.style.height = `${bottom + 2 * GRID.pad}px`;
  canvas.style.minWidth = `${right + 2 * GRID.pad}px`;
  $("canvas-empty").hidden = entries.length > 0;
}

async function nodeAction(entry, action) {
  // Retry or regenerate the node's current generation; the stream shows what follows.
  $("canvas-error").textContent = "";
  try {
    await api("POST", actionPath(entry.data.generationId, action));
  } catch (error) {
    $("canvas-error").textContent = error.message;
  }
}

// ---- forms ---------------------------------------------------------------------------------

function wireForms() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    $("login-error").textContent = "";
    try {
      await signIn(key);
      $("api-key").value = "";
    } catch (error) {
      $("login-error").textContent =
        error.status === 401 ? "That API key was not accepted." : error.message;
    }
  });

  $("logout").addEventListener("click", () => signOut(""));

  $("project-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("project-error").textContent = "";
    try {
      const project = await api("POST", "/v1/projects", { name: $("project-name").value });
      $("project-name").value = "";
      if (!state.projects.has(project.id)) addProject(project);
      await selectProject(project.id);
    } catch (error) {
      $("project-error").textContent = error.message;
    }
  });

  $("generation-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("generate");
    $("generation-error").textContent = "";
    button.disabled = true;
    try {
      const generation = await api("POST", "/v1/generations", {
        project_id: state.projectId,
        prompt: $("prompt").value,
        provider: $("provider").value,
        prompt_spec: { size: $("size").value },
      });
      if (generation.project_id === state.projectId) {
        upsertGeneration(generation);
        updateEmpty();
      }
      $("prompt").value = "";
    } catch (error) {
      $("generation-error").textContent = error.message;
    } finally {
      button.disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  wireForms();
  window.addEventListener("hashchange", followHash);
  if (state.key) {
    signIn(state.key).catch(() => signOut("Please sign in again."));
  } else {
    $("api-key").focus();
  }
});
