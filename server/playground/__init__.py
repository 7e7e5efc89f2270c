"""The playground: a page served by the gateway to try the model in a browser.

Plain HTML, CSS and JavaScript in `static/` (package data: no build step, no CDN, works
offline), talking to the gateway's own API (`/v1/files`, `/v1/chat/completions`) from the
browser. `routes.router` serves it at `/playground/` (`/` redirects there) with a strict
Content-Security-Policy.
"""

from .routes import router

__all__ = ["router"]
