"""pytest plugin: run an existing suite through the import hook, in round-trip mode.

    pytest --contsnap-hook=mypkg,otherpkg --contsnap-roundtrip        (values by reference)
    pytest --contsnap-hook=mypkg --contsnap-roundtrip-pickle         (values copied)

``--contsnap-hook`` marks every generator function of the named modules
(``mark_all=True``); ``--contsnap-roundtrip`` moves every marked generator
to a restored copy at every suspension (see ``contsnap._roundtrip``). The
summary is printed at the end of the session (and written to
``CONTSNAP_ROUNDTRIP_REPORT`` when that is set).
"""

from __future__ import annotations

import os
from typing import Any


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("contsnap")
    group.addoption(
        "--contsnap-hook",
        metavar="MODULES",
        default=None,
        help="comma-separated modules or package prefixes whose generator functions "
        "are all made checkpointable (contsnap's import hook, mark_all=True)",
    )
    group.addoption(
        "--contsnap-roundtrip",
        action="store_const",
        const="1",
        default=None,
        help="continue every checkpointable generator from a restored copy at every "
        "suspension, its values carried by reference (CONTSNAP_ROUNDTRIP=1)",
    )
    group.addoption(
        "--contsnap-roundtrip-pickle",
        dest="contsnap_roundtrip",
        action="store_const",
        const="pickle",
        help="the same, with the values copied through the snapshot pickler",
    )


def pytest_configure(config: Any) -> None:
    mode = config.getoption("contsnap_roundtrip")
    if mode:
        os.environ["CONTSNAP_ROUNDTRIP"] = mode  # for subprocesses, and for contsnap:
        from contsnap import _roundtrip  # noqa: F401 - registers its wrapper
        from contsnap._marking._decorator import refresh_roundtrip_mode

        refresh_roundtrip_mode()
    modules = config.getoption("--contsnap-hook")
    if modules:
        from contsnap import install_import_hook

        names = [m.strip() for m in modules.split(",") if m.strip()]
        config._contsnap_hook = install_import_hook(names, mark_all=True)


def pytest_unconfigure(config: Any) -> None:
    handle = getattr(config, "_contsnap_hook", None)
    if handle is not None:
        handle.uninstall()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not os.environ.get("CONTSNAP_ROUNDTRIP"):
        return
    from contsnap._roundtrip import report

    summary = report()
    write = terminalreporter.write_line
    write(f"contsnap round trips ({summary['mode']}): {summary['total']} {summary['round_trips']}")
    if summary["skipped_suspensions"]:
        write(f"  skipped (no snapshot possible there): {summary['skipped_suspensions']}")
    if summary["failures"]:
        write(f"  failures: {summary['failures']}")
    if not summary["total"]:
        write("  NO ROUND TRIP WAS PERFORMED: nothing checkpointable ran", red=True, bold=True)
