"""Plot fonts: whether the PNGs a training run writes can show Korean labels."""

from __future__ import annotations

from aiforge.doctor.model import Env, Finding
from aiforge.fonts import FONT_INSTALL_FIX, hangul_font


def check_plot_fonts(env: Env) -> Finding:
    """Warn when no installed font draws Hangul: Korean class names would plot as empty boxes."""
    if env.dist_version("matplotlib") is None:
        return Finding(
            "plot-fonts", "ok", "matplotlib not installed: no plots to draw (aiforge[train] has it)"
        )
    family = hangul_font()
    if family is None:
        return Finding(
            "plot-fonts",
            "warn",
            "no installed font draws Hangul: Korean labels in confusion matrices and loss curves "
            "would be empty boxes",
            fix=f"Install a Korean font: {FONT_INSTALL_FIX.get(env.platform, FONT_INSTALL_FIX['linux'])}; "
            "then clear matplotlib's font cache (`rm -r ~/.cache/matplotlib`).",
            code="AF-FONT-001",
        )
    return Finding("plot-fonts", "ok", f"Korean plot labels use {family}", details={"family": family})
