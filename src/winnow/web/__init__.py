"""The web console: server-rendered page shells whose data all comes from the public API.

Templates and vendored, pinned assets ship inside the package; nothing is fetched from a CDN.
"""

from __future__ import annotations

from winnow.web.app import install_console

__all__ = ["install_console"]
