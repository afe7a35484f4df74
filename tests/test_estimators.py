"""The estimator seam (service/core/estimators/): the registry and the setting that selects
a model, the ``linear`` estimator against the ``hinge``, caches on the instance, and a
model reading the queue's snapshot."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from service.core.estimate import DrinkEstimate
from service.core.estimators.base import EstimateOptions, OpenOrder, QueueSnapshot, Sample
from service.core.estimators.hinge import MIN_TRAINING, HingeEstimator, Model
from service.core.estimators.registry import (
    DEFAULT_ESTIMATOR,
    ESTIMATORS,
    UnknownEstimatorError,
    estimate_options,
)
from service.core.orders import OrderEvent, Role
from service.core.pairing import OrderRecord
from service.core.tenant import TenantState, view_of
from service.core.tenant_index import EstimateBook
from service.settings import Settings

pytestmark = pytest.mark.unit

MAX_WAIT = 7200
WAIT_TIMES = str(Path(sys.executable).with_name("wait-times"))

# Two baristas, 100 s an order: past one ahead, each order ahead adds 50 s.
TWO_BARISTAS = [Sample("Latte", ahead, 100 + 50 * max(0, ahead - 1)) for ahead in range(12)]


def queue(ahead: int) -> QueueSnapshot:
    return QueueSnapshot(1000, tuple(OpenOrder(f"o{i}", 900 + i, "Latte") for i in range(ahead)))


def test_the_registry_makes_each_estimator_by_name_and_refuses_others() -> None:
    assert set(ESTIMATORS) >= {"hinge", "linear"}
    for name in ESTIMATORS:
        options = estimate_options(MAX_WAIT, name)
        assert options.name == name and options.max_wait_seconds == MAX_WAIT
        assert options.estimator.learn(TWO_BARISTAS) is not None
    with pytest.raises(UnknownEstimatorError) as refused:
        estimate_options(MAX_WAIT, "quadratic")
    names = ", ".join(sorted(ESTIMATORS))
    assert str(refused.value) == f"unknown estimator 'quadratic': choose one of {names}"
    assert "hinge, linear" in names


def test_the_settings_default_is_the_registrys_and_each_options_value_its_own_estimator() -> None:
    assert Settings.model_fields["estimator"].default == DEFAULT_ESTIMATOR
    first, second = estimate_options(MAX_WAIT), estimate_options(MAX_WAIT)
    assert first.estimator is not second.estimator  # caches are never shared by accident
    assert first == second  # (the instance is not part of the value)


def test_linear_holds_the_knee_at_one_where_the_hinge_learns_two() -> None:
    hinge = estimate_options(MAX_WAIT, "hinge").estimator.learn(TWO_BARISTAS)
    linear = estimate_options(MAX_WAIT, "linear").estimator.learn(TWO_BARISTAS)
    assert isinstance(hinge, Model) and isinstance(linear, Model)
    assert (hinge.knee, linear.knee) == (2, 1)
    assert hinge.predict(queue(0))["Latte"].estimate == 100.0
    assert linear.predict(queue(0))["Latte"].estimate != 100.0  # a line misses the knee
    # A line through every sample: the least squares of both models is that line.
    line = [Sample("Latte", ahead, 60 + 30 * ahead) for ahead in range(10)]
    fitted = estimate_options(MAX_WAIT, "linear").estimator.learn(line)
    assert fitted is not None
    assert fitted.predict(queue(4))["Latte"].estimate == 180.0


def test_a_model_predicts_from_the_open_orders_of_the_snapshot() -> None:
    model = HingeEstimator(MAX_WAIT).learn(TWO_BARISTAS)
    assert model is not None
    assert model.predict(queue(9)) == model.predict_all(9)
    assert model.predict(queue(9))["Latte"].estimate == 100 + 50 * 8
    assert model.predict(queue(0)) != model.predict(queue(9))


def test_the_estimator_caches_its_fits_on_the_instance_and_needs_enough_samples() -> None:
    estimator = HingeEstimator(MAX_WAIT)
    assert estimator.learn(TWO_BARISTAS[: MIN_TRAINING - 1]) is None
    first = estimator.learn(TWO_BARISTAS)
    assert estimator.learn(list(TWO_BARISTAS)) is first  # the same samples: cached
    other = HingeEstimator(MAX_WAIT).learn(TWO_BARISTAS)
    assert other == first and other is not first  # another instance fits its own


class Recorder:
    """An estimator that predicts the number of open orders, recording what it is given."""

    def __init__(self) -> None:
        self.learned: list[list[Sample]] = []
        self.queues: list[QueueSnapshot] = []

    def learn(self, samples: Sequence[Sample]) -> Recorder:
        self.learned.append(list(samples))
        return self

    def predict(self, queue: QueueSnapshot) -> dict[str, DrinkEstimate]:
        self.queues.append(queue)
        return {"any": DrinkEstimate(float(len(queue.open_orders)), 0.0)}


def event(role: Role, order_id: str, at: int, drink: str = "Latte") -> OrderEvent:
    if role is Role.SUBMITTED:
        return OrderEvent(role, order_id, at, "NYC", drink)
    return OrderEvent(role, order_id, at)


@pytest.mark.parametrize("shape", ["state", "book"])
def test_both_shapes_give_the_estimator_the_samples_and_the_queues_open_orders(
    shape: str,
) -> None:
    """The worker's state and replay's indexed book hand the options' estimator the same
    training samples and a snapshot of the open orders, with their submission and drink."""
    recorder = Recorder()
    options = EstimateOptions(MAX_WAIT, recorder, "recorder")
    history = [
        [event(Role.SUBMITTED, "a", 100), event(Role.COMPLETED, "a", 160)],
        [event(Role.SUBMITTED, "b", 150, "Mocha")],
        [event(Role.SUBMITTED, "c", 170, "Tea"), event(Role.CANCELLED, "c", 180)],
    ]
    records = [OrderRecord(events[0].order_id) for events in history]
    records = [
        functools.reduce(OrderRecord.merge, events, record)
        for record, events in zip(records, history, strict=True)
    ]
    if shape == "state":
        view = view_of(TenantState("NYC").add(records), 10**9, options)
    else:
        (published,) = EstimateBook(options).update(records, 10**9)
        view = published.estimate
    assert view is not None and view.as_of == 180 and view.open_orders == 1
    assert view.drinks == {"any": DrinkEstimate(1.0, 0.0)}
    assert recorder.learned[-1] == [Sample("Latte", 0, 60)]
    assert recorder.queues[-1] == QueueSnapshot(180, (OpenOrder("b", 150, "Mocha"),))


def test_the_cli_refuses_an_unknown_estimator_as_an_invalid_setting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAIT_TIMES_")}
    env["WAIT_TIMES_ESTIMATOR"] = "quadratic"
    events = tmp_path / "none.json"
    events.write_text("[]")
    result = subprocess.run(
        [WAIT_TIMES, "replay", "--estimates", str(events)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "wait-times: invalid setting WAIT_TIMES_ESTIMATOR='quadratic': unknown estimator "
        f"'quadratic': choose one of {', '.join(sorted(ESTIMATORS))}"
    ]
