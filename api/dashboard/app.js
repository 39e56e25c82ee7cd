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
  "error_code",
  "error_message",
];

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
};

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

function setLive(kind, text) {
  const live = $("live");
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
  if (event.status === "failed") {
    if (event.error_code) data.error_code = event.error_code;
    if (event.error_message) data.error_message = event.error_message;
  } else if (event.kind === "status") {
    data.error_code = null;
    data.error_message = null;
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
}

function wireGeneration(entry) {
  const node = entry.node;
  node.dataset.generationId = entry.data.id;
  node.querySelector(".thumb").addEventListener("click", () => openViewer(entry.data));
  node.querySelector(".retry").addEventListener("click", () => act(entry, "retry"));
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

  const error = node.querySelector(".error-message");
  const failed = g.status === "failed";
  error.hidden = !failed;
  error.textContent = failed ? g.error_message || g.error_code || "Failed" : "";

  const url = httpUrl(g.result_image_url);
  const thumb = node.querySelector(".thumb");
  const img = thumb.querySelector("img");
  thumb.disabled = !url;
  img.hidden = !url;
  thumb.querySelector(".thumb-placeholder").hidden = Boolean(url);
  if (url && img.getAttribute("src") !== url) {
    img.src = url;
    img.alt = `Result: ${g.prompt || ""}`.slice(0, 200);
  }
  node.querySelector(".retry").hidden = !failed;
  node.querySelector(".cancel").hidden = !(g.status === "pending" || g.status === "processing");
}

async function act(entry, action) {
  const seenBefore = entry.eventId;
  try {
    const updated = await api(
      "POST",
      `/v1/generations/${encodeURIComponent(entry.data.id)}/${action}`,
    );
    // The stream may have delivered what followed the action before its response arrived (a
    // retry that fails at once): the response is then the older state, and is not shown.
    if (entry.eventId !== seenBefore) return;
    entry.data = { ...entry.data, ...updated, label: null };
    renderGeneration(entry);
  } catch (error) {
    $("generation-error").textContent = error.message;
  }
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
  const url = httpUrl(version.result_image_url);
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

function openViewer(generation) {
  const url = httpUrl(generation.result_image_url);
  if (!url) return;
  $("viewer-image").src = url;
  $("viewer-image").alt = generation.prompt || "";
  $("viewer-link").href = url;
  $("viewer").showModal();
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
  if (state.key) {
    signIn(state.key).catch(() => signOut("Please sign in again."));
  } else {
    $("api-key").focus();
  }
});
