// The gateway's API as the page uses it: the API key, JSON calls, the upload (with its
// progress) and the streamed chat (server-sent events read from a fetch body, since
// EventSource cannot POST and would hide the `: arc-segment` comment lines).

const KEY_ITEM = "arc-api-key";

// The key lives in this tab's sessionStorage only: never localStorage, never a URL.
export function getKey() {
  try {
    return sessionStorage.getItem(KEY_ITEM) || "";
  } catch {
    return "";
  }
}

export function setKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_ITEM, key);
    else sessionStorage.removeItem(KEY_ITEM);
  } catch {
    // Storage refused (a privacy mode): the key is asked for again next time.
  }
}

// An error answer of the gateway ({"error": {"message", "type", "param", "code"}}), or a
// failure to reach it (status 0).
export class ApiError extends Error {
  constructor(status, message, code = null, param = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.param = param;
  }

  get needsKey() {
    return this.status === 401;
  }
}

function authHeaders(headers = {}) {
  const key = getKey();
  return key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
}

// The gateway's error body in words; a body that is not one (a proxy's HTML page) gives
// the HTTP status line.
export function errorFromBody(status, statusText, text, retryAfter = null) {
  let message = `The gateway answered ${status}${statusText ? " " + statusText : ""}.`;
  let code = null;
  let param = null;
  try {
    const error = JSON.parse(text).error;
    if (error && typeof error.message === "string") {
      message = error.message;
      code = error.code ?? null;
      param = error.param ?? null;
    }
  } catch {
    // not JSON: keep the status line
  }
  if (retryAfter) message += ` (try again in ${retryAfter} s)`;
  return new ApiError(status, message, code, param);
}

const UNREACHABLE =
  "Could not reach the gateway: is arc-gateway still running, and is this page served by it?";

async function call(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, UNREACHABLE, "network_error");
  }
  if (!response.ok) {
    const text = await response.text().catch(() => "");
    throw errorFromBody(
      response.status,
      response.statusText,
      text,
      response.headers.get("Retry-After"),
    );
  }
  return response;
}

export async function getJSON(path) {
  return (await call(path)).json();
}

// POST /v1/files with the upload's progress: fetch has no upload progress, XHR does.
// onProgress(fraction) as bytes leave; onSent() once all are sent (the gateway then
// decodes the video before it answers); `signal` cancels it.
export function uploadFile(file, { onProgress, onSent, signal }) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    if (signal?.aborted) {
      reject(new DOMException("upload aborted", "AbortError"));
      return;
    }
    signal?.addEventListener("abort", () => xhr.abort());
    xhr.open("POST", "/v1/files");
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable && event.total > 0) onProgress(event.loaded / event.total);
    });
    xhr.upload.addEventListener("load", () => {
      onProgress(1);
      onSent();
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch {
          reject(new ApiError(xhr.status, "The gateway's answer to the upload is not JSON."));
        }
      } else {
        reject(
          errorFromBody(
            xhr.status,
            xhr.statusText,
            xhr.responseText,
            xhr.getResponseHeader("Retry-After"),
          ),
        );
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, UNREACHABLE, "network_error")));
    xhr.addEventListener("abort", () => reject(new DOMException("upload aborted", "AbortError")));
    const form = new FormData();
    form.append("purpose", "user_data");
    form.append("file", file, file.name || "video");
    xhr.send(form);
  });
}

// Server-sent events: `data:` lines joined until a blank line make one event; a line
// starting with ":" is a comment, handed over at once (the gateway's `: arc-segment`).
export class SSEParser {
  constructor({ onData, onComment }) {
    this.onData = onData;
    this.onComment = onComment;
    this.buffer = "";
    this.data = [];
  }

  push(text) {
    this.buffer += text;
    let newline;
    while ((newline = this.buffer.search(/\r\n|\r|\n/)) !== -1) {
      const line = this.buffer.slice(0, newline);
      const width = this.buffer.startsWith("\r\n", newline) ? 2 : 1;
      this.buffer = this.buffer.slice(newline + width);
      this.line(line);
    }
  }

  end() {
    if (this.buffer) this.line(this.buffer);
    this.buffer = "";
    this.line("");
  }

  line(line) {
    if (line === "") {
      if (this.data.length) {
        const data = this.data.join("\n");
        this.data = [];
        this.onData(data);
      }
    } else if (line.startsWith(":")) {
      this.onComment(line.slice(1).trimStart());
    } else if (line.startsWith("data:")) {
      this.data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
    }
    // event:, id:, retry: are not used by the gateway
  }
}

// POST /v1/chat/completions with stream: true. onChunk(chunk) per JSON chunk;
// onComment(text) per comment line. An error chunk in the stream throws an ApiError.
export async function streamChat(body, { onChunk, onComment, signal }) {
  const response = await call("/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify(body),
    signal,
  });
  let finished = false;
  const parser = new SSEParser({
    onData(data) {
      if (data === "[DONE]") {
        finished = true;
        return;
      }
      let chunk;
      try {
        chunk = JSON.parse(data);
      } catch {
        return; // not ours to show
      }
      if (chunk && chunk.error) {
        throw new ApiError(502, chunk.error.message || "The answer failed.", chunk.error.code);
      }
      onChunk(chunk);
    },
    onComment,
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      let step;
      try {
        step = await reader.read();
      } catch (error) {
        if (error.name === "AbortError") throw error;
        throw new ApiError(0, "The connection to the gateway broke during the answer.");
      }
      if (step.done) break;
      parser.push(step.value);
    }
    parser.end();
  } finally {
    reader.cancel().catch(() => {});
  }
  if (!finished) throw new ApiError(0, "The answer stopped before it was complete.");
}
