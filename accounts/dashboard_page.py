"""What the usage dashboard's page shows of the figures (`accounts.dashboard`): the periods to
choose from, the top tables' rows, and the bar charts as SVG geometry that the template draws.

Plain: no queries, and no formatting (the template's `hfproxy_format` filters do that).
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from accounts.dashboard import PERIODS, Dashboard, error_rate

CHARTED = ("requests", "tokens", "errors")


def page(figures: Dashboard) -> dict:
    """The dashboard template's context for `figures`."""
    step = figures.period.step_name
    return {
        "dashboard": figures,
        "periods": PERIODS.values(),
        "charts": [bar_chart(figures.series, key, step) for key in CHARTED],
        "tops": [
            (_("Top users"), top_rows(figures.top_users, "user"), "user"),
            (_("Top models"), top_rows(figures.top_models, "model_requested"), "model"),
        ],
    }


def top_rows(rows: list[dict], name: str) -> list[dict]:
    """A top list's rows for its table: named by `name`, with their error rate."""
    return [
        {
            "name": row[name] or "(none)",
            **{column: row[column] for column in ("requests", "tokens", "cost", "errors", "refused")},
            "error_rate": error_rate(
                **{column: row[column] for column in ("errors", "requests", "refused", "bad_requests")}
            ),
        }
        for row in rows
    ]


CHART_WIDTH, CHART_HEIGHT, CHART_LEFT, CHART_BOTTOM = 760, 180, 56, 22


def bar_chart(series: list[dict], key: str, step: str) -> dict:
    """Bar geometry for one value of the series; the template draws it as SVG."""
    plot_width, plot_height = CHART_WIDTH - CHART_LEFT - 4, CHART_HEIGHT - CHART_BOTTOM - 8
    top = max((point[key] for point in series), default=0)
    slot = plot_width / max(len(series), 1)
    label_format = "%b %d" if step == "day" else "%b %d %H:%M"
    bars = []
    for index, point in enumerate(series):
        value = point[key]
        # A bucket with any data stays visible, however small next to the biggest.
        height = max(1.0, plot_height * value / top) if value and top else 0.0
        bars.append(
            {
                "x": round(CHART_LEFT + index * slot + slot * 0.1, 2),
                "y": round(8 + plot_height - height, 2),
                "width": round(max(slot * 0.8, 1.0), 2),
                "height": round(height, 2),
                "value": value,
                "start": point["start"],
                "label": point["start"].strftime(label_format),
            }
        )
    ticks = [bars[0], bars[len(bars) // 2], bars[-1]] if bars else []
    return {
        "key": key,
        "unit": key,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": CHART_LEFT,
        "baseline": CHART_HEIGHT - CHART_BOTTOM,
        "label_y": CHART_HEIGHT - 6,
        "axis_label_x": CHART_LEFT - 6,
        "top": top,
        "total": sum(point[key] for point in series),
        "bars": bars,
        "ticks": ticks,
    }
