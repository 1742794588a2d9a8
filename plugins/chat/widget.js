// Switchboard chat widget: include with
//   <script src="/chat/TENANT/widget.js" defer></script>
// It opens a WebSocket to /chat/TENANT/ws, keeps the visitor's token and
// the last message seen in localStorage, and re-sends anything not yet
// acknowledged after a reconnect or a retryable error.
(function () {
  "use strict";
  var script = document.currentScript;
  var base = script.src.replace(/\/widget\.js(\?.*)?$/, "");
  var tenant = decodeURIComponent(base.split("/chat/")[1] || "");
  var store = "switchboard-chat:" + tenant;
  var state = JSON.parse(localStorage.getItem(store) || "{}");
  var pending = {};          // client_id -> text, until acknowledged
  var ws = null, backoff = 500, seq = 0;

  function save() { localStorage.setItem(store, JSON.stringify(state)); }

  var box = document.createElement("div");
  box.id = "switchboard-chat";
  box.innerHTML =
    '<div class="sb-log" id="sb-log" aria-live="polite"></div>' +
    '<div class="sb-typing" id="sb-typing" hidden>Agent is typing…</div>' +
    '<form id="sb-form"><input id="sb-input" autocomplete="off" placeholder="Type a message">' +
    '<button id="sb-send" type="submit">Send</button></form>' +
    '<div class="sb-status" id="sb-status">connecting…</div>';
  (document.getElementById("switchboard-chat-here") || document.body).appendChild(box);
  var log = box.querySelector("#sb-log"), input = box.querySelector("#sb-input");
  var status = box.querySelector("#sb-status"), typing = box.querySelector("#sb-typing");

  function show(from, text, id) {
    if (id && log.querySelector('[data-id="' + id + '"]')) return;
    var p = document.createElement("p");
    p.className = "sb-msg sb-" + from;
    if (id) p.setAttribute("data-id", id);
    p.textContent = text;
    log.appendChild(p);
    log.scrollTop = log.scrollHeight;
  }

  function sendPending() {
    if (!ws || ws.readyState !== 1) return;
    Object.keys(pending).forEach(function (cid) {
      ws.send(JSON.stringify({ type: "message", client_id: cid, text: pending[cid] }));
    });
  }

  function connect() {
    var url = base.replace(/^http/, "ws") + "/ws?since=" + (state.last || 0) +
      (state.token ? "&token=" + encodeURIComponent(state.token) : "");
    ws = new WebSocket(url);
    ws.onopen = function () { backoff = 500; status.textContent = "connected"; };
    ws.onmessage = function (ev) {
      var m = JSON.parse(ev.data);
      if (m.type === "welcome") {
        state.token = m.token; state.visitor = m.visitor; save();
        sendPending();
      } else if (m.type === "ack") {
        var el = log.querySelector('[data-client="' + m.client_id + '"]');
        if (el) el.classList.add("sb-acked");
        delete pending[m.client_id];
      } else if (m.type === "error") {
        if (m.retry) setTimeout(sendPending, 2000);
        else delete pending[m.client_id];
      } else if (m.type === "message") {
        if (m.from === "agent") show("agent", m.text, m.id);
        if (m.id > (state.last || 0)) { state.last = m.id; save(); }
        typing.hidden = true;
      } else if (m.type === "typing") {
        typing.hidden = false;
        setTimeout(function () { typing.hidden = true; }, 4000);
      }
    };
    ws.onclose = function () {
      status.textContent = "reconnecting…";
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 15000);
    };
  }

  box.querySelector("#sb-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    var cid = Date.now().toString(36) + "-" + (seq++);
    pending[cid] = text;
    var p = document.createElement("p");
    p.className = "sb-msg sb-visitor";
    p.setAttribute("data-client", cid);
    p.textContent = text;
    log.appendChild(p);
    input.value = "";
    sendPending();
  });
  input.addEventListener("input", function () {
    if (ws && ws.readyState === 1) ws.send('{"type":"typing"}');
  });
  connect();
})();
