"""fleet.toml's [engine]: what it accepts, the broker URL it reads, and the broker timeouts
the Celery engine derives from the window's phase deadlines (no broker needed here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from orchestrator.fleet import celery_engine
from orchestrator.fleet import spec as fleet_spec
from tests.unit.test_fleet import WINDOW_TOML, write

TARGETS = '[[targets]]\nname = "a"\nurl_env = "A_URL"\n'


def test_engine_defaults_to_the_builtin_runner(tmp_path: Path) -> None:
    loaded = fleet_spec.load(write(tmp_path, TARGETS))
    assert loaded.spec.engine.kind == "builtin"


@pytest.mark.parametrize(("engine", "says"), [
    ('kind = "celery"', 'needs broker_env'),
    ('broker_env = "B"', "broker_env is for kind = \"celery\" only"),
    ('kind = "airflow"', "celery"),
    ('kind = "celery"\nbroker_env = "B"\nqueue = "a b"', "queue"),
    ('kind = "celery"\nbroker_env = "B"\nbroker = "amqp://x"', "broker"),
])
def test_a_bad_engine_is_one_sentence(tmp_path: Path, engine: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        fleet_spec.load(write(tmp_path, f"{TARGETS}\n[engine]\n{engine}\n"))


def test_the_broker_url_comes_from_its_variable_and_must_be_a_broker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = fleet_spec.load(write(tmp_path, f'{TARGETS}\n[engine]\nkind = "celery"\n'
                                             'broker_env = "B"\n'))
    monkeypatch.delenv("B", raising=False)
    with pytest.raises(ConfigError, match="B is not set"):
        fleet_spec.broker_url(loaded)
    monkeypatch.setenv("B", "postgresql://u:p@h/db")
    with pytest.raises(ConfigError, match="amqp:// or redis://"):
        fleet_spec.broker_url(loaded)
    monkeypatch.setenv("B", "redis://:pw-of-redis@127.0.0.1:6379/3")
    assert fleet_spec.broker_url(loaded).endswith("/3")


def test_the_brokers_wait_longer_than_the_longest_window(tmp_path: Path) -> None:
    fleet_toml = f'{TARGETS}\n[engine]\nkind = "celery"\nbroker_env = "B"\n'
    loaded = fleet_spec.load(write(tmp_path, fleet_toml,
                                   WINDOW_TOML + '\n[timeouts]\nmigrate = "5h"\n'))
    longest = fleet_spec.max_window_seconds(loaded.settings)
    assert longest > 5 * 3600
    assert celery_engine.ack_timeout(loaded) == longest + 3600
    loaded = fleet_spec.load(write(tmp_path, fleet_toml + 'visibility_timeout = "30h"\n'))
    assert celery_engine.ack_timeout(loaded) == 30 * 3600


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/3", "amqp://guest:guest@127.0.0.1//"])
def test_tasks_are_acknowledged_late_and_outlive_the_window(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("B", url)
    loaded = fleet_spec.load(write(tmp_path, f'{TARGETS}\n[engine]\nkind = "celery"\n'
                                             'broker_env = "B"\nqueue = "q1"\n'))
    app = celery_engine.make_app(loaded)
    conf, timeout = app.conf, celery_engine.ack_timeout(loaded)
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost,
            conf.worker_prefetch_multiplier) == (True, True, 1)
    [queue] = conf.task_queues
    assert queue.name == "q1" and celery_engine.TASK in app.tasks
    if url.startswith("redis"):
        assert conf.broker_transport_options == {"visibility_timeout": round(timeout)}
    else:
        assert queue.queue_arguments == {"x-consumer-timeout": round(timeout * 1000)}
