"""The plots of a results file: ``python benchmarks/plots.py RESULTS.json FOLDER``.

Needs matplotlib and the standard library only (``report.py``), so it runs in any
interpreter that has matplotlib; ``run.py`` calls it in its own when matplotlib is
there, else in the ``plots`` virtual environment of ``peers.py``. Prints the paths
it wrote, one a line.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import Row, rows_of


def plot(rows: list[Row], series: dict[str, Any], folder: Path) -> list[Path]:
    """Draw every plot whose data the results hold; answer the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = folder / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    targeted = [r for r in rows if r.unit == "x" and r.target is not None]
    if targeted:
        fig, ax = plt.subplots(figsize=(11, 0.45 * len(targeted) + 1.2))
        full = [f"{r.section.removeprefix('snapshot: ')}: {r.name}" for r in targeted]
        names = [n if len(n) < 90 else n[:87] + "..." for n in full][::-1]
        vals = [r.value for r in targeted][::-1]
        colors = ["tab:green" if r.missed_by is None else "tab:red" for r in targeted][::-1]
        ax.barh(names, vals, color=colors, alpha=0.8)
        for i, r in enumerate(targeted[::-1]):
            ax.plot([r.target, r.target], [i - 0.4, i + 0.4], color="black", linewidth=2)
            if r.spread:  # the noise: 25-75% of the paired ratios, not an error bar of the value
                ax.plot(list(r.spread), [i, i], color="dimgrey", linewidth=1, marker="|")
        ax.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel(
            "contsnap / baseline, median of per-round ratios\n(black tick: target; grey: 25-75%)"
        )
        ax.set_xscale("log")
        ax.set_title("Ratios with a target (green: met, red: missed)")
        save(fig, "ratios.png")
    if "snapshot" in series:
        cases = series["snapshot"]["cases"]
        impls = ["contsnap", "dispatch-py", "pyteleport", "pickle"]
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        width = 0.8 / len(impls)
        for ax, action in zip(axes, ("dumps", "loads")):
            for k, impl in enumerate(impls):
                xs, ys = [], []
                for i, case in enumerate(cases):
                    side = case["sides"].get(impl, {})
                    if action in side:
                        xs.append(i + (k - (len(impls) - 1) / 2) * width)
                        ys.append(side[action] * 1e6)
                ax.bar(xs, ys, width, label=impl)
            ax.set_xticks(range(len(cases)))
            ax.set_xticklabels([textwrap.fill(c["label"], 16) for c in cases], fontsize=7)
            ax.set_yscale("log")
            ax.set_ylabel(f"{action} (us, median)")
            ax.set_title(f"{action}: contsnap, the peers and pickle of the same state")
            ax.legend(fontsize=8)
        save(fig, "snapshot_peers.png")
    if "restore_vs_steps" in series:
        data = series["restore_vs_steps"]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(data["steps"], [s * 1e6 for s in data["loads_seconds"]], marker="o")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("steps taken before the snapshot")
        ax.set_ylabel("contsnap.loads (us)")
        ax.set_title("Restore time does not depend on steps taken")
        save(fig, "restore_vs_steps.png")
    if "state_growth" in series:
        data = series["state_growth"]
        x = [p["pickle_bytes"] for p in data]
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
        for key, style in (
            ("contsnap.dumps", "o-"),
            ("pickle.dumps", "o--"),
            ("contsnap.loads", "s-"),
            ("pickle.loads", "s--"),
        ):
            left.plot(x, [p[f"{key}_seconds"] * 1e3 for p in data], style, label=key)
        left.set_xscale("log")
        left.set_yscale("log")
        left.set_xlabel("live state (bytes of plain pickle)")
        left.set_ylabel("time (ms)")
        left.legend()
        left.set_title("Time")
        right.plot(x, [p["contsnap_bytes"] for p in data], "o-", label="contsnap.dumps")
        right.plot(x, x, "o--", label="pickle.dumps")
        right.set_xscale("log")
        right.set_yscale("log")
        right.set_xlabel("live state (bytes of plain pickle)")
        right.set_ylabel("snapshot size (bytes)")
        right.legend()
        right.set_title("Size (contsnap compresses)")
        save(fig, "state_growth.png")
    return written


def plot_file(results: Path, folder: Path) -> list[Path]:
    document = json.loads(Path(results).read_text(encoding="utf-8"))
    return plot(rows_of(document), document["series"], Path(folder))


if __name__ == "__main__":
    for written in plot_file(Path(sys.argv[1]), Path(sys.argv[2])):
        print(written)
