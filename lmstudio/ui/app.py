"""Start the desktop app: check for a display first, then create the QApplication and the main window.

Without a display Qt aborts inside QApplication's constructor (no Python exception to catch), so on
Linux ``run_app`` looks for DISPLAY / WAYLAND_DISPLAY / QT_QPA_PLATFORM first and explains what to do.
"""

from __future__ import annotations

import os
import sys

from lmstudio import __version__

NO_DISPLAY_MESSAGE = (
    "lmstudio: no display found; use QT_QPA_PLATFORM=offscreen, xvfb-run lmstudio, "
    "or the headless subcommands `lmstudio train ...` (see `lmstudio --help`)."
)


def has_display(env: dict | None = None, platform: str | None = None) -> bool:
    """False only where Qt would abort: Linux (or BSD) with no X11/Wayland display and no platform chosen."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if not (platform.startswith("linux") or "bsd" in platform):
        return True  # Windows and macOS always have a window system
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY") or env.get("QT_QPA_PLATFORM"))


def make_application(argv: list[str] | None = None):
    """The QApplication with the app's names, style and stylesheet (reuses an existing one)."""
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from lmstudio import resources

    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv[:1])
    app.setApplicationName("lmstudio")
    app.setApplicationVersion(__version__)
    if not app.organizationName():
        app.setOrganizationName("lmstudio")
    app.setStyle("Fusion")
    try:
        root = resources.resources_dir()
    except resources.ResourceError:
        return app
    qss = root / "style.qss"
    if qss.is_file():
        app.setStyleSheet(qss.read_text(encoding="utf-8"))
    icon = root / "icons" / "lmstudio.svg"
    if icon.is_file():
        app.setWindowIcon(QIcon(str(icon)))
    return app


def run_app(argv: list[str] | None = None) -> int:
    """``lmstudio`` with no arguments: open the window and run until it closes; the exit status."""
    if not has_display():
        print(NO_DISPLAY_MESSAGE, file=sys.stderr)
        return 1
    app = make_application(argv)
    from lmstudio.ui.main_window import MainWindow

    window = MainWindow()
    window.show()
    return int(app.exec())
