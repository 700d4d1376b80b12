"""`window backups` and `window prune`."""

from __future__ import annotations

from orchestrator.commands import demo
from orchestrator.commands.demo import APP_USER
from orchestrator.postgres.cluster import free_port
from tests.support.shop import Shop, add_free_sample


def two_windows(shop: Shop) -> None:
    assert shop.run_window().returncode == 0
    add_free_sample(shop.prod_url)
    shop.configure(demo.BAD_MIGRATION)
    assert shop.run_window().returncode == 1


def test_backups_lists_archives_and_failed_databases(shop: Shop) -> None:
    two_windows(shop)

    listing = shop.window("backups")

    assert listing.returncode == 0, listing.stderr
    archives = [line for line in listing.stdout.splitlines() if "  yes  " in line]
    assert len(archives) == 2, listing.stdout
    assert all("disk" in line and ("MiB" in line or "KiB" in line) for line in archives), (
        listing.stdout)
    assert f"{shop.prod_db}_failed_" in listing.stdout, listing.stdout


def test_prune_keeps_the_newest_and_drops_failed_databases(shop: Shop) -> None:
    two_windows(shop)
    newest = shop.status()["run_id"]

    refused = shop.window("prune", "--keep", "1", "--confirm", "nope")
    assert refused.returncode == 3
    nothing = shop.window("prune", "--confirm", demo.PHRASE)
    assert nothing.returncode == 2
    before = sorted(p.name for p in (shop.folder / "backups").iterdir())
    text = shop.config.read_text()
    shop.config.write_text(text.replace("[target]\n", '[target]\nconnect_timeout = "1s"\n', 1))
    shop.env["DATABASE_URL"] = f"postgresql://{APP_USER}@127.0.0.1:{free_port()}/shop"
    unreachable = shop.window("prune", "--keep", "1", "--failed-databases",
                              "--confirm", demo.PHRASE)
    assert unreachable.returncode == 2, unreachable.stdout + unreachable.stderr
    assert sorted(p.name for p in (shop.folder / "backups").iterdir()) == before, (
        "a prune that stops with exit 2 (nothing done) deleted nothing")
    shop.config.write_text(text)
    shop.env["DATABASE_URL"] = shop.prod_url

    done = shop.window("prune", "--keep", "1", "--failed-databases", "--confirm", demo.PHRASE)

    assert done.returncode == 0, done.stderr
    left = sorted(p.name for p in (shop.folder / "backups").iterdir())
    assert left == [newest, f"{newest}.sha256"]
    gone = next(name for name in before if name not in left and not name.endswith(".sha256"))
    listed = done.stdout.split("prune deletes:", 1)[1]
    assert f"archive  {shop.folder / 'backups' / gone}" in listed, done.stdout
    assert f"database {shop.prod_db}_failed_" in listed, "what it deletes, said first"
    again = shop.window("prune", "--keep", "1", "--failed-databases", "--confirm", demo.PHRASE)
    assert again.returncode == 0 and again.stdout.startswith("nothing to prune"), again.stdout
    assert shop.databases(f"{shop.prod_db}_failed_%") == []
    assert "archive_pruned" in done.stderr and "failed_database_dropped" in done.stderr
