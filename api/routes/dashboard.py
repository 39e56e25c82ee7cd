"""`GET /`: the dashboard, a static page (api/dashboard/) that talks to the API from the browser.

The page holds no secrets: the API key is typed in and kept in the tab's sessionStorage. The
Content-Security-Policy allows scripts and styles from this origin only, so even a prompt that
slipped into the DOM as markup could not run.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, get
from litestar.static_files import create_static_files_router

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        # Thumbnails live in storage: this API's /files or a Supabase bucket.
        "img-src 'self' https: http:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


# Read once: the page is static and ships inside the package.
INDEX_HTML = (DASHBOARD_DIR / "index.html").read_bytes()


@get("/", include_in_schema=False, media_type="text/html; charset=utf-8")
async def dashboard() -> Response[bytes]:
    return Response(
        INDEX_HTML,
        media_type="text/html; charset=utf-8",
        headers=SECURITY_HEADERS,
    )


dashboard_assets = create_static_files_router(
    path="/dashboard",
    directories=[DASHBOARD_DIR],
    name="dashboard-assets",
    include_in_schema=False,
)
