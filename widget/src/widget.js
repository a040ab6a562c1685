// The lorallama chat bubble: one <script> tag puts a chat with a lorallama Space on any page.
//
//   <script src="https://YOUR-SPACE.hf.space/lorallama/widget.js" defer></script>
//
// Optional attributes on the tag: data-title="Ask Captain Lora", data-greeting="Ahoy! Ask me anything.",
// data-system-prompt="…" (sent with every message), data-position="left", data-open="true".
// The Space serves this file (built from npm packages by `make widget`) and the chat API it talks to
// (`/chat`, through @gradio/client); the page embedding it can be on any origin.
import { Client } from "@gradio/client";

const script = document.currentScript;
const src = script && script.src ? script.src : "";
const ROUTE = /\/lorallama\/widget\.js(?:[?#].*)?$/;
const root = src && ROUTE.test(src) ? src.replace(ROUTE, "/") : "";
const data = (script && script.dataset) || {};
const title = data.title || "Chat";
const greeting = data.greeting || "";
const systemPrompt = data.systemPrompt;
const side = data.position === "left" ? "left" : "right";

const STYLE = `
:host { all: initial; }
* { box-sizing: border-box; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
.bubble { position: fixed; bottom: 20px; ${side}: 20px; width: 56px; height: 56px; border-radius: 50%;
  border: none; background: #4f46e5; color: #fff; font-size: 26px; cursor: pointer;
  box-shadow: 0 4px 14px rgba(0,0,0,.25); z-index: 2147483000; }
.bubble:hover { background: #4338ca; }
.panel { position: fixed; bottom: 88px; ${side}: 20px; width: min(380px, calc(100vw - 40px));
  height: min(520px, calc(100vh - 120px)); display: flex; flex-direction: column; background: #fff;
  color: #111827; border-radius: 14px; box-shadow: 0 12px 32px rgba(0,0,0,.28); overflow: hidden;
  z-index: 2147483000; }
.panel[hidden] { display: none; }
header { display: flex; align-items: center; gap: 8px; padding: 10px 12px; background: #4f46e5; color: #fff; }
header .title { flex: 1; font-weight: 600; font-size: 15px; }
header button { background: transparent; border: none; color: #fff; font-size: 18px; cursor: pointer; }
.log { flex: 1; overflow-y: auto; padding: 12px; display: flex; flex-direction: column; gap: 8px;
  background: #f9fafb; }
.msg { max-width: 85%; padding: 8px 11px; border-radius: 12px; white-space: pre-wrap; overflow-wrap: anywhere;
  font-size: 14px; line-height: 1.4; }
.msg.user { align-self: flex-end; background: #4f46e5; color: #fff; border-bottom-right-radius: 4px; }
.msg.assistant { align-self: flex-start; background: #fff; border: 1px solid #e5e7eb; border-bottom-left-radius: 4px; }
.msg.error { align-self: stretch; max-width: 100%; background: #fef2f2; color: #991b1b; border: 1px solid #fecaca; }
.msg.pending::after { content: "▍"; animation: blink 1s steps(1) infinite; }
.msg.pending[data-queue]::before { content: "waiting in line, " attr(data-queue) " ahead "; color: #6b7280; }
@keyframes blink { 50% { opacity: 0; } }
form { display: flex; gap: 6px; padding: 10px; border-top: 1px solid #e5e7eb; background: #fff; }
textarea { flex: 1; resize: none; border: 1px solid #d1d5db; border-radius: 10px; padding: 8px 10px;
  font-size: 14px; max-height: 120px; color: #111827; background: #fff; }
form button { border: none; border-radius: 10px; padding: 0 14px; font-size: 14px; cursor: pointer;
  background: #4f46e5; color: #fff; }
form button.stop { background: #dc2626; }
form button[hidden] { display: none; }
form button:disabled { opacity: .5; cursor: default; }
.footer { font-size: 11px; color: #6b7280; text-align: center; padding: 0 0 6px; background: #fff; }
.footer a { color: inherit; }
`;

function mount() {
  if (document.getElementById("lorallama-widget")) return; // one bubble per page
  const host = document.createElement("div");
  host.id = "lorallama-widget";
  const shadow = host.attachShadow({ mode: "open" });
  shadow.innerHTML = `<style>${STYLE}</style>
<button class="bubble" part="bubble" aria-label="Open the chat" aria-expanded="false">💬</button>
<div class="panel" part="panel" role="dialog" hidden>
  <header><span class="title"></span>
    <button class="reset" type="button" title="New conversation" aria-label="New conversation">↺</button>
    <button class="close" type="button" title="Close" aria-label="Close the chat">×</button></header>
  <div class="log" aria-live="polite"></div>
  <form><textarea rows="1" placeholder="Type a message…" aria-label="Message"></textarea>
    <button type="submit" class="send">Send</button><button type="button" class="stop" hidden>Stop</button></form>
  <div class="footer"></div>
</div>`;
  document.body.appendChild(host);

  const $ = (selector) => shadow.querySelector(selector);
  const bubble = $(".bubble");
  const panel = $(".panel");
  const log = $(".log");
  const form = $("form");
  const input = $("textarea");
  const sendButton = $(".send");
  const stopButton = $(".stop");
  $(".title").textContent = title;
  panel.setAttribute("aria-label", title);
  const link = document.createElement("a");
  link.href = root || "#";
  link.target = "_blank";
  link.rel = "noopener";
  link.textContent = "lorallama Space";
  $(".footer").append("answers from a ", link);

  let client = null;
  let job = null;

  function add(role, text) {
    const div = document.createElement("div");
    div.className = `msg ${role}`;
    div.textContent = text;
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
    return div;
  }
  if (greeting) add("assistant", greeting);

  function setOpen(open) {
    panel.hidden = !open;
    bubble.setAttribute("aria-expanded", String(open));
    bubble.textContent = open ? "×" : "💬";
    if (open) input.focus();
  }
  bubble.addEventListener("click", () => setOpen(panel.hidden));
  $(".close").addEventListener("click", () => setOpen(false));
  $(".reset").addEventListener("click", () => {
    if (job) job.cancel();
    if (client) client.close();
    client = null; // a new session: the Space keeps each session's conversation
    log.replaceChildren();
    if (greeting) add("assistant", greeting);
  });

  function busy(on) {
    sendButton.hidden = on;
    stopButton.hidden = !on;
    input.disabled = on;
  }
  stopButton.addEventListener("click", () => job && job.cancel());
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || job) return;
    if (!root) {
      add("error", "This chat bubble must be loaded from its Space: src=\"https://…/lorallama/widget.js\".");
      return;
    }
    input.value = "";
    add("user", text);
    const answer = add("assistant pending", "");
    busy(true);
    let failed = false;
    try {
      client = client || (await Client.connect(root, { events: ["data", "status"] }));
      const payload = { message: text };
      if (systemPrompt !== undefined) payload.system_prompt = systemPrompt;
      job = client.submit("/chat", payload);
      for await (const message of job) {
        if (message.type === "data") {
          const value = message.data && message.data[0];
          if (typeof value === "string") answer.textContent = value;
          delete answer.dataset.queue;
          log.scrollTop = log.scrollHeight;
        } else if (message.type === "status") {
          if (message.stage === "pending" && typeof message.position === "number" && !answer.textContent) {
            answer.dataset.queue = String(message.position); // shown by the stylesheet until the answer starts
          } else if (message.stage === "error") {
            failed = true;
            answer.remove();
            add("error", String(message.message || "The Space could not answer; try again in a moment."));
            break;
          }
        }
      }
    } catch (error) {
      failed = true;
      answer.remove();
      add("error", `Cannot reach the chat: ${error && error.message ? error.message : error}`);
    } finally {
      job = null;
      busy(false);
      answer.classList.remove("pending");
      delete answer.dataset.queue;
      if (!failed && !answer.textContent) answer.textContent = "(stopped)";
      input.focus();
    }
  });

  if (data.open === "true") setOpen(true);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mount);
else mount();
