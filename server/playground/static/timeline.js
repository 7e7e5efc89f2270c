// The timeline under the player: the answer's time ranges (chapters, grounding) as bars
// that seek the video when clicked, and a lane to click (seek) or drag (choose a clip)
// with the playhead. Mouse and touch only: keyboard users have the same actions in the
// range list and the clip fields, so both lanes are hidden from assistive technology.

import { formatRange } from "./answer.js";

const DRAG_PX = 4; // a press that moves less is a click

export class Timeline {
  constructor({ segmentLane, scrubLane, clipRange, playhead, tickEnd, onSeek, onClip }) {
    this.segmentLane = segmentLane;
    this.scrubLane = scrubLane;
    this.clipRange = clipRange;
    this.playhead = playhead;
    this.tickEnd = tickEnd;
    this.onSeek = onSeek;
    this.onClip = onClip;
    this.duration = 0;
    this.segments = [];
    this.clip = null;
    this.drag = null;
    scrubLane.addEventListener("pointerdown", (event) => this.press(event));
    scrubLane.addEventListener("pointermove", (event) => this.move(event));
    scrubLane.addEventListener("pointerup", (event) => this.release(event));
    scrubLane.addEventListener("pointercancel", () => this.cancel());
  }

  setDuration(seconds, label) {
    this.duration = Number.isFinite(seconds) && seconds > 0 ? seconds : 0;
    this.tickEnd.textContent = this.duration ? label : "";
    this.draw();
  }

  setSegments(segments) {
    this.segments = segments;
    this.draw();
  }

  setClip(clip) {
    this.clip = clip;
    this.drawClip(clip);
  }

  setTime(seconds) {
    const span = this.span();
    this.playhead.hidden = !span;
    if (span) this.playhead.style.left = `${(100 * Math.min(seconds, span)) / span}%`;
  }

  // The timeline's length: the video's, or the answer's last range while it is unknown
  // (a URL the browser cannot play).
  span() {
    return this.duration || Math.max(0, ...this.segments.map((s) => s.end));
  }

  draw() {
    const span = this.span();
    this.segmentLane.replaceChildren();
    this.segments.forEach((segment, k) => {
      const bar = document.createElement("div");
      bar.className = `segment tone-${k % 4}`;
      const start = Math.min(segment.start, span);
      const end = Math.min(Math.max(segment.end, start), span);
      bar.style.left = `${(100 * start) / span}%`;
      bar.style.width = `max(4px, ${(100 * (end - start)) / span}%)`;
      bar.title = `${formatRange(segment.start, segment.end)} ${segment.text || ""}`.trim();
      bar.dataset.start = String(segment.start);
      bar.addEventListener("click", () => this.onSeek(segment.start));
      this.segmentLane.append(bar);
    });
    this.drawClip(this.clip);
    this.setTime(0);
  }

  drawClip(clip) {
    const span = this.span();
    this.clipRange.hidden = !(clip && span);
    if (clip && span) {
      const start = Math.min(clip[0], span);
      const end = Math.min(clip[1], span);
      this.clipRange.style.left = `${(100 * start) / span}%`;
      this.clipRange.style.width = `${(100 * (end - start)) / span}%`;
    }
  }

  timeAt(clientX) {
    const box = this.scrubLane.getBoundingClientRect();
    const fraction = Math.min(1, Math.max(0, (clientX - box.left) / box.width));
    return Math.round(fraction * this.span() * 10) / 10;
  }

  press(event) {
    if (!this.span() || event.button !== 0) return;
    this.drag = { x: event.clientX, start: this.timeAt(event.clientX), moved: false };
    this.scrubLane.setPointerCapture(event.pointerId);
  }

  move(event) {
    if (!this.drag) return;
    if (Math.abs(event.clientX - this.drag.x) >= DRAG_PX) this.drag.moved = true;
    if (this.drag.moved) this.drawClip(this.dragged(this.drag, event));
  }

  release(event) {
    const drag = this.drag;
    if (!drag) return;
    this.drag = null;
    if (!drag.moved) {
      this.onSeek(drag.start);
      return;
    }
    const clip = this.dragged(drag, event);
    if (clip[1] > clip[0]) this.onClip(clip);
    else this.drawClip(this.clip);
  }

  cancel() {
    this.drag = null;
    this.drawClip(this.clip);
  }

  dragged(drag, event) {
    const here = this.timeAt(event.clientX);
    return [Math.min(drag.start, here), Math.max(drag.start, here)];
  }
}
