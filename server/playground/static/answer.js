// The model's text as it streams: `<think>…</think><answer>…</answer>` split into the
// thinking (folded away on the page) and the answer, as the gateway's `structured` field
// does once the answer is complete (server/answers.py).

const TAGS = ["<think>", "</think>", "<answer>", "</answer>"];

// A tag cut in half at the end of the text so far ("…<ans") is not shown.
function withoutPartialTag(text) {
  const open = text.lastIndexOf("<");
  if (open === -1) return text;
  const tail = text.slice(open);
  return TAGS.some((tag) => tag.length > tail.length && tag.startsWith(tail))
    ? text.slice(0, open)
    : text;
}

// {thinking: string|null, answer: string, thinkingDone: bool}
export function splitAnswer(raw) {
  const text = withoutPartialTag(raw);
  let thinking = null;
  let thinkingDone = true;
  let rest = text;
  const thinkAt = text.indexOf("<think>");
  if (thinkAt !== -1) {
    const end = text.indexOf("</think>", thinkAt);
    thinkingDone = end !== -1;
    thinking = text.slice(thinkAt + 7, thinkingDone ? end : undefined).trim();
    rest = thinkingDone ? text.slice(end + 8) : "";
  }
  const answerAt = rest.indexOf("<answer>");
  if (answerAt !== -1) {
    const end = rest.indexOf("</answer>", answerAt);
    rest = rest.slice(answerAt + 8, end === -1 ? undefined : end);
  } else if (thinkAt !== -1) {
    rest = rest.replace("</answer>", "");
  }
  return { thinking, answer: rest.trim(), thinkingDone };
}

// 75.5 -> "1:15.5", 3725 -> "1:02:05"
export function formatTime(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "–";
  const tenths = Math.round(seconds * 10) / 10;
  const whole = Math.floor(tenths);
  const fraction = tenths - whole >= 0.05 ? `.${Math.round((tenths - whole) * 10)}` : "";
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const s = String(whole % 60).padStart(2, "0") + fraction;
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

export function formatRange(start, end) {
  return `${formatTime(start)} – ${formatTime(end)}`;
}
