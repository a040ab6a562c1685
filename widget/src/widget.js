// The lorallama chat bubble: one <script> tag puts a chat with a lorallama Space on any page.
//
//   <script src="https://YOUR-SPACE.hf.space/lorallama/widget.js" defer></script>
//
// Optional attributes on the tag: data-title="Ask Captain Lora", data-greeting="Ahoy! Ask me anything.",
// data-system-prompt="…" (sent with every message), data-position="left", data-open="true".
// The Space serves this file (built from npm packages by `make widget`) and the chat API it talks to
// (`/chat`, through @gradio/client); the page embedding it can be on any origin.
//
// Answers are Markdown, rendered by marked and sanitised by DOMPurify (both bundled here, no CDN): model output
// never runs as HTML. Stop cancels the answer on the server and keeps what was written; an answer cut at the
// token limit gets a Continue button; the queue position and the Space's estimate of the wait are shown.
import { Client } from "@gradio/client";
import DOMPurify from "dompurify";
import { marked } from "marked";

const script = document.currentScript;
const src = script && script.src ? script.src : "";
const ROUTE = /\/lorallama\/widget\.js(?:[?#].*)?$/;
const root = src && ROUTE.test(src) ? src.replace(ROUTE, "/") : "";
const data = (script && script.dataset) || {};
const title = data.title || "Chat";
const greeting = data.greeting || "";
const systemPrompt = data.systemPrompt;
const side = data.position === "left" ? "left" : "right";
const CUT = /\n\n\*\[cut at the \d+-token limit[^\]\n]*\]\*\s*$/;
const CONTINUE = "Continue";

const STYLE = `
:host { all: initial; }
* { box-sizing: border-box; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
:focus-visible { outline: 3px solid #f59e0b; outline-offset: 2px; }
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
header .title { flex: 1; font-weight: 600; font-size: 15px; margin: 0; }
header button { background: transparent; border: none; color: #fff; font-size: 18px; cursor: pointer; }
.log { flex: 1; overflow-y: auto; padding: 12px; display: flex; flex-direction: column; gap: 8px;
  background: #f9fafb; }
.msg { max-width: 85%; padding: 8px 11px; border-radius: 12px; overflow-wrap: anywhere;
  font-size: 14px; line-height: 1.45; }
.msg.user { align-self: flex-end; background: #4f46e5; color: #fff; border-bottom-right-radius: 4px;
  white-space: pre-wrap; }
.msg.assistant { align-self: flex-start; background: #fff; border: 1px solid #e5e7eb; border-bottom-left-radius: 4px; }
.msg.error { align-self: stretch; max-width: 100%; background: #fef2f2; color: #991b1b; border: 1px solid #fecaca; }
.msg .body > :first-child { margin-top: 0; } .msg .body > :last-child { margin-bottom: 0; }
.msg pre { background: #111827; color: #f9fafb; padding: 8px; border-radius: 8px; overflow-x: auto; font-size: 12.5px; }
.msg code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
.msg :not(pre) > code { background: #eef2ff; padding: 1px 4px; border-radius: 4px; }
.msg table { border-collapse: collapse; } .msg td, .msg th { border: 1px solid #e5e7eb; padding: 2px 6px; }
.msg.pending .body::after { content: "▍"; animation: blink 1s steps(1) infinite; }
.msg .wait { color: #6b7280; font-size: 13px; }
.msg .wait:empty { display: none; }
.msg .tools { display: flex; gap: 6px; margin-top: 6px; }
.msg .tools:empty { display: none; }
.msg .tools button { border: 1px solid #d1d5db; background: #fff; color: #374151; border-radius: 6px;
  padding: 2px 8px; font-size: 12px; cursor: pointer; }
.msg .mark { display: block; color: #6b7280; font-size: 12px; font-style: italic; margin-top: 4px; }
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
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;

// Links open in a new tab without handing this page to them; nothing else in an answer may act.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

/** Model output (Markdown) as safe HTML: no scripts, event handlers, styles, forms, frames or remote images. */
export function renderMarkdown(text) {
  const html = marked.parse(text, { gfm: true, breaks: true, async: false });
  return DOMPurify.sanitize(html, {
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "img", "video", "audio", "iframe", "svg"],
    FORBID_ATTR: ["style"],
  });
}

function mount() {
  if (document.getElementById("lorallama-widget")) return; // one bubble per page
  const host = document.createElement("div");
  host.id = "lorallama-widget";
  const shadow = host.attachShadow({ mode: "open" });
  shadow.innerHTML = `<style>${STYLE}</style>
<button class="bubble" part="bubble" type="button" aria-label="Open the chat" aria-expanded="false"
  aria-controls="lorallama-panel" aria-haspopup="dialog">💬</button>
<div class="panel" id="lorallama-panel" part="panel" role="dialog" aria-modal="false" hidden>
  <header><h2 class="title"></h2>
    <button class="reset" type="button" title="New conversation" aria-label="New conversation">↺</button>
    <button class="close" type="button" title="Close" aria-label="Close the chat">×</button></header>
  <div class="log" role="log" aria-live="polite" aria-relevant="additions text"></div>
  <div class="sr status" role="status" aria-live="polite"></div>
  <form><textarea rows="1" placeholder="Type a message…" aria-label="Message"></textarea>
    <button type="submit" class="send" aria-label="Send the message">Send</button>
    <button type="button" class="stop" aria-label="Stop the answer" hidden>Stop</button></form>
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
  const status = $(".status");
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
  let stopped = false;

  function add(role, text) {
    const div = document.createElement("div");
    div.className = `msg ${role}`;
    if (role.startsWith("assistant")) {
      div.innerHTML = '<div class="wait"></div><div class="body"></div><div class="tools"></div>';
      setAnswer(div, text);
    } else {
      div.textContent = text;
    }
    if (role === "error") div.setAttribute("role", "alert");
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
    return div;
  }

  function setAnswer(div, text) {
    div.dataset.text = text;
    div.querySelector(".body").innerHTML = renderMarkdown(text.replace(CUT, ""));
  }

  function addTool(div, label, aria, action) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.setAttribute("aria-label", aria);
    button.addEventListener("click", () => action(button));
    div.querySelector(".tools").appendChild(button);
    return button;
  }

  function finish(div, mark) {
    const text = div.dataset.text || "";
    if (mark) {
      const note = document.createElement("span");
      note.className = "mark";
      note.textContent = mark;
      div.querySelector(".body").appendChild(note);
    }
    if (text.trim()) {
      addTool(div, "Copy", "Copy the answer", async (button) => {
        await copy(text.replace(CUT, ""));
        button.textContent = "Copied";
        setTimeout(() => (button.textContent = "Copy"), 1500);
      });
    }
    if (CUT.test(text)) {
      addTool(div, CONTINUE, "Continue the answer", (button) => {
        button.remove();
        send(CONTINUE);
      });
    }
  }

  async function copy(text) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (error) {
      const area = document.createElement("textarea"); // pages that do not grant the clipboard API
      area.value = text;
      shadow.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
  }

  if (greeting) add("assistant", greeting);

  function setOpen(open) {
    panel.hidden = !open;
    bubble.setAttribute("aria-expanded", String(open));
    bubble.setAttribute("aria-label", open ? "Close the chat" : "Open the chat");
    bubble.textContent = open ? "×" : "💬";
    if (open) input.focus();
    else bubble.focus();
  }
  bubble.addEventListener("click", () => setOpen(panel.hidden));
  $(".close").addEventListener("click", () => setOpen(false));
  panel.addEventListener("keydown", (event) => {
    if (event.key === "Escape") setOpen(false);
  });
  $(".reset").addEventListener("click", () => {
    if (job) stop();
    if (client) client.close();
    client = null; // a new session: the Space keeps each session's conversation
    log.replaceChildren();
    if (greeting) add("assistant", greeting);
    input.focus();
  });

  function busy(on) {
    sendButton.hidden = on;
    stopButton.hidden = !on;
    input.readOnly = on;
    input.setAttribute("aria-busy", String(on));
  }

  function stop() {
    if (!job) return;
    stopped = true;
    job.cancel(); // the server closes the generator: the model stops and the next person's answer starts
  }
  stopButton.addEventListener("click", () => {
    stop();
    input.focus();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  function waiting(answer, message) {
    // Honest about the line: position 0 still waits for the answer being written for someone else.
    const ahead = message.position;
    const eta = typeof message.eta === "number" && message.eta > 0 ? `, about ${Math.ceil(message.eta)} s` : "";
    const text =
      ahead > 0
        ? `Waiting in line: ${ahead} ahead of you and one being answered${eta}.`
        : `Waiting for the answer before yours to finish${eta}.`;
    answer.querySelector(".wait").textContent = text;
    answer.dataset.queue = String(ahead);
    status.textContent = text;
  }

  async function send(text) {
    if (!root) {
      add("error", 'This chat bubble must be loaded from its Space: src="https://…/lorallama/widget.js".');
      return false;
    }
    add("user", text);
    const answer = add("assistant pending", "");
    busy(true);
    stopped = false;
    let failed = false;
    let accepted = false;
    const accept = () => {
      if (!accepted && input.value.trim() === text) input.value = ""; // cleared once the Space took it
      accepted = true;
    };
    try {
      client = client || (await Client.connect(root, { events: ["data", "status"] }));
      const payload = { message: text };
      if (systemPrompt !== undefined) payload.system_prompt = systemPrompt;
      job = client.submit("/chat", payload);
      for await (const message of job) {
        if (stopped) break;
        if (message.type === "data") {
          const value = message.data && message.data[0];
          accept();
          if (typeof value === "string") setAnswer(answer, value);
          answer.querySelector(".wait").textContent = "";
          delete answer.dataset.queue;
          log.scrollTop = log.scrollHeight;
        } else if (message.type === "status") {
          if (message.stage === "pending" && typeof message.position === "number" && !answer.dataset.text) {
            waiting(answer, message);
          } else if (message.stage === "generating") {
            answer.querySelector(".wait").textContent = "";
            delete answer.dataset.queue;
          } else if (message.stage === "error") {
            failed = true;
            answer.remove();
            add("error", String(message.message || "The Space could not answer; try again in a moment."));
            break;
          }
        }
      }
    } catch (error) {
      if (!stopped) {
        failed = true;
        answer.remove();
        add("error", `Cannot reach the chat: ${error && error.message ? error.message : error}`);
      }
    } finally {
      job = null;
      busy(false);
      answer.classList.remove("pending");
      answer.querySelector(".wait").textContent = "";
      delete answer.dataset.queue;
      status.textContent = "";
      if (!failed) {
        if (stopped) answer.classList.add("stopped");
        finish(answer, stopped ? "(stopped)" : answer.dataset.text ? "" : "(no answer)");
      }
      input.focus();
    }
    return !failed;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || job) return;
    await send(text);
  });

  if (data.open === "true") setOpen(true);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mount);
else mount();
