"""Matrix pictures and tables moved to the shared layer (``lmstudio.matrix_export``); kept for old imports."""

from lmstudio.matrix_export import (  # noqa: F401
    NAN_RGB,
    VIRIDIS,
    colorize,
    encode_png,
    save_matrix_csv,
    save_matrix_png,
    text_bitmap,
    tile,
)
