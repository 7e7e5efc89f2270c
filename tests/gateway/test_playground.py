"""The playground page (server/playground/) driven in a real browser: Debian's Chromium
through Playwright, against real gateways on loopback.

- the real engine (the session's tiny model): a shared clip uploaded with the progress bar
  reaching 100 %, played by the browser, asked about with two presets, the answer's text
  seen growing before the answer is complete;
- a stand-in engine (a known chapters answer, streamed slowly, behind a real gateway that
  decodes the real clip): the chapters drawn on the timeline, a click on one moves the
  player's `currentTime`, a clip chosen by dragging on the timeline, keyboard operation,
  a phone-width viewport, a bad file and a bad URL giving the gateway's message;
- API keys and a long video: a real gateway started with keys (made and revoked by the
  real `arc-gateway keys` command) in front of the stand-in engine of the long-video tests
  (tests/stand_in_engine.py): the key prompt at the first 401, again for a wrong key and
  for a revoked one; a synthetic 5:20 video uploaded (asked in two segments, said so),
  asked about with a clip: the segments' progress, and chapters drawn at the whole
  video's times.

Skips, saying why, when Playwright or Chromium is absent (scripts/setup.sh installs both).
`ARC_PLAYGROUND_SCREENSHOTS=docs/images` writes the README's screenshots.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import FakeUpstream, video_question
from media_factory import card_colours, make_clip, make_long_video
from servers import (
    create_key,
    free_port,
    gateway_on_stand_in,
    keys_command,
    running_gateway,
    start_gateway,
    stop,
)
from stand_in_engine import EngineState, stand_in_engine

from server.playground.routes import STATIC

CHROMIUM = Path(os.environ.get("ARC_CHROMIUM", "/usr/bin/chromium"))
CLIP = "w33698kgs05.mp4"  # 7.5 s, H.264 High + HE-AAC in mp4, 8 frames for the model
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# The stand-in engine's chapters answer for the 7.5 s clip (times as the model writes them).
CHAPTERS = [(0.0, 2.0, "A purple plastic clip is shown"),
            (2.0, 5.0, "The clip holds the sheet's corner to the mattress"),
            (5.0, 7.5, "The finished bed, the sheet held flat")]  # fmt: skip
THINKING = "The video shows a bed sheet clip, then how it is fixed, then the made bed."


def clock(seconds: float) -> str:
    """A time as the model writes it (the frames' overlay: H:MM:SS)."""
    return f"0:00:{seconds:04.1f}" if seconds % 1 else f"0:00:{int(seconds):02d}"


def page_time(seconds: float) -> str:
    """A time as the page shows it (answer.js formatTime): M:SS, tenths when not whole."""
    tenths = round(seconds * 10)
    whole, tenth = divmod(tenths, 10)
    return f"{whole // 60}:{whole % 60:02d}" + (f".{tenth}" if tenth else "")


CHAPTERS_TEXT = "\n".join(f"{clock(s)}-{clock(e)} {text}" for s, e, text in CHAPTERS)
ANSWERS = {
    "chapters": f"<think>{THINKING}</think><answer>{CHAPTERS_TEXT}</answer>",
    "grounding": "<think>The clip is pressed on at about one second.</think>"
    "<answer>0:00:01-0:00:02</answer>",
}
DEFAULT_ANSWER = "<think>Looking at the frames.</think><answer>A bed sheet clip.</answer>"


def answer_for(task: str) -> str:
    return ANSWERS.get(task, DEFAULT_ANSWER)


# ------------------------------------------------------------------------------ browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed (scripts/setup.sh installs it)")
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (scripts/setup.sh installs Debian's chromium)")
    with sync_playwright() as playwright:
        # Playwright's own browser download cannot run here: Debian's Chromium instead.
        # --no-sandbox: CI runs as root. The autoplay flag lets the test start playback
        # without a click (a person clicks the player's play button).
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-dev-shm-usage",
                  "--autoplay-policy=no-user-gesture-required"],
        )  # fmt: skip
        yield browser
        browser.close()


class Page:
    """A fresh browser tab on the playground, with the page's errors collected: a script
    error or a Content-Security-Policy violation fails the test."""

    def __init__(self, browser: Any, base: str, viewport: dict[str, int] = DESKTOP):
        self.context = browser.new_context(viewport=viewport)
        self.tab = self.context.new_page()
        self.tab.set_default_timeout(30_000)
        self.problems: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.tab.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        self.tab.on("console", self._console)
        self.tab.on("request", self._request)
        self.tab.goto(base + "/")

    def _console(self, message: Any) -> None:
        # A 4xx/5xx answer is logged as "Failed to load resource": those are the tests'.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.problems.append(f"console: {message.text}")

    def _request(self, request: Any) -> None:
        if "/v1/" in request.url:
            body = request.post_data if request.method == "POST" else None
            self.requests.append({"url": request.url, "headers": request.headers, "body": body})

    def chats(self) -> list[dict[str, Any]]:
        return [
            json.loads(r["body"]) for r in self.requests if r["url"].endswith("/chat/completions")
        ]

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.tab.evaluate(expression, arg)

    def text(self, selector: str) -> str:
        return self.tab.locator(selector).text_content() or ""

    def wait(self, expression: str, arg: Any = None, timeout: float = 30_000) -> None:
        self.tab.wait_for_function(expression, arg=arg, timeout=timeout)

    def wait_for(self, condition: Any, what: str, seconds: float = 30) -> None:
        """Waits for a condition on the test's side, letting the page's events come in."""
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, f"no {what} in {seconds:g} s"
            self.tab.wait_for_timeout(50)

    def upload(self, path: Path) -> None:
        self.tab.set_input_files("#file-input", str(path))
        self.wait(
            "() => /^Ready:/.test(document.getElementById('video-status').textContent)"
            " || !document.getElementById('video-error').hidden"
        )

    def ask(self, task: str, question: str = "", **settings: float) -> None:
        """Asks with a preset and a question; `settings` fills the generation settings
        (max_tokens=24 fills #max-tokens)."""
        self.tab.check(f"input[name=task][value={task}]")
        self.tab.fill("#question", question)
        if settings:
            self.tab.locator(".settings summary").click()
            for name, value in settings.items():
                self.tab.fill("#" + name.replace("_", "-"), str(value))
            self.tab.locator(".settings summary").click()
        self.count_answers()
        self.tab.click("#ask-button")
        self.wait_answer()

    def count_answers(self) -> None:
        """Counts the answers that end from now on (`aria-busy` back to false), for
        `wait_answer`: an error can come back faster than a poll would see it start."""
        self.js(
            """() => {
              const answer = document.getElementById('answer');
              window.answersEnded = 0;
              new MutationObserver(() => {
                if (answer.getAttribute('aria-busy') === 'false') window.answersEnded += 1;
              }).observe(answer, {attributes: true, attributeFilter: ['aria-busy']});
            }"""
        )

    def wait_answer(self) -> None:
        self.wait("() => window.answersEnded > 0", timeout=120_000)

    def record_text(self, selector: str) -> None:
        """Records the element's text length at each DOM change, with whether the answer
        was still in progress (`aria-busy`)."""
        self.js(
            """(selector) => {
              const target = document.querySelector(selector);
              const answer = document.getElementById('answer');
              window.textTrace = [];
              // One entry per change (several may come in one callback): the text it
              // put in, the element's length then, and whether the answer was going on.
              new MutationObserver((records) => {
                for (const record of records) window.textTrace.push({
                  text: [...record.addedNodes].map((n) => n.textContent).join(''),
                  length: target.textContent.length,
                  busy: answer.getAttribute('aria-busy') === 'true'});
              }).observe(target, {childList: true, characterData: true, subtree: true});
            }""",
            selector,
        )

    def close(self) -> None:
        self.context.close()
        assert not self.problems, self.problems


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    pages: list[Page] = []

    def opener(base: str, viewport: dict[str, int] = DESKTOP) -> Page:
        pages.append(Page(browser, base, viewport))
        return pages[-1]

    yield opener
    for page in pages:
        page.close()


def screenshot(page: Page, name: str, folder: Path) -> None:
    """A PNG of the page, made small (256 colours) for the README."""
    from PIL import Image

    target = Path(os.environ.get("ARC_PLAYGROUND_SCREENSHOTS") or folder) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    page.tab.screenshot(path=str(target), full_page=True)
    with Image.open(target) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(target, optimize=True)


def horizontal_overflow(page: Page) -> int:
    return page.js("() => document.documentElement.scrollWidth - window.innerWidth")


# ------------------------------------------------------------------------------ gateways


@pytest.fixture(scope="module")
def real_gateway(
    engine: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("playground-real")
    with running_gateway(engine[0], folder, ["--decode-workers", "1"]) as base:
        yield base


class _StandInEngine(FakeUpstream):
    """vLLM's stream of a known answer, a few characters every 40 ms; for the question
    "fail midway", the error event vLLM sends when its engine fails during an answer."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = answer_for((body.get("chat_template_kwargs") or {}).get("task", "qa"))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        pieces = [text[k : k + 12] for k in range(0, len(text), 12)]
        self._event(self._chunk({"role": "assistant", "content": ""}))
        if "fail midway" in json.dumps(body["messages"]):
            self._event(self._chunk({"content": "<think>Looking"}))
            self._event({"error": {"message": "EngineDeadError: engine core died"}})
            return
        for piece in pieces:
            time.sleep(0.04)
            self._event(self._chunk({"content": piece}))
        self._event(self._chunk({}, finish="stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 930, "completion_tokens": len(pieces)}
            self._event({**self._chunk({}), "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")

    @staticmethod
    def _chunk(delta: dict, finish: str | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {"id": "s", "object": "chat.completion.chunk", "created": 0, "model": "fake",
                "choices": [choice]}  # fmt: skip

    def _event(self, payload: dict) -> None:
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.flush()


@pytest.fixture(scope="module")
def stand_in_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real gateway (uploads decoded for real) in front of the stand-in engine."""
    folder = tmp_path_factory.mktemp("playground-stand-in")
    extra = ["--decode-workers", "1", "--served-model-name", "stand-in"]
    with gateway_on_stand_in(_StandInEngine, folder, extra) as base:
        yield base


@pytest.fixture
def clip(media_dir: Path) -> Path:
    return media_dir / CLIP


# ------------------------------------------------------------------------------ the page


def test_page_is_served_with_a_strict_policy(stand_in_gateway: str) -> None:
    root = httpx.get(stand_in_gateway + "/")
    assert root.status_code == 307 and root.headers["location"] == "/playground/"
    page = httpx.get(stand_in_gateway + "/playground/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy and "connect-src 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    # Revalidated (a 304 by its ETag), never served stale after an upgrade.
    assert page.headers["cache-control"] == "no-cache"
    again = httpx.get(
        stand_in_gateway + "/playground/", headers={"If-None-Match": page.headers["etag"]}
    )
    assert again.status_code == 304 and not again.content
    # Each file with its type; no inline script, style or handler anywhere in the markup;
    # nothing loaded from another origin.
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for path in STATIC.iterdir():
        served = httpx.get(f"{stand_in_gateway}/playground/{path.name}")
        assert served.status_code == 200, path.name
        assert served.headers["content-type"].startswith(types.get(path.suffix, "text/html"))
        assert not re.search(r"""(src|href)=["']?(https?:)?//|url\(|@import""", served.text)
        assert not re.search(r"""\bfrom\s+["'](?!\./)""", served.text), path.name
    html = page.text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html), "inline style or handler"
    # Only the folder's own files, by name.
    for name in ("nope.js", "..%2Froutes.py", "%2E%2E/routes.py"):
        missing = httpx.get(f"{stand_in_gateway}/playground/{name}")
        assert missing.status_code == 404, name
        assert missing.json()["error"]["code"] == "not_found"


def test_upload_and_two_presets_against_the_real_engine(
    open_page: Any, real_gateway: str, clip: Path
) -> None:
    page = open_page(real_gateway)
    page.wait("() => /^Model: arc-tiny$/.test(document.getElementById('model-status').textContent)")
    page.js(
        """() => {
          const bar = document.getElementById('upload-progress');
          window.progressSeen = [];
          new MutationObserver(() => window.progressSeen.push(Number(bar.value)))
            .observe(bar, {attributes: true, attributeFilter: ['value']});
        }"""
    )
    page.upload(clip)
    status = page.text("#video-status")
    assert re.match(r"Ready: w33698kgs05\.mp4, 0:07\.5, 8 frames, with audio\.", status), status
    seen = page.js("window.progressSeen")
    assert seen and seen[-1] == 100 and seen == sorted(seen), seen
    assert page.text("#upload-percent") == "100 %"
    file_id = re.search(r"\((file-[^)]+)\)", status).group(1)

    # The browser plays the clip itself (Debian's Chromium decodes H.264 and AAC).
    page.wait("() => document.getElementById('player').readyState >= 2")
    page.js("() => document.getElementById('player').play()")
    page.wait("() => document.getElementById('player').currentTime > 0.3", timeout=10_000)
    playing = page.js(
        "() => { const v = document.getElementById('player'); v.pause();"
        " return [v.videoWidth, v.videoHeight, v.duration, v.error]; }"
    )
    assert playing[:2] == [720, 1280] and abs(playing[2] - 7.53) < 0.1 and playing[3] is None
    assert page.text("#tick-end") == "0:07.5"

    # Summary: the answer's text is seen growing while the answer is in progress.
    page.record_text("#raw-text")
    # Sampled (temperature 1, a seed): the tiny random model's greedy answer is a few
    # characters and then tokens that print nothing, too few to see growing.
    page.ask("summary", max_tokens=48, temperature=1, seed=1)
    trace = page.js("window.textTrace")
    final = len(page.text("#raw-text"))
    assert final > 0 and page.text("#answer").strip(), page.text("#raw-text")
    partial = [step for step in trace if step["busy"] and 0 < step["length"] < final]
    assert partial, trace
    assert page.js("document.getElementById('answer-error').hidden")
    usage = dict(zip(page.tab.locator("#usage dt").all_text_contents(),
                     page.tab.locator("#usage dd").all_text_contents()))  # fmt: skip
    assert usage["Frames"] == "8" and usage["Audio"] == "yes" and usage["Video tokens"] == "912"
    assert int(usage["Answer tokens"]) <= 48 and "First token" in usage and "Total time" in usage

    # A question: the same uploaded file again, the other preset.
    page.ask("qa", "What is the person doing?", max_tokens=8, temperature=0, seed="")
    assert page.text("#raw-text") and page.js("document.getElementById('answer-error').hidden")
    chats = page.chats()
    assert [c["video"]["task"] for c in chats] == ["summary", "qa"]
    assert {c["messages"][0]["content"][0]["video_url"]["url"] for c in chats} == {file_id}
    assert chats[1]["messages"][0]["content"][1]["text"] == "What is the person doing?"
    assert all(c["stream"] and c["stream_options"] == {"include_usage": True} for c in chats)
    assert [(c["max_tokens"], c["temperature"], c.get("seed")) for c in chats] == [
        (48, 1, 1),
        (8, 0, None),
    ]


def test_chapters_are_drawn_on_the_timeline_and_seek_the_player(
    open_page: Any, stand_in_gateway: str, clip: Path, tmp_path: Path
) -> None:
    page = open_page(stand_in_gateway)
    page.upload(clip)
    page.wait("() => document.getElementById('player').readyState >= 1")
    page.record_text("#answer")
    page.ask("chapters")
    final = page.text("#answer")
    assert final == CHAPTERS_TEXT
    # Streamed: the answer was on the page, growing, before it was complete.
    trace = page.js("window.textTrace")
    assert [s for s in trace if s["busy"] and 0 < s["length"] < len(final)], trace
    # The thinking is folded away, the tags are not shown.
    assert page.js("document.getElementById('thinking').open") is False
    assert page.text("#thinking-text") == THINKING and "<" not in final

    bars = page.tab.locator("#segment-lane .segment")
    assert bars.count() == 3
    lefts = [float(bars.nth(k).evaluate("b => parseFloat(b.style.left)")) for k in range(3)]
    duration = page.js("document.getElementById('player').duration")
    assert lefts == pytest.approx([100 * s / duration for s, _, _ in CHAPTERS], abs=0.01)
    assert page.tab.locator("#segment-list li").count() == 3
    assert CHAPTERS[1][2] in page.text("#segment-list")

    bars.nth(1).click()
    page.wait("() => Math.abs(document.getElementById('player').currentTime - 2) < 0.01")
    bars.nth(2).click()
    page.wait("() => Math.abs(document.getElementById('player').currentTime - 5) < 0.01")
    # The playhead follows the player.
    playhead = page.js("parseFloat(document.getElementById('playhead').style.left)")
    assert playhead == pytest.approx(100 * 5 / duration, abs=0.5)
    usage = page.text("#usage")
    assert "Frames8" in usage and "Audioyes" in usage and "Prompt tokens930" in usage
    screenshot(page, "playground-desktop.png", tmp_path)

    # A clip chosen by dragging on the timeline; a grounding answer about the clip is
    # drawn at the clip's place in the video (the model counts from the clip's start).
    page.tab.locator("#scrub-lane").scroll_into_view_if_needed()
    lane = page.tab.locator("#scrub-lane").bounding_box()
    y = lane["y"] + lane["height"] / 2
    page.tab.mouse.move(lane["x"] + lane["width"] * 0.25, y)
    page.tab.mouse.down()
    page.tab.mouse.move(lane["x"] + lane["width"] * 0.5, y, steps=4)
    page.tab.mouse.move(lane["x"] + lane["width"] * 0.75, y, steps=4)
    page.tab.mouse.up()
    start, end = (
        float(page.tab.input_value("#clip-start")),
        float(page.tab.input_value("#clip-end")),
    )
    assert start == pytest.approx(duration / 4, abs=0.15)
    assert end == pytest.approx(duration * 3 / 4, abs=0.15)
    assert page.js("!document.getElementById('clip-range').hidden")
    page.ask("grounding", "When is the clip pressed on?")
    sent = page.chats()[-1]["video"]
    assert sent == {"task": "grounding", "start": start, "end": end}
    assert page.text("#answer") == "0:00:01-0:00:02"
    bar = page.tab.locator("#segment-lane .segment")
    assert bar.count() == 1
    assert float(bar.get_attribute("data-start")) == pytest.approx(start + 1)
    assert page.text("#segment-list button") == f"{page_time(start + 1)} – {page_time(start + 2)}"
    assert "Clip" in page.text("#usage")


def test_phone_width(open_page: Any, stand_in_gateway: str, clip: Path, tmp_path: Path) -> None:
    page = open_page(stand_in_gateway, PHONE)
    assert horizontal_overflow(page) <= 0
    page.upload(clip)
    page.ask("chapters")
    assert page.tab.locator("#segment-lane .segment").count() == 3
    assert horizontal_overflow(page) <= 0
    # Every control fits the screen.
    wide = page.js(
        """() => [...document.querySelectorAll('input, button, textarea, video, progress')]
             .filter(e => e.offsetParent && e.getBoundingClientRect().right > innerWidth + 1)
             .map(e => e.id || e.outerHTML.slice(0, 60))"""
    )
    assert not wide, wide
    screenshot(page, "playground-phone.png", tmp_path)


def test_a_video_the_browser_cannot_play(
    open_page: Any, stand_in_gateway: str, tmp_path: Path
) -> None:
    """MPEG-4 Part 2 in Matroska: the gateway decodes it, Chromium does not. The page says
    so, and the answer's ranges are still drawn over the file's duration."""
    video = make_clip(tmp_path / "old.mkv", seconds=8, vcodec="mpeg4", acodec="mp2")
    page = open_page(stand_in_gateway)
    page.upload(video)
    status = page.text("#video-status")
    assert re.match(r"Ready: old\.mkv, 0:08(\.\d)?, 8 frames, with audio\.", status), status
    file_id = re.search(r"\((file-[^)]+)\)", status).group(1)
    duration = httpx.get(f"{stand_in_gateway}/v1/files/{file_id}").json()["video"][
        "video_duration_s"
    ]
    page.wait("() => !document.getElementById('player-note').hidden")
    assert page.text("#player-note").startswith("This browser cannot play this video itself")
    page.ask("chapters")
    bars = page.tab.locator("#segment-lane .segment")
    lefts = [float(bars.nth(k).evaluate("b => parseFloat(b.style.left)")) for k in range(3)]
    assert lefts == pytest.approx([100 * s / duration for s, _, _ in CHAPTERS], abs=0.01)
    page.tab.click("#segment-list li:nth-child(2) button")
    playhead = page.js("parseFloat(document.getElementById('playhead').style.left)")
    assert playhead == pytest.approx(100 * 2 / duration)


# Every control named for assistive technology: a label, aria-label(ledby), or its text.
UNNAMED_CONTROLS = """() => [...document.querySelectorAll(
    'input, textarea, select, button, video, progress, summary, [role=button]')]
  .filter(e => !e.closest('[hidden]'))
  .filter(e => !((e.labels && [...e.labels].some(l => l.textContent.trim()))
                 || e.getAttribute('aria-label')
                 || (e.getAttribute('aria-labelledby') || '').split(' ')
                      .some(id => document.getElementById(id)?.textContent.trim())
                 || (e.tagName !== 'INPUT' && e.textContent.trim())))
  .map(e => e.id || e.outerHTML.slice(0, 80))"""


def test_keyboard_operation_and_labels(open_page: Any, stand_in_gateway: str, clip: Path) -> None:
    page = open_page(stand_in_gateway)
    assert page.js(UNNAMED_CONTROLS) == []
    tab = page.tab

    # Tab reaches the main controls in reading order.
    order = []
    page.js("document.activeElement.blur()")
    for _ in range(40):
        tab.keyboard.press("Tab")
        order.append(page.js("document.activeElement.id || document.activeElement.name || ''"))
    wanted = ["key-button", "file-input", "url-input", "clip-start", "clip-end",
              "clip-start-now", "task", "question", "ask-button"]  # fmt: skip
    positions = [order.index(name) for name in wanted]
    assert positions == sorted(positions), order

    # The file chooser opened from the keyboard (listened for before the key is pressed:
    # Playwright starts intercepting choosers when the first listener is added).
    choosers: list[Any] = []
    tab.on("filechooser", lambda chooser: choosers.append(chooser))
    tab.wait_for_timeout(200)
    tab.focus("#file-input")
    tab.keyboard.press("Space")
    page.wait_for(lambda: choosers, "a file chooser")
    choosers[0].set_files(str(clip))
    page.wait("() => /^Ready:/.test(document.getElementById('video-status').textContent)")

    # A preset by arrow keys (one tab stop for the group), asked with Ctrl+Enter.
    tab.focus("input[name=task]:checked")
    for _ in range(4):
        tab.keyboard.press("ArrowDown")
    assert page.js("document.querySelector('input[name=task]:checked').value") == "chapters"
    tab.focus("#question")
    page.count_answers()
    tab.keyboard.press("Control+Enter")
    page.wait_answer()
    assert tab.locator("#segment-list li").count() == 3

    # The answer's ranges are buttons: Enter seeks the player.
    tab.focus("#segment-list li:nth-child(3) button")
    tab.keyboard.press("Enter")
    page.wait("() => Math.abs(document.getElementById('player').currentTime - 5) < 0.01")
    tab.keyboard.press("Shift+Tab")
    tab.keyboard.press("Enter")
    page.wait("() => Math.abs(document.getElementById('player').currentTime - 2) < 0.01")

    # The clip typed in; the thinking unfolded; the key dialog closed with Escape.
    tab.focus("#clip-start")
    tab.keyboard.type("1.5")
    assert page.js("!document.getElementById('clip-range').hidden")
    tab.focus("#thinking summary")
    tab.keyboard.press("Enter")
    assert page.js("document.getElementById('thinking').open") is True
    tab.focus("#key-button")
    tab.keyboard.press("Enter")
    assert page.js("document.getElementById('key-dialog').open") is True
    assert page.js("document.activeElement.id") == "key-input"
    tab.keyboard.press("Escape")
    assert page.js("document.getElementById('key-dialog').open") is False
    assert page.js(UNNAMED_CONTROLS) == []

    # Ask and Stop from the keyboard: the focus moves to Stop, then back to Ask.
    tab.focus("#ask-button")
    page.count_answers()
    tab.keyboard.press("Enter")
    page.wait("() => document.activeElement.id === 'stop-button'", timeout=5_000)
    tab.keyboard.press("Enter")
    page.wait_answer()
    assert page.text("#answer-status") == "Stopped."
    assert page.js("document.activeElement.id") == "ask-button"


def test_errors_are_shown_in_words(
    open_page: Any, stand_in_gateway: str, clip: Path, tmp_path: Path
) -> None:
    page = open_page(stand_in_gateway)
    # Asked too early, or without the question the task needs: said on the page.
    page.tab.click("#ask-button")
    assert page.text("#ask-error") == "Choose a video file or paste a URL first."

    # A file that is no video: the gateway's own message.
    bad = tmp_path / "notes.mp4"
    bad.write_bytes(b"this is not a video\n" * 50)
    with bad.open("rb") as handle:
        expected = httpx.post(
            stand_in_gateway + "/v1/files",
            files={"file": (bad.name, handle, "video/mp4")},
            data={"purpose": "user_data"},
            timeout=60,
        ).json()["error"]
    # Dropped on the page (a drop anywhere is taken: the browser would leave the page).
    page.js(
        """() => {
          const drop = new DataTransfer();
          const bytes = 'this is not a video\\n'.repeat(50);
          drop.items.add(new File([bytes], 'notes.mp4', {type: 'video/mp4'}));
          document.body.dispatchEvent(
            new DragEvent('drop', {dataTransfer: drop, bubbles: true, cancelable: true}));
        }"""
    )
    page.wait("() => !document.getElementById('video-error').hidden")
    shown = page.text("#video-error")
    assert shown == f"The upload failed: {expected['message']} ({expected['code']})", shown
    assert page.js("document.getElementById('player').hidden")

    # The gateway unreachable (the connection cut), then an upload cancelled midway.
    page.tab.route("**/v1/files", lambda route: route.abort())
    page.upload(bad)
    assert page.text("#video-error").startswith("The upload failed: Could not reach the gateway")
    page.tab.unroute("**/v1/files")
    held: list[Any] = []
    page.tab.route("**/v1/files", lambda route: held.append(route))  # never answered
    page.tab.set_input_files("#file-input", str(bad))
    page.tab.click("#upload-cancel")
    page.wait("() => document.getElementById('video-status').textContent === 'Upload cancelled.'")
    assert page.js("document.getElementById('video-error').hidden")
    assert page.js("!document.getElementById('file-input').disabled")
    page.tab.unroute("**/v1/files")

    # A URL the gateway refuses: its message under the answer.
    url = "https://127.0.0.1/clip.mp4"
    page.tab.fill("#url-input", url)
    page.tab.press("#url-input", "Enter")
    page.tab.check("input[name=task][value=qa]")
    page.tab.fill("#question", "")
    page.tab.click("#ask-button")
    assert page.text("#ask-error") == "This task needs a question."
    page.ask("qa", "What happens?")
    body = {"messages": video_question(url, "x")}
    expected = httpx.post(stand_in_gateway + "/v1/chat/completions", json=body, timeout=60)
    error = expected.json()["error"]
    assert error["code"] == "url_blocked_address"
    assert page.text("#answer-error") == f"{error['message']} ({error['code']})"

    # The model server failing during the answer: the gateway's words, not vLLM's.
    page.upload(clip)
    page.ask("qa", "fail midway")
    shown = page.text("#answer-error")
    assert shown == "the model server failed while answering (upstream_error)", shown
    assert page.text("#thinking-text") == "Looking"


# ------------------------------------------------- API keys and a long video in segments


@dataclass
class KeyedGateway:
    base: str
    files: Path  # its files folder, where `arc-gateway keys` finds its database
    keys: dict[str, str]  # name -> secret
    engine: EngineState


@pytest.fixture(scope="module")
def keyed_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedGateway]:
    """A real gateway with API keys (made by `arc-gateway keys create` on its database) in
    front of the stand-in engine (tests/stand_in_engine.py: known answers per segment)."""
    folder = tmp_path_factory.mktemp("playground-keys")
    files = folder / "files"
    keys = {name: create_key(str(files), name) for name in ("first", "second")}
    port = free_port()
    with stand_in_engine() as (engine_url, state):
        extra = ["--decode-workers", "1", "--served-model-name", "stand-in"]
        proc = start_gateway(engine_url, port, files, folder / "gateway.log", extra)
        try:
            yield KeyedGateway(f"http://127.0.0.1:{port}", files, keys, state)
        finally:
            stop(proc)


CARD_S = 40  # the long video's colour cards: one per 40 s, told apart by the stand-in


@pytest.fixture(scope="module")
def lecture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5:20, over five minutes: asked about in segments. 128x72 at 1 fps: decoded at once
    (smaller frames put the timestamp overlay over the centre the stand-in reads)."""
    folder = tmp_path_factory.mktemp("playground-long")
    return make_long_video(folder / "lecture.mp4", seconds=320, card_s=CARD_S, size="128x72", fps=1)


# The stand-in's answer for each segment, by the card its first frame shows (times from the
# segment's start, as the model writes them).
SEGMENT_CHAPTERS = {
    0: "<answer>0:00:00-0:02:00 The first cards\n0:02:00-0:05:00 More cards</answer>",
    7: "<answer>0:00:00-0:00:10 The last card</answer>",
}


def test_keys_and_a_long_video_in_segments(
    open_page: Any, keyed_gateway: KeyedGateway, clip: Path, lecture: Path
) -> None:
    gateway = keyed_gateway
    page = open_page(gateway.base)
    dialog = "document.getElementById('key-dialog')"
    message = "document.getElementById('key-message').textContent"
    # The page itself needs no key; its first API call answers 401: the key prompt, with
    # the gateway's words.
    page.wait(f"() => {dialog}.open")
    unauthorized = httpx.get(gateway.base + "/v1/models").json()["error"]["message"]
    expected = f"This gateway needs an API key: {unauthorized.rstrip('.')}."
    assert page.js(message) == expected, page.js(message)
    page.tab.fill("#key-input", "sk-arc-wrong")
    page.tab.press("#key-input", "Enter")
    page.wait(f"() => {message}.startsWith('The key was refused')")
    assert page.js(f"{dialog}.open") is True
    page.tab.fill("#key-input", gateway.keys["first"])
    page.tab.press("#key-input", "Enter")
    page.wait("() => document.getElementById('model-status').textContent === 'Model: stand-in'")
    assert page.js(f"{dialog}.open") is False
    # Kept for this tab only, sent as a Bearer token, never in a URL.
    assert page.js("sessionStorage.getItem('arc-api-key')") == gateway.keys["first"]
    assert page.js("localStorage.length") == 0
    page.upload(clip)
    assert page.text("#video-status").startswith("Ready:"), page.text("#video-error")
    file_id = re.search(r"\((file-[^)]+)\)", page.text("#video-status")).group(1)

    # The key is revoked (the operator's command): the next call's 401 brings the prompt
    # back, and the question goes again with the new key, for which the first key's file
    # does not exist (each key's files are its own): said in the gateway's words.
    revoked = keys_command(str(gateway.files), "revoke", "first")
    assert revoked.returncode == 0, revoked.stderr
    page.tab.check("input[name=task][value=qa]")
    page.tab.fill("#question", "What is shown?")
    page.count_answers()
    page.tab.click("#ask-button")
    page.wait(f"() => {dialog}.open && {message}.startsWith('The key was refused')")
    page.tab.fill("#key-input", gateway.keys["second"])
    page.tab.press("#key-input", "Enter")
    page.wait_answer()
    assert page.text("#answer-error") == f"no file with id {file_id!r} (file_not_found)"
    assert page.js("sessionStorage.getItem('arc-api-key')") == gateway.keys["second"]

    # A long video: measured at upload, not prepared; the page says it is asked in segments.
    gateway.engine.reset()
    gateway.engine.cards = card_colours(lecture, 320 // CARD_S, CARD_S)
    gateway.engine.segment_answer = lambda card: SEGMENT_CHAPTERS[card]
    page.upload(lecture)
    status = page.text("#video-status")
    assert status.startswith(
        "Ready: lecture.mp4, 5:20, long video: asked in 2 segments of up to 5:00, with audio."
    ), status
    # A clip from 10 s to the end (310 s): two segments, 10-310 and 310-320, whose answers
    # the gateway puts on the whole video's time: drawn there, not 10 s later.
    page.tab.fill("#clip-start", "10")
    page.tab.fill("#clip-end", "320")
    page.record_text("#segment-text")
    page.ask("chapters")
    assert page.chats()[-1]["video"] == {"task": "chapters", "start": 10, "end": 320}
    assert page.js("document.getElementById('answer-error').hidden"), page.text("#answer-error")
    # One progress step per finished segment (in the order they finish).
    steps = [step["text"] for step in page.js("window.textTrace") if step["text"]]
    assert [step.split(" (")[0] for step in steps] == ["1 of 2 segments", "2 of 2 segments"]
    assert page.js("document.getElementById('segment-bar').value") == 2
    bars = page.tab.locator("#segment-lane .segment")
    starts = [float(bars.nth(k).get_attribute("data-start")) for k in range(bars.count())]
    assert starts == [10, 130, 310], starts
    times = page.tab.locator("#segment-list button").all_text_contents()
    assert times == ["0:10 – 2:10", "2:10 – 5:10", "5:10 – 5:20"], times
    assert "The last card" in page.text("#segment-list")
    usage = page.text("#usage")
    assert "Segments2" in usage and "Clip0:10 – 5:20" in usage, usage
    assert len(gateway.engine.segments_seen()) == 2

    # Every call carried the key typed last, as a Bearer token; none in a URL.
    sent = {r["headers"].get("authorization") for r in page.requests}
    assert {f"Bearer {gateway.keys[k]}" for k in ("first", "second")} <= sent, sent
    assert "Bearer sk-arc-wrong" in sent
    assert not [r for r in page.requests if "sk-arc" in r["url"]]
