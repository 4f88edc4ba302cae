"""Charts drawn on the server as SVG geometry (no JavaScript, no external assets)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: int


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    bars: list[Bar]
    max_value: int
    first_label: str
    last_label: str


def bar_chart(points: list[tuple], width: int = 720, height: int = 180) -> BarChart | None:
    """Bars for (label, value) points scaled into a ``width`` × ``height`` plot; None without points."""
    if not points:
        return None
    top = max(value for _, value in points) or 1
    slot = width / len(points)
    bar_width = max(slot * 0.8, 1)
    bars = []
    for index, (label, value) in enumerate(points):
        bar_height = height * value / top
        bars.append(
            Bar(index * slot + (slot - bar_width) / 2, height - bar_height, bar_width, bar_height, str(label), value)
        )
    return BarChart(width, height, bars, top, str(points[0][0]), str(points[-1][0]))
