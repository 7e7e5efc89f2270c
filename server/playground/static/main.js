// The playground page: pick a video (uploaded once, its file id reused) or a URL, ask
// with a task preset, read the answer as it streams, see its time ranges on the timeline.

import { ApiError, getJSON, getKey, setKey, streamChat, uploadFile } from "./api.js";
import { formatRange, formatTime, splitAnswer } from "./answer.js";
import { Timeline } from "./timeline.js";

const $ = (id) => document.getElementById(id);

const TASKS = {
  summary: {
    needsQuestion: false,
    hint: "Leave it empty for the authors' question, or steer the summary.",
    placeholder: "Describe the video content.",
  },
  qa: {
    needsQuestion: true,
    hint: "Anything about what is seen or heard.",
    placeholder: "What is the person holding?",
  },
  grounding: {
    needsQuestion: true,
    hint: "Describe an event: the answer is a time range, drawn on the timeline.",
    placeholder: "When is the clip fixed to the mattress?",
  },
  mcq: {
    needsQuestion: true,
    hint: "A question and its options, one per line: the answer is the option's letter.",
    placeholder: "What is shown?\nA. A recipe\nB. A bed sheet clip\nC. A car\nD. A song",
  },
  chapters: {
    needsQuestion: false,
    hint: "Leave it empty for the authors' question: the chapters are drawn on the timeline.",
    placeholder: "Localize video chapters with temporal boundaries and descriptions.",
  },
};

const state = {
  video: null, // {kind: "file", id, name, info} or {kind: "url", url}
  videoToken: 0, // the latest video choice; an older upload finishing is ignored
  objectUrl: null,
  clip: null, // [start, end] in seconds, or null for the whole video
  asking: null, // the AbortController of the answer in progress
  upload: null, // the AbortController of the upload in progress
};

// ---- messages in words -------------------------------------------------------------

function show(element, text) {
  element.textContent = text;
  element.hidden = !text;
}

function describe(error) {
  if (error instanceof ApiError) {
    return error.code && error.status ? `${error.message} (${error.code})` : error.message;
  }
  return `Something went wrong on this page: ${error?.message || error}`;
}

window.addEventListener("error", (event) => {
  show($("page-error"), `Something went wrong on this page: ${event.message}. Reload to start again.`);
});
window.addEventListener("unhandledrejection", (event) => {
  show($("page-error"), describe(event.reason));
});

// ---- the API key: asked for when a call answers 401 --------------------------------

const keyDialog = $("key-dialog");
let keyPrompt = null; // one prompt shared by the calls that need it
let keyAnswer = null;

function askForKey(message) {
  if (!keyPrompt) {
    keyPrompt = new Promise((resolve) => {
      keyAnswer = (key) => {
        keyPrompt = null;
        keyAnswer = null;
        if (keyDialog.open) keyDialog.close();
        resolve(key);
      };
    });
    $("key-input").value = "";
    keyDialog.showModal();
  }
  $("key-message").textContent = message;
  return keyPrompt;
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("key-input").value.trim();
  if (!key) {
    $("key-message").textContent = "Type the key, or Cancel.";
    $("key-input").focus();
    return;
  }
  setKey(key);
  if (keyAnswer) keyAnswer(key);
  else {
    keyDialog.close();
    connect();
  }
});
$("key-cancel").addEventListener("click", () => (keyAnswer ? keyAnswer(null) : keyDialog.close()));
keyDialog.addEventListener("cancel", (event) => {
  if (keyAnswer) {
    event.preventDefault();
    keyAnswer(null);
  }
});
$("key-forget").addEventListener("click", () => {
  setKey("");
  if (keyAnswer) keyAnswer(null);
  else keyDialog.close();
  connect();
});
$("key-button").addEventListener("click", () => {
  if (keyDialog.open) return;
  $("key-input").value = "";
  $("key-message").textContent = getKey()
    ? "This tab sends a key. Type another to replace it, or forget it."
    : "The key this tab sends to the gateway, if it wants one.";
  keyDialog.showModal();
});

// Runs an API call; on a 401 asks for a key (again: a refused key is forgotten) and
// retries, until the call passes or the prompt is cancelled.
async function withKey(call) {
  for (;;) {
    const sent = getKey();
    try {
      return await call();
    } catch (error) {
      if (!(error instanceof ApiError) || !error.needsKey) throw error;
      if (getKey() !== sent) continue; // another key came meanwhile: try that one
      setKey("");
      const why = error.message.replace(/\.$/, "");
      const key = await askForKey(
        sent
          ? `The key was refused: ${why}. Type the right key.`
          : `This gateway needs an API key: ${why}.`,
      );
      if (!key) {
        throw new ApiError(401, "No API key: this gateway needs one (the API key button, top right).");
      }
    }
  }
}

async function connect() {
  const status = $("model-status");
  status.textContent = "Connecting to the gateway…";
  status.className = "model-status";
  try {
    const models = await withKey(() => getJSON("/v1/models"));
    status.textContent = `Model: ${models.data?.[0]?.id ?? "?"}`;
    status.classList.add("ok");
  } catch (error) {
    status.textContent = `Gateway: ${describe(error)}`;
    status.classList.add("warn");
  }
}

// ---- the video: an upload or a URL, shown in the player -----------------------------

const player = $("player");
const timeline = new Timeline({
  segmentLane: $("segment-lane"),
  scrubLane: $("scrub-lane"),
  clipRange: $("clip-range"),
  playhead: $("playhead"),
  tickEnd: $("tick-end"),
  onSeek: seek,
  onClip: (clip) => setClip(clip),
});

function showPlayer(src) {
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = src && src.startsWith("blob:") ? src : null;
  player.hidden = !src;
  $("player-empty").hidden = Boolean(src);
  show($("player-note"), "");
  if (src) player.src = src;
  else player.removeAttribute("src");
  player.load();
}

function setDuration(seconds) {
  timeline.setDuration(seconds, formatTime(seconds));
}

player.addEventListener("loadedmetadata", () => {
  if (Number.isFinite(player.duration)) setDuration(player.duration);
});
player.addEventListener("timeupdate", () => timeline.setTime(player.currentTime));
player.addEventListener("seeked", () => timeline.setTime(player.currentTime));
player.addEventListener("error", () => {
  if (!player.getAttribute("src")) return;
  show(
    $("player-note"),
    "This browser cannot play this video itself (its format or codec): the model can " +
      "still answer about it, and the timeline still shows the answer's time ranges.",
  );
});

function seek(seconds) {
  if (player.getAttribute("src") && player.readyState > 0) player.currentTime = seconds;
  timeline.setTime(seconds);
}

function newVideo() {
  state.videoToken += 1;
  state.video = null;
  show($("video-error"), "");
  setClip(null);
  showSegments([]);
  setDuration(0);
  return state.videoToken;
}

function setProgress(fraction) {
  const percent = Math.round(fraction * 100);
  $("upload-progress").value = percent;
  $("upload-progress").textContent = `${percent} %`;
  $("upload-percent").textContent = `${percent} %`;
}

function megabytes(bytes) {
  return `${(bytes / 2 ** 20).toFixed(bytes < 10 * 2 ** 20 ? 1 : 0)} MB`;
}

async function useFile(file) {
  const token = newVideo();
  const input = $("file-input");
  const cancel = new AbortController();
  state.upload = cancel;
  input.disabled = true;
  $("upload").hidden = false;
  $("upload-cancel").hidden = false;
  setProgress(0);
  show($("video-status"), `Uploading ${file.name} (${megabytes(file.size)})…`);
  showPlayer(URL.createObjectURL(file));
  try {
    const uploaded = await withKey(() => {
      setProgress(0);
      return uploadFile(file, {
        signal: cancel.signal,
        onProgress: setProgress,
        onSent: () => {
          if (token === state.videoToken) {
            show($("video-status"), `Preparing ${file.name}: frames and audio…`);
          }
        },
      });
    });
    if (token !== state.videoToken) return;
    const info = uploaded.video || {};
    state.video = { kind: "file", id: uploaded.id, name: uploaded.filename, info };
    if (!timeline.duration && info.video_duration_s) setDuration(info.video_duration_s);
    const audio = info.has_audio ? "with audio" : "no audio";
    // A video over five minutes is measured at upload, not prepared: the gateway asks
    // about it in segments of five minutes (`video.segments`), and says how many.
    const seen = info.frames === null && info.segments > 1
      ? `long video: asked in ${info.segments} segments of up to 5:00`
      : `${info.frames} frames`;
    show(
      $("video-status"),
      `Ready: ${uploaded.filename}, ${formatTime(info.video_duration_s)}, ${seen}, ` +
        `${audio}. Every question reuses the uploaded file (${uploaded.id}).`,
    );
  } catch (error) {
    if (token !== state.videoToken) return;
    show($("video-status"), error.name === "AbortError" ? "Upload cancelled." : "");
    if (error.name !== "AbortError") {
      show($("video-error"), `The upload failed: ${describe(error)}`);
    }
    showPlayer(null);
    input.value = ""; // the same file may be picked again
  } finally {
    if (state.upload === cancel) {
      state.upload = null;
      input.disabled = false;
      $("upload-cancel").hidden = true;
    }
  }
}

$("upload-cancel").addEventListener("click", () => state.upload?.abort());

$("file-input").addEventListener("change", () => {
  const file = $("file-input").files[0];
  if (file) useFile(file);
});

// A file dropped anywhere is taken (the browser would otherwise leave the page for it).
const dropZone = $("drop-zone");
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("dragging");
});
document.addEventListener("dragleave", (event) => {
  if (!event.relatedTarget) dropZone.classList.remove("dragging");
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  const file = event.dataTransfer?.files?.[0];
  if (file) useFile(file);
});

$("url-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("url-input").value.trim();
  let url;
  try {
    url = new URL(text);
  } catch {
    show($("video-error"), "Paste a whole video URL, starting with https://");
    $("url-input").focus();
    return;
  }
  newVideo();
  state.video = { kind: "url", url: url.href };
  show($("video-status"), "The gateway fetches this URL when you ask about it.");
  showPlayer(url.protocol === "https:" ? url.href : null);
});

// ---- the clip ------------------------------------------------------------------------

function setClip(clip) {
  state.clip = clip;
  $("clip-start").value = clip ? String(clip[0]) : "";
  $("clip-end").value = clip ? String(clip[1]) : "";
  timeline.setClip(clip);
}

function clipFromFields() {
  const start = $("clip-start").value === "" ? null : Number($("clip-start").value);
  const end = $("clip-end").value === "" ? null : Number($("clip-end").value);
  state.clip = start === null && end === null ? null : [start ?? 0, end ?? timeline.span()];
  timeline.setClip(state.clip && state.clip[1] > state.clip[0] ? state.clip : null);
}

$("clip-start").addEventListener("input", clipFromFields);
$("clip-end").addEventListener("input", clipFromFields);
const playheadTime = () => Math.round(player.currentTime * 10) / 10;
$("clip-start-now").addEventListener("click", () => {
  $("clip-start").value = String(playheadTime());
  clipFromFields();
});
$("clip-end-now").addEventListener("click", () => {
  $("clip-end").value = String(playheadTime());
  clipFromFields();
});
$("clip-clear").addEventListener("click", () => setClip(null));

// ---- the answer's time ranges ----------------------------------------------------------

function showSegments(segments) {
  timeline.setSegments(segments);
  const list = $("segment-list");
  list.replaceChildren();
  for (const segment of segments) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "quiet time";
    button.textContent = formatRange(segment.start, segment.end);
    button.title = `Play from ${formatTime(segment.start)}`;
    button.addEventListener("click", () => seek(segment.start));
    const text = document.createElement("span");
    text.textContent = segment.text || "";
    item.append(button, text);
    list.append(item);
  }
  $("segments").hidden = segments.length === 0;
}

// ---- asking --------------------------------------------------------------------------

function currentTask() {
  return document.querySelector('input[name="task"]:checked').value;
}

function onTaskChange() {
  const task = TASKS[currentTask()];
  $("question").placeholder = task.placeholder;
  $("question-hint").textContent = task.hint;
  $("question-need").textContent = task.needsQuestion ? "(needed)" : "(optional for this task)";
}
for (const radio of document.querySelectorAll('input[name="task"]')) {
  radio.addEventListener("change", onTaskChange);
}

$("question").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    $("ask-form").requestSubmit();
  }
});

function numberField(id, { min, max, integer }) {
  const value = Number($(id).value);
  const ok = $(id).value !== "" && value >= min && value <= max && (!integer || Number.isInteger(value));
  return ok ? value : null;
}

// What to send, or a sentence saying what to fix.
function buildRequest() {
  if (!state.video) {
    return $("file-input").disabled
      ? "Wait for the upload to finish."
      : "Choose a video file or paste a URL first.";
  }
  const task = currentTask();
  const question = $("question").value.trim();
  if (TASKS[task].needsQuestion && !question) return "This task needs a question.";
  const maxTokens = numberField("max-tokens", { min: 1, max: 20000, integer: true });
  if (maxTokens === null) return "Max tokens must be a whole number from 1 to 20000.";
  const temperature = numberField("temperature", { min: 0, max: 2 });
  if (temperature === null) return "Temperature must be a number from 0 to 2.";
  const seed = $("seed").value === "" ? null : numberField("seed", { min: 0, max: 2 ** 53, integer: true });
  if ($("seed").value !== "" && seed === null) return "The seed must be a whole number, or empty.";
  const video = { task };
  if (state.clip) {
    const [start, end] = state.clip;
    if (!(end > start)) return "The clip's end must come after its start.";
    Object.assign(video, { start, end });
  }
  const url = state.video.kind === "file" ? state.video.id : state.video.url;
  const content = [{ type: "video_url", video_url: { url } }];
  if (question) content.push({ type: "text", text: question });
  return {
    messages: [{ role: "user", content }],
    video,
    max_tokens: maxTokens,
    temperature,
    ...(seed === null ? {} : { seed }),
    stream: true,
    stream_options: { include_usage: true },
  };
}

function resetAnswer() {
  show($("answer-error"), "");
  show($("answer-status"), "");
  $("answer").textContent = "";
  $("thinking").hidden = true;
  $("thinking").open = false;
  $("thinking-text").textContent = "";
  $("raw").hidden = true;
  $("raw-text").textContent = "";
  $("usage").hidden = true;
  $("segment-progress").hidden = true;
  showSegments([]);
}

function renderText(raw, { final, structured } = {}) {
  const parts = splitAnswer(raw);
  const thinking = structured?.thinking ?? parts.thinking;
  const answer = structured?.answer ?? parts.answer;
  $("thinking").hidden = thinking === null || thinking === undefined;
  $("thinking-text").textContent = thinking || "";
  $("answer").textContent = answer;
  $("raw-text").textContent = raw;
  $("raw").hidden = !raw;
  if (!final) {
    show($("answer-status"), parts.thinking !== null && !parts.thinkingDone ? "Thinking…" : "Answering…");
  }
}

function showUsage(usage, times) {
  const rows = [];
  const video = usage?.video;
  if (video) {
    rows.push(["Frames", String(video.frames)]);
    rows.push(["Audio", video.has_audio ? "yes" : "no"]);
    rows.push(["Video tokens", String(video.video_tokens)]);
    if (video.clip) rows.push(["Clip", formatRange(video.clip[0], video.clip[1])]);
    if (video.segments) rows.push(["Segments", String(video.segments.length)]);
  }
  if (usage) {
    rows.push(["Prompt tokens", String(usage.prompt_tokens)]);
    rows.push(["Answer tokens", String(usage.completion_tokens)]);
  }
  if (times.first !== null) rows.push(["First token", `${times.first.toFixed(2)} s`]);
  rows.push(["Total time", `${times.total.toFixed(2)} s`]);
  const list = $("usage");
  list.replaceChildren();
  for (const [name, value] of rows) {
    const term = document.createElement("dt");
    term.textContent = name;
    const detail = document.createElement("dd");
    detail.textContent = value;
    const pair = document.createElement("div");
    pair.append(term, detail);
    list.append(pair);
  }
  list.hidden = false;
}

// A long video's progress line (`: arc-segment {...}`) shown; true if it was one.
function showSegmentProgress(comment) {
  if (!comment.startsWith("arc-segment ")) return false;
  let info;
  try {
    info = JSON.parse(comment.slice("arc-segment ".length));
  } catch {
    return false;
  }
  const { count, done, end } = info;
  if (!(count > 0)) return false;
  $("segment-progress").hidden = false;
  $("segment-bar").max = count;
  $("segment-bar").value = done;
  $("segment-text").textContent = `${done} of ${count} segments (to ${formatTime(end)})`;
  show($("answer-status"), "Watching the long video segment by segment…");
  return true;
}

function setAsking(controller) {
  const ask = $("ask-button");
  const stop = $("stop-button");
  // Keyboard focus moves between Ask and Stop, rather than falling to the page when the
  // focused one goes away.
  const focused = document.activeElement;
  state.asking = controller;
  ask.disabled = Boolean(controller);
  stop.hidden = !controller;
  $("answer").setAttribute("aria-busy", controller ? "true" : "false");
  if (controller && focused === ask) stop.focus({ preventScroll: true });
  if (!controller && (focused === stop || focused === document.body)) {
    ask.focus({ preventScroll: true });
  }
}

async function ask(event) {
  event.preventDefault();
  if (state.asking) return;
  const request = buildRequest();
  if (typeof request === "string") {
    show($("ask-error"), request);
    return;
  }
  show($("ask-error"), "");
  resetAnswer();
  // At phone width the answer is below the fold: bring its start into view.
  const panel = $("answer-heading");
  if (panel.getBoundingClientRect().top > window.innerHeight) panel.scrollIntoView();
  const controller = new AbortController();
  setAsking(controller);
  show($("answer-status"), "Sending…");
  const started = performance.now();
  let raw = "";
  let first = null;
  let structured = null;
  let finish = null;
  let usage = null;
  let segmentsSeen = false;
  try {
    await withKey(() => {
      raw = "";
      return streamChat(request, {
        signal: controller.signal,
        onComment(comment) {
          segmentsSeen = showSegmentProgress(comment) || segmentsSeen;
        },
        onChunk(chunk) {
          const choice = chunk.choices?.find((c) => (c.index ?? 0) === 0);
          const text = choice?.delta?.content;
          if (text) {
            if (first === null) first = (performance.now() - started) / 1000;
            raw += text;
            renderText(raw);
          }
          if (choice?.structured) structured = choice.structured;
          if (choice?.finish_reason) finish = choice.finish_reason;
          if (chunk.usage) usage = chunk.usage;
        },
      });
    });
    renderText(raw, { final: true, structured });
    // In one pass the model reads its times off the frames, whose overlay counts from
    // the clip's start: a clip's ranges are moved onto the whole video's time. A long
    // video's segmented answer (usage.video.segments, or its progress lines) comes with
    // the gateway's times on the whole video already.
    const segmented = Boolean(usage?.video?.segments) || segmentsSeen;
    const offset = segmented ? 0 : (usage?.video?.clip?.[0] ?? request.video.start ?? 0);
    const segments = (structured?.segments || []).map((s) => ({
      start: s.start + offset,
      end: s.end + offset,
      text: s.text,
    }));
    showSegments(segments);
    const total = (performance.now() - started) / 1000;
    show(
      $("answer-status"),
      finish === "length"
        ? "Cut at the max tokens (Generation settings)."
        : raw
          ? ""
          : "The model gave an empty answer.",
    );
    showUsage(usage, { first, total });
  } catch (error) {
    if (error.name === "AbortError") {
      renderText(raw, { final: true });
      show($("answer-status"), "Stopped.");
    } else {
      show($("answer-status"), "");
      show($("answer-error"), describe(error));
    }
  } finally {
    setAsking(null);
  }
}

$("ask-form").addEventListener("submit", ask);
$("stop-button").addEventListener("click", () => state.asking?.abort());

onTaskChange();
connect();
