"""How the TUI looks: SVG snapshots over fixture-backed engines (fake clock, fixed node name).

Update after an intended change with ``make test PYTEST_ARGS="--snapshot-update"`` and look at
the SVGs in tests/__snapshots__ before committing them.
"""

from __future__ import annotations

from conftest import CLUSTER_ENERGY_UJ, ClusterNames, FixtureFeed
from kepler_top.tui.app import KeplerTopApp

SIZE = (120, 24)
TICKS = {1001: 30, 1002: 10, 1003: 5, 2001: 60, 3001: 20, 4001: 15, 1: 4, 600: 1, 601: 5}


def cluster_app(node_tree, **kwargs) -> KeplerTopApp:
    feed = FixtureFeed(node_tree("cluster-pods"), steps=[TICKS], energy_uj=CLUSTER_ENERGY_UJ,
                       metadata=ClusterNames())
    return KeplerTopApp(feed, interval_s=3600.0, **kwargs)


async def first_sample(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_namespaces_view(node_tree, snap_compare):
    """Header: fixture-node, rapl-sysfs measured, 30.00 W; table: shop above jobs, with pods,
    watts, share of active power and joules."""
    assert snap_compare(cluster_app(node_tree), terminal_size=SIZE, run_before=first_sample)


def test_pods_view_with_names_from_the_cluster(node_tree, snap_compare):
    """Pods view: db-0, web-0, batch-x1 by watts, each with its namespace and state running."""
    assert snap_compare(cluster_app(node_tree), press=["2"], terminal_size=SIZE,
                        run_before=first_sample)


def test_containers_view(node_tree, snap_compare):
    """Containers view: named containers (postgres, app, job, ...), the unnamed docker one by
    short id, each pod as namespace/name, runtimes and CPU seconds."""
    assert snap_compare(cluster_app(node_tree), press=["3"], terminal_size=SIZE,
                        run_before=first_sample)


def test_processes_view_opens_on_a_node_without_pods(node_tree, snap_compare):
    """A node without pods opens on Processes: long-runner above the kworker, no empty
    namespaces table."""
    feed = FixtureFeed(node_tree("proc-lifecycle"), steps=[{400: 60, 15: 20}],
                       energy_uj={"intel-rapl:0": 8_000_000})
    app = KeplerTopApp(feed, interval_s=3600.0)
    assert snap_compare(app, terminal_size=SIZE, run_before=first_sample)


def test_help_over_the_table(node_tree, snap_compare):
    """The help box centred over the namespaces table: views, control keys, and how to read
    WATTS, SHARE and JOULES."""
    assert snap_compare(cluster_app(node_tree), press=["question_mark"], terminal_size=(120, 32),
                        run_before=first_sample)


def test_paused_header(node_tree, snap_compare):
    """PAUSED in reverse video at the end of the header's first line; the table as before."""
    assert snap_compare(cluster_app(node_tree, view="processes"), press=["p"],
                        terminal_size=SIZE, run_before=first_sample)
