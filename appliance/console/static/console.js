// The operator console: sign in, one WebRTC connection to the appliance (audio both ways and a
// "control" data channel carrying the JSON messages of docs/OPERATORS.md), and the screens for
// offers, the call and wrap-up. Nothing is fetched from anywhere but the appliance.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem("switchboard.token"),
  identity: null, role: null, queues: [], ice: [],
  pc: null, channel: null, mic: null,
  offer: null, offerTimer: null, call: null, callStarted: 0, callTimer: null,
  muted: false, held: false, ring: null, lastCall: null, wrapTimer: null,
};

function show(id, visible) { $(id).hidden = !visible; }
function text(id, value) { $(id).textContent = value; }
function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

async function api(path, options = {}) {
  const headers = Object.assign({ "Content-Type": "application/json" }, options.headers || {});
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401 && path !== "/api/login") { signedOut("Your session has ended; sign in again."); }
  return response;
}

// --- sign in
$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  text("login-error", "");
  const response = await api("/api/login", {
    method: "POST", body: JSON.stringify({ username: $("username").value, password: $("password").value }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const wait = response.headers.get("Retry-After");
    text("login-error", body.error + (wait ? ` (${wait} s)` : ""));
    return;
  }
  $("password").value = "";
  state.token = body.token;
  sessionStorage.setItem("switchboard.token", body.token);
  await enter(body);
});

async function resume() {
  if (!state.token) return;
  const response = await api("/api/me");
  if (response.ok) await enter(await response.json());
}

async function enter(me) {
  state.identity = me.identity; state.role = me.role; state.queues = me.queues || []; state.ice = me.ice_servers || [];
  text("identity", `${me.identity} (${me.role})`);
  text("queues", state.queues.length ? `Queues: ${state.queues.join(", ")}` : "");
  $("transfer-queue").innerHTML = (me.all_queues || state.queues).map((q) => `<option>${esc(q)}</option>`).join("");
  show("login", false); show("desk", true); show("who", true);
  await connect();
  refreshCalls();
}

function signedOut(message) {
  sessionStorage.removeItem("switchboard.token");
  state.token = null;
  if (state.pc) state.pc.close();
  state.pc = null;
  stopRinging();
  show("desk", false); show("who", false); show("login", true);
  text("login-error", message || "");
}

// --- WebRTC: one offer, one answer (the appliance does not trickle ICE, so neither do we)
async function connect() {
  text("desk-error", "");
  try {
    state.mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
  } catch (error) {
    text("desk-error", `No microphone: ${error.message}. Calls cannot be taken.`);
    return;
  }
  const pc = new RTCPeerConnection({ iceServers: state.ice });
  state.pc = pc;
  state.mic.getTracks().forEach((track) => pc.addTrack(track, state.mic));
  pc.ontrack = (event) => { $("remote").srcObject = event.streams[0] || new MediaStream([event.track]); };
  pc.onconnectionstatechange = () => {
    $("link").classList.toggle("up", pc.connectionState === "connected");
    $("link").title = `WebRTC: ${pc.connectionState}`;
    if (pc.connectionState === "failed") text("desk-error", "Connection to the appliance lost; reload to reconnect.");
  };
  const channel = pc.createDataChannel("control", { ordered: true });
  state.channel = channel;
  channel.onmessage = (event) => receive(JSON.parse(event.data));
  channel.onclose = () => { if (state.token) text("desk-error", "Control channel closed; reload to reconnect."); };
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const response = await api("/api/rtc/offer", {
    method: "POST", body: JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp }),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { text("desk-error", `Cannot connect audio: ${body.error}`); return; }
  await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
}

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(); } };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000); // a LAN needs no more; send what we have
  });
}

function send(message) {
  if (state.channel && state.channel.readyState === "open") state.channel.send(JSON.stringify(message));
}

// --- messages from the appliance
const handlers = {
  welcome: (m) => {
    if (m.role === "operator") { setBadge("away", "signing in"); send({ type: "state", state: "available" }); return; }
    setBadge("supervising", "");
    ["available", "away", "away-label"].forEach((id) => show(id, false));
    text("recent-whose", "Recent calls");
    show("wallboard", true);
  },
  wallboard: (m) => wallboard(m),
  wallboard_update: (m) => wallboardUpdate(m),
  joined: (m) => joined(m),
  left: (m) => { if (state.watching === m.call) { state.watching = null; show("supervise", false); document.body.dataset.joined = ""; } },
  transcript: (m) => transcriptLine(m),
  summary: (m) => { if (m.call === state.watching) { text("sup-llm-summary-text", m.text); show("sup-llm-summary", true); } },
  state: (m) => setBadge(m.state, m.reason),
  offer: (m) => ringFor(m),
  offer_withdrawn: (m) => { if (state.offer && state.offer.offer === m.offer) clearOffer(`Offer withdrawn: ${m.reason}`); },
  call: (m) => callState(m),
  wrap_up_due: (m) => wrapUp(m),
  error: (m) => text("desk-error", `${m.request ? m.request + ": " : ""}${m.message}`),
  pong: () => {},
};

function receive(message) {
  const handler = handlers[message.type];
  if (handler) handler(message);
}

function setBadge(value, reason) {
  const badge = $("state-badge");
  badge.className = `badge ${value}`;
  badge.textContent = value.replace("_", " ") + (reason ? ` (${reason})` : "");
  document.body.dataset.state = value;
}

function ringFor(offer) {
  state.offer = offer;
  $("offer-context").innerHTML = contextHtml(offer.context);
  show("offer", true);
  startRinging();
  const until = Date.now() + offer.ring_timeout_s * 1000;
  clearInterval(state.offerTimer);
  state.offerTimer = setInterval(() => text("offer-countdown", `${Math.max(0, Math.ceil((until - Date.now()) / 1000))} s`), 250);
  $("accept").focus();
}

function clearOffer(note) {
  state.offer = null;
  clearInterval(state.offerTimer);
  show("offer", false);
  stopRinging();
  if (note) text("desk-error", note);
}

function callState(message) {
  if (message.state === "ended") {
    show("call", false);
    clearInterval(state.callTimer);
    state.call = null;
    return;
  }
  if (!state.call || state.call !== message.call) {
    state.call = message.call;
    state.callStarted = Date.now();
    clearInterval(state.callTimer);
    state.callTimer = setInterval(tickTimer, 500);
    tickTimer();
    show("wrapup", false);
  }
  clearOffer();
  text("desk-error", "");
  if (message.context) $("call-context").innerHTML = contextHtml(message.context);
  state.held = message.state === "held";
  state.muted = !!message.muted;
  $("hold").setAttribute("aria-pressed", String(state.held));
  $("hold").textContent = state.held ? "Resume (H)" : "Hold (H)";
  $("mute").setAttribute("aria-pressed", String(state.muted));
  $("mute").textContent = state.muted ? "Unmute (M)" : "Mute (M)";
  const flags = [state.held ? "on hold" : "", state.muted ? "muted" : ""].filter(Boolean).join(", ");
  text("call-flags", flags);
  $("call-flags").hidden = !flags;
  show("call", true);
  document.body.dataset.call = message.state;
}

function tickTimer() {
  const seconds = Math.floor((Date.now() - state.callStarted) / 1000);
  text("call-timer", `${String(Math.floor(seconds / 60)).padStart(2, "0")}:${String(seconds % 60).padStart(2, "0")}`);
}

function wrapUp(message) {
  state.lastCall = message.call;
  $("disposition").innerHTML = message.dispositions.map((d) => `<option>${esc(d)}</option>`).join("");
  $("notes").value = "";
  text("wrapup-saved", "");
  show("wrapup", true);
  const until = Date.now() + message.seconds * 1000;
  clearInterval(state.wrapTimer);
  state.wrapTimer = setInterval(() => {
    const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    text("wrapup-countdown", left ? `next call in ${left} s` : "");
  }, 250);
  $("disposition").focus();
  refreshCalls();
}

function speakerLabel(t) {
  if (t.role === "caller") return "Caller";
  if (t.role === "supervisor") return `Supervisor ${t.speaker} (to the assistant)`;
  return t.speaker || t.role;
}

function contextHtml(c) {
  const shown = Object.entries(c.variables || {}).filter(([k]) => !["caller", "called", "call_id", "trunk"].includes(k));
  const variables = shown.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("");
  const transcript = (c.transcript || []).map((t) => `<p><b>${esc(speakerLabel(t))}:</b> ${esc(t.text)}</p>`).join("");
  return `<dl>
      <dt>Caller</dt><dd class="caller">${esc(c.caller || "unknown")}</dd>
      <dt>Dialled</dt><dd>${esc(c.called)}</dd>
      <dt>Queue</dt><dd>${esc(c.queue)}</dd>
      <dt>Waited</dt><dd>${esc(Math.round(c.waited_s))} s</dd>
      <dt>Path</dt><dd>${esc((c.path || []).join(" → "))}</dd>
    </dl>
    <p class="summary">${esc(c.summary)}</p>
    ${variables ? `<h3>What we know</h3><dl>${variables}</dl>` : ""}
    ${transcript ? `<h3>Transcript</h3><div class="transcript">${transcript}</div>` : ""}`;
}

// --- supervisors: the wallboard, joining a call, the four modes
// The board arrives whole once, then as updates of the rows that changed; times are instants on
// the box's clock (seconds since the epoch), counted here against the box's `at`.
const KEYS = { calls: "call", queues: "queue", operators: "operator" };

function wallboard(m) {
  state.board = {};
  for (const kind of Object.keys(KEYS)) state.board[kind] = new Map(m[kind].map((row) => [row[KEYS[kind]], row]));
  boardTime(m.at);
  renderWallboard();
  if (!state.boardTimer) state.boardTimer = setInterval(renderWallboard, 1000);
}

function wallboardUpdate(m) {
  if (!state.board) return;
  for (const kind of Object.keys(KEYS)) {
    (m[`${kind}_gone`] || []).forEach((key) => state.board[kind].delete(key));
    (m[kind] || []).forEach((row) => state.board[kind].set(row[KEYS[kind]], row));
  }
  boardTime(m.at);
  renderWallboard();
}

function boardTime(at) {
  state.skew = new Date(at).getTime() / 1000 - Date.now() / 1000;  // the box's clock minus ours
}

const ago = (instant) => (instant == null ? 0 : Math.max(0, Math.round(Date.now() / 1000 + state.skew - instant)));

function renderWallboard() {
  if (!state.board) return;
  const b = state.board;
  text("wb-at", new Date(Date.now() + state.skew * 1000).toLocaleTimeString());
  $("wb-queues").innerHTML = [...b.queues.values()].map((q) => `<tr><td>${esc(q.queue)}</td><td class="waiting">${q.waiting}</td>
      <td>${esc(ago(q.waiting_since))} s</td><td>${q.available}</td><td>${q.on_call}</td><td>${q.wrap_up}</td>
      <td>${q.away}</td><td>${q.answered_today}</td><td>${q.in_service_level_today}</td><td>${q.abandoned_today}</td></tr>`).join("");
  $("wb-calls").innerHTML = [...b.calls.values()].map((c) => `<tr data-call="${esc(c.call)}"><td>${esc(c.caller)}</td><td>${esc(c.called)}</td>
      <td>${esc(c.flow)} / ${esc(c.step || "")}</td><td class="with">${esc(c.queue ? "waiting in " + c.queue : c.on_call.join(", "))}</td>
      <td>${esc(ago(c.started))} s</td><td>${c.on_hold ? "yes" : ""}</td>
      <td><button type="button" class="small join" data-call="${esc(c.call)}" data-mode="listen">Listen</button></td></tr>`).join("");
  $("wb-operators").innerHTML = [...b.operators.values()].map((o) => `<tr><td>${esc(o.operator)}</td><td>${esc(o.state)}${o.reason ? " (" + esc(o.reason) + ")" : ""}</td>
      <td>${esc(ago(o.since))} s</td><td>${esc(o.queues.join(", "))}</td></tr>`).join("");
  document.body.dataset.wallboard = String(b.calls.size);
}

$("wb-calls").addEventListener("click", (event) => {
  const button = event.target.closest("button.join");
  if (button) send({ type: "join", call: button.dataset.call, mode: button.dataset.mode });
});

function joined(m) {
  if (state.watching !== m.call) { $("sup-transcript").innerHTML = ""; show("sup-llm-summary", false); }
  state.watching = m.call;
  state.mode = m.mode;
  text("sup-call", m.call);
  text("sup-mode", m.mode.replace("_", " "));
  text("sup-on-call", `With the caller: ${m.on_call.join(", ")}`);
  text("sup-transcript-note", m.transcript_note || "");
  $("sup-context").innerHTML = contextHtml(m.context);
  if (!$("sup-transcript").children.length) (m.context.transcript || []).forEach((t) => transcriptLine(Object.assign({ call: m.call }, t)));
  $("sup-timeline").innerHTML = m.timeline.map((e) => `<li>${esc(new Date(e.at).toLocaleTimeString())} ${esc(e.kind)} ${esc(JSON.stringify(e.data))}</li>`).join("");
  ["listen", "whisper", "barge"].forEach((mode) => $(`mode-${mode}`).classList.toggle("active", m.mode === mode));
  const over = m.mode === "taken_over";
  ["mode-listen", "mode-whisper", "mode-barge", "take-over", "sup-leave"].forEach((id) => { $(id).disabled = over; });
  show("sup-hangup", over);
  show("hand-back", over && (m.taken_from || "").startsWith("persona:"));
  show("supervise", true);
  document.body.dataset.joined = m.mode;
}

function transcriptLine(m) {
  if (m.call && state.watching && m.call !== state.watching) return;
  const line = document.createElement("p");
  line.className = m.role;
  line.innerHTML = `<b>${esc(m.role === "caller" ? "Caller" : m.role === "supervisor" ? "Supervisor " + m.speaker : m.speaker || m.role)}:</b> ${esc(m.text)}`;
  $("sup-transcript").appendChild(line);
  $("sup-transcript").scrollTop = $("sup-transcript").scrollHeight;
}

["listen", "whisper", "barge"].forEach((mode) => $(`mode-${mode}`).addEventListener("click", () => send({ type: "mode", mode })));
$("take-over").addEventListener("click", () => send({ type: "take_over" }));
$("sup-leave").addEventListener("click", () => send({ type: "leave" }));
$("sup-hangup").addEventListener("click", () => send({ type: "hangup" }));
$("hand-back").addEventListener("click", () => send({ type: "hand_back" }));
$("whisper-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if ($("whisper-text").value) send({ type: "whisper_text", text: $("whisper-text").value });
  $("whisper-text").value = "";
});

// --- ringing: a two-tone burst every 2 s, made here (no audio file to fetch)
function startRinging() {
  stopRinging();
  const context = new (window.AudioContext || window.webkitAudioContext)();
  const burst = () => {
    [0, 0.25].forEach((offset) => {
      const osc = context.createOscillator(); const gain = context.createGain();
      osc.frequency.value = offset ? 480 : 440; gain.gain.value = 0.08;
      osc.connect(gain).connect(context.destination);
      osc.start(context.currentTime + offset); osc.stop(context.currentTime + offset + 0.2);
    });
  };
  burst();
  state.ring = { context, timer: setInterval(burst, 2000) };
}

function stopRinging() {
  if (!state.ring) return;
  clearInterval(state.ring.timer);
  state.ring.context.close();
  state.ring = null;
}

// --- the operator's actions
$("available").addEventListener("click", () => send({ type: "state", state: "available" }));
$("away").addEventListener("click", () => send({ type: "state", state: "away", reason: $("away-reason").value }));
$("logout").addEventListener("click", () => { send({ type: "state", state: "logged_out" }); signedOut("Signed out."); });
$("accept").addEventListener("click", () => { if (state.offer) send({ type: "accept", offer: state.offer.offer }); });
$("decline").addEventListener("click", () => { if (state.offer) { send({ type: "decline", offer: state.offer.offer }); clearOffer(); } });
$("mute").addEventListener("click", () => send({ type: "mute", muted: !state.muted }));
$("hold").addEventListener("click", () => send({ type: state.held ? "resume" : "hold" }));
$("transfer").addEventListener("click", () => send({ type: "transfer", queue: $("transfer-queue").value }));
$("hangup").addEventListener("click", () => send({ type: "hangup" }));
$("wrapup-form").addEventListener("submit", (event) => {
  event.preventDefault();
  send({ type: "wrap_up", call: state.lastCall, disposition: $("disposition").value, notes: $("notes").value });
  text("wrapup-saved", "Saved.");
});
$("refresh").addEventListener("click", refreshCalls);

document.addEventListener("keydown", (event) => {
  if (event.target.closest("input, textarea, select") || event.altKey || event.ctrlKey || event.metaKey) return;
  if (state.offer && event.key === "Enter") { event.preventDefault(); $("accept").click(); }
  else if (state.offer && event.key === "Escape") { $("decline").click(); }
  else if (state.call && event.key.toLowerCase() === "m") { $("mute").click(); }
  else if (state.call && event.key.toLowerCase() === "h") { $("hold").click(); }
  else if (state.call && event.key.toLowerCase() === "x") { $("hangup").click(); }
  else if (state.watching && state.mode !== "taken_over" && "lwbt".includes(event.key.toLowerCase())) {
    ({ l: $("mode-listen"), w: $("mode-whisper"), b: $("mode-barge"), t: $("take-over") })[event.key.toLowerCase()].click();
  }
});

// --- my recent calls and their recordings (fetched with the token; the player gets a blob)
async function refreshCalls() {
  const response = await api("/api/calls?limit=20");
  if (!response.ok) return;
  const { calls } = await response.json();
  $("recent-calls").innerHTML = calls.map((c) => `<tr>
      <td>${esc(new Date(c.started_at).toLocaleString())}</td>
      <td>${esc((c.from_uri || "").replace(/^.*sips?:([^@;>]+).*$/, "$1"))}</td>
      <td>${c.duration_s == null ? "live" : esc(Math.round(c.duration_s)) + " s"}</td>
      <td>${esc(c.end_reason || "")}</td>
      <td>${c.recording_path && c.ended_at ? `<button type="button" class="small play" data-call="${esc(c.id)}">Play</button>` : ""}</td>
    </tr>`).join("");
}

$("recent-calls").addEventListener("click", async (event) => {
  const button = event.target.closest("button.play");
  if (!button) return;
  const response = await api(`/api/calls/${button.dataset.call}/recording`, { headers: { "Content-Type": "" } });
  if (!response.ok) { text("desk-error", "That recording cannot be played."); return; }
  const player = $("player");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(await response.blob());
  player.hidden = false;
  player.play();
});

resume();
