"""fleet.toml validation, wave planning, the fleet's lock and record, the exit code:
everything of ``window fleet`` that needs no database."""

from __future__ import annotations

import os
import textwrap
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.errors import Busy, ConfigError, UsageError
from orchestrator.fleet import record as fleet
from orchestrator.fleet import runner as fleet_runner
from orchestrator.fleet import spec as fleet_spec
from orchestrator.fleet.record import NOT_RUN, PENDING, Record, View
from orchestrator.store import blobs

WINDOW_TOML = textwrap.dedent("""\
    [window]
    confirm_phrase = "FLEET-OK"

    [banner]
    on = "true"
    off = "true"

    [migrate]
    command = "true"
""")
PASSWORD = "s3cr3t-fleet-pw"


def write(folder: Path, fleet_toml: str, window_toml: str = WINDOW_TOML) -> Path:
    (folder / "window.toml").write_text(window_toml)
    path = folder / "fleet.toml"
    path.write_text(textwrap.dedent(fleet_toml))
    return path


TWO_TARGETS = """\
    concurrency = 2
    [[targets]]
    name = "eu-1"
    url_env = "EU1_URL"
    [[targets]]
    name = "eu-2"
    url_env = "EU2_URL"
"""


def test_a_fleet_file_names_its_targets_and_the_shared_config(tmp_path: Path) -> None:
    loaded = fleet_spec.load(write(tmp_path, TWO_TARGETS))
    assert [t.name for t in loaded.spec.targets] == ["eu-1", "eu-2"]
    assert loaded.spec.concurrency == 2
    assert loaded.config_path == (tmp_path / "window.toml").resolve()
    assert loaded.settings.window.confirm_phrase == "FLEET-OK"


@pytest.mark.parametrize(("fleet_toml", "complaint"), [
    ('colour = "blue"\n' + TWO_TARGETS, "unknown key colour"),
    (TWO_TARGETS + 'urls = "x"\n', "unknown key targets[1].urls"),
    (TWO_TARGETS.replace('"eu-2"', '"eu-1"'), "target name 'eu-1' is used twice"),
    (TWO_TARGETS.replace('"eu-2"', '"eu 2"'), "targets[1].name: 'eu 2' is not a target name"),
    (TWO_TARGETS.replace('"eu-2"', '"-eu"'), "'-eu' is not a target name"),
    (TWO_TARGETS.replace("concurrency = 2", "concurrency = 0"), "concurrency"),
    (TWO_TARGETS.replace("concurrency = 2", 'canary = "us-1"'),
     "canary 'us-1' is not one of the [[targets]]"),
    ("concurrency = 2\n", "give either [[targets]] entries or a [catalog]"),
    (TWO_TARGETS + '[catalog]\nurl_env = "CAT"\nquery = "SELECT 1"\n', "and only one"),
    ('[[targets]]\nname = "a"\n', "missing required key targets[0].url_env"),
    ('[catalog]\nurl_env = "CAT"\n', "missing required key catalog.query"),
    ("concurrency = \n", "invalid TOML"),
])
def test_a_bad_fleet_file_is_one_sentence_naming_the_key(tmp_path: Path, fleet_toml: str,
                                                        complaint: str) -> None:
    path = write(tmp_path, fleet_toml)
    with pytest.raises(ConfigError) as caught:
        fleet_spec.load(path)
    assert complaint in caught.value.message
    assert caught.value.message.startswith(str(path))
    assert caught.value.exit_code == 2


def test_a_missing_fleet_file_or_shared_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such fleet file"):
        fleet_spec.load(tmp_path / "fleet.toml")
    path = write(tmp_path, 'config = "elsewhere.toml"\n' + TWO_TARGETS)
    with pytest.raises(ConfigError, match=r"elsewhere\.toml: no such config file"):
        fleet_spec.load(path)


def test_targets_read_their_urls_from_the_variables(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = fleet_spec.load(write(tmp_path, TWO_TARGETS))
    monkeypatch.setenv("EU1_URL", f"postgresql://app:{PASSWORD}@db1/shop")
    with pytest.raises(ConfigError, match=r"EU2_URL is not set: it must hold the target 'eu-2'"):
        fleet_spec.targets(loaded)
    monkeypatch.setenv("EU2_URL", f"postgresql://app:{PASSWORD}@db2/shop")
    found = fleet_spec.targets(loaded)
    assert [t.name for t in found] == ["eu-1", "eu-2"]
    assert PASSWORD not in repr(found)


def test_two_targets_on_one_database_are_refused(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = fleet_spec.load(write(tmp_path, TWO_TARGETS))
    monkeypatch.setenv("EU1_URL", f"postgresql://app:{PASSWORD}@db1:5432/shop")
    monkeypatch.setenv("EU2_URL", f"postgresql://other:{PASSWORD}@db1/shop")
    with pytest.raises(ConfigError, match=r"'eu-1' and 'eu-2' are the same database"
                                          r" \(db1:5432/shop\)") as caught:
        fleet_spec.targets(loaded)
    assert PASSWORD not in caught.value.message


def staging_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, staging: str,
                 fleet_toml: str = TWO_TARGETS) -> fleet_spec.Fleet:
    window = WINDOW_TOML + f"\n[staging]\n{staging}\n"
    loaded = fleet_spec.load(write(tmp_path, fleet_toml, window))
    for name in ("EU1_URL", "EU2_URL", "DATABASE_URL_STAGING", "EU1_STAGING"):
        monkeypatch.setenv(name, f"postgresql://app:pw@{name.lower()}/shop")
    return loaded


def test_concurrent_rehearsals_on_one_staging_database_are_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = staging_case(tmp_path, monkeypatch, 'mode = "url"')
    found = fleet_spec.targets(loaded)
    with pytest.raises(ConfigError, match="several targets would rehearse on the one staging"
                                          r" database \(DATABASE_URL_STAGING\) at once"):
        fleet_spec.check_staging(loaded, found, skip_staging=False)
    with pytest.raises(UsageError, match=r"also needs \[staging\] skip = true"):
        fleet_spec.check_staging(loaded, found, skip_staging=True)


@pytest.mark.parametrize(("staging", "fleet_toml", "skip"), [
    ('mode = "clone"', TWO_TARGETS, False),  # each rehearsal on its own scratch copy
    ("skip = true", TWO_TARGETS, True),
    ('mode = "url"', TWO_TARGETS.replace("concurrency = 2", "concurrency = 1"), False),
    ('mode = "url"', TWO_TARGETS.replace('"EU1_URL"', '"EU1_URL"\nstaging_url_env = "EU1_STAGING"')
     .replace('"EU2_URL"', '"EU2_URL"\nstaging_url_env = "DATABASE_URL_STAGING"'), False),
])
def test_rehearsals_that_cannot_collide_are_allowed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, staging: str, fleet_toml: str,
        skip: bool) -> None:
    loaded = staging_case(tmp_path, monkeypatch, staging, fleet_toml)
    fleet_spec.check_staging(loaded, fleet_spec.targets(loaded), skip_staging=skip)


def test_the_shared_staging_variable_must_be_set(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = staging_case(tmp_path, monkeypatch, 'mode = "clone"')
    monkeypatch.delenv("DATABASE_URL_STAGING")
    with pytest.raises(ConfigError, match="DATABASE_URL_STAGING is not set"):
        fleet_spec.check_staging(loaded, fleet_spec.targets(loaded), skip_staging=False)


def test_a_clone_beside_production_needs_no_staging_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = staging_case(tmp_path, monkeypatch, 'mode = "clone"\nclone_on = "production"')
    monkeypatch.delenv("DATABASE_URL_STAGING")

    fleet_spec.check_staging(loaded, fleet_spec.targets(loaded), skip_staging=False)

    assert loaded.settings.staging.needs_url is False


def test_waves_put_the_canary_alone_first_then_the_rest_in_order() -> None:
    names = ["a", "b", "c", "d", "e", "f"]
    assert fleet_spec.waves(names, "a", 2) == [["a"], ["b", "c"], ["d", "e"], ["f"]]
    assert fleet_spec.waves(names, "d", 4) == [["d"], ["a", "b", "c", "e"], ["f"]]
    assert fleet_spec.waves(["a"], "a", 3) == [["a"]]
    assert fleet_spec.waves(names, "a", 1) == [["a"], ["b"], ["c"], ["d"], ["e"], ["f"]]


WAVES = [["a"], ["b", "c"], ["d", "e"]]


def views(**states: str) -> dict[str, View]:
    """Every target pending unless named: ``b="completed"``, ``c="migrate"``."""
    codes = {"completed": 0, "rolled_back": 1, "aborted": 3, "needs_attention": 4}
    found = {}
    for name in "abcde":
        st = states.get(name, PENDING)
        found[name] = View(name, st) if st == PENDING else \
            View(name, st, f"run_{name}", codes.get(st))
    return found


def test_plan_starts_the_canary_alone() -> None:
    step = fleet.next_step(WAVES, views(), aborted=False)
    assert (step.drive, step.wave, step.failed, step.over) == (["a"], 0, None, False)
    step = fleet.next_step(WAVES, views(a="backup"), aborted=False)
    assert step.drive == ["a"]  # driven to its end, whoever runs it


def test_plan_starts_a_wave_only_when_every_earlier_target_completed() -> None:
    assert fleet.next_step(WAVES, views(a="completed"), aborted=False).drive == ["b", "c"]
    step = fleet.next_step(WAVES, views(a="completed", b="completed", c="migrate"), aborted=False)
    assert (step.drive, step.wave) == (["c"], 1)
    step = fleet.next_step(WAVES, views(a="completed", b="completed", c="completed"),
                      aborted=False)
    assert (step.drive, step.wave) == (["d", "e"], 2)
    done = fleet.next_step(WAVES, views(**dict.fromkeys("abcde", "completed")), aborted=False)
    assert (done.drive, done.wave, done.over) == ([], None, True)


def test_a_failure_stops_new_targets_but_in_flight_ones_finish() -> None:
    step = fleet.next_step(WAVES, views(a="completed", b="rolled_back", c="post_check"),
                      aborted=False)
    assert (step.drive, step.failed, step.over) == (["c"], "b", False)
    step = fleet.next_step(WAVES, views(a="completed", b="rolled_back", c="completed"),
                      aborted=False)
    assert (step.drive, step.failed, step.over, step.wave) == ([], "b", True, 1)


def test_an_aborted_fleet_drives_nothing() -> None:
    step = fleet.next_step(WAVES, views(a="completed", b="migrate"), aborted=True)
    assert (step.drive, step.over) == ([], True)


def test_a_target_that_ran_no_window_counts_by_its_exit_code() -> None:
    nothing_pending = View("a", NOT_RUN, exit_code=0, note="nothing to do")
    refused = View("b", NOT_RUN, exit_code=3, note="refused")
    step = fleet.next_step(WAVES, {**views(), "a": nothing_pending}, aborted=False)
    assert step.drive == ["b", "c"]
    step = fleet.next_step(WAVES, {**views(a="completed"), "b": refused}, aborted=False)
    assert (step.failed, step.drive) == ("b", [])


@pytest.mark.parametrize(("states", "interrupted", "code"), [
    ({"a": "completed", "b": "completed", "c": "completed"}, False, 0),
    ({"a": "completed", "b": "rolled_back", "c": "needs_attention"}, False, 4),
    ({"a": "completed", "b": "aborted", "c": "rolled_back"}, False, 1),
    ({"a": "completed", "b": "aborted"}, False, 3),
    ({"a": "completed", "b": "migrate"}, True, 5),
    ({"a": "completed", "b": "rolled_back"}, True, 1),
    ({"a": "completed"}, False, 3),  # the rest never started (an aborted fleet)
])
def test_the_fleets_exit_code_is_its_worst_targets(states: dict[str, str], interrupted: bool,
                                                  code: int) -> None:
    found = views(**states)
    assert fleet.exit_code([found[n] for n in "abc"], interrupted=interrupted) == code


def record(fleet_id: str = "fleet_1", **changes: object) -> Record:
    base = Record(fleet_id, ["a", "b", "c"], "a", 2, False, 1.0, "ops", "host")
    return replace(base, **changes)  # type: ignore[arg-type]


def test_one_process_at_a_time_drives_a_fleet_run(tmp_path: Path) -> None:
    loaded = fleet_spec.load(write(tmp_path, TWO_TARGETS))
    with fleet_runner.fleet_hold(loaded, "run"):
        with pytest.raises(Busy) as refused, fleet_runner.fleet_hold(loaded, "resume"):
            pytest.fail("a second runner drives the fleet run")
        with fleet_runner.fleet_hold(loaded.__class__(  # another fleet: its own lock
                loaded.path, loaded.spec, loaded.settings.for_target("eu-1")), "run"):
            pass
    sentence = refused.value.message
    assert refused.value.exit_code == 6 and sentence.count(". ") == 0, sentence
    assert f"pid {os.getpid()} on this machine" in sentence
    assert '[engine] kind = "celery"' in sentence and "`window init --fleet`" in sentence
    with fleet_runner.fleet_hold(loaded, "resume"):  # released with the first
        pass


def test_an_abort_and_the_endings_apply_to_their_fleet_run_only(tmp_path: Path) -> None:
    store = blobs.LocalStore(tmp_path)
    fleet.write_record(store, fleet.ending("stopped", "b rolled back")(record()))
    stopped = fleet.read_record(store)
    assert stopped is not None and fleet.ending("stopped", "c rolled back")(stopped) == stopped
    fleet.request_abort(store, stopped)
    after = fleet.read_record(store)
    assert after is not None and after.ended == "aborted"
    assert after.reason is not None and after.reason.startswith("b rolled back; then aborted by")
    assert fleet.ending("completed", "")(after) == after
    fleet.write_record(store, record("fleet_2"))  # the next fleet run is not aborted
    assert fleet.read_record(store) == record("fleet_2")


def test_status_table_and_report_name_every_target() -> None:
    rec = record(ended="stopped", reason="b ended rolled_back (exit 1)")
    found = [View("a", "completed", "run_a", 0, 10.0, 20.0),
             View("b", "rolled_back", "run_b", 1, 30.0, 40.0), View("c", "migrate", "run_c")]
    facts = fleet.report(rec, found, {"c": False})
    assert (facts["state"], facts["wave"], facts["stopped_by"], facts["exit_code"]) == \
        ("stopping", 1, "b", 1)  # c is still in flight
    assert [(t["name"], t["wave"], t["state"]) for t in facts["targets"]] == \
        [("a", 0, "completed"), ("b", 1, "rolled_back"), ("c", 1, "migrate")]
    assert [t["interrupted"] for t in facts["targets"]] == [False, False, True]
    text = fleet.table(facts)
    assert "migrate (interrupted)" in text
    assert "fleet run fleet_1: stopping (b ended rolled_back (exit 1))" in text
    assert "run_b" in text


EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "fleet.example.toml"


def test_the_annotated_example_is_a_valid_fleet_file() -> None:
    text = EXAMPLE.read_text()
    spec = fleet_spec.FleetFile.model_validate(tomllib.loads(text))
    assert [t.name for t in spec.targets] == ["eu-small", "eu-large", "us-east"]
    assert (spec.canary, spec.concurrency) == ("eu-small", 2)
    head, catalog = text.split("# [catalog]")
    uncommented = head.split("[[targets]]")[0] + "[catalog]" + catalog.replace("\n# ", "\n")
    spec = fleet_spec.FleetFile.model_validate(tomllib.loads(uncommented.replace(
        'canary = "eu-small"', "")))
    assert spec.catalog is not None and spec.catalog.statement_timeout == 30.0
