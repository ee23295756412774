"""The per-epoch metrics buffer when no MLflow server answers at all."""

import logging

import pytest

from conftest import free_port
from sasrec.errors import SASRecError
from sasrec.training.epoch_metrics import BufferedMetricsLogger


def record(epoch: int, loss: float) -> dict:
    return {
        "epoch": epoch,
        "timestamp_ms": 1_700_000_000_000 + epoch,
        "metrics": {"train_loss": loss},
    }


def test_a_server_away_too_long_is_one_error_and_no_message_shows_the_login(monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://alice:pw-SECRET@127.0.0.1:{free_port()}"  # nothing listens there
    buffer = BufferedMetricsLogger(uri, "0" * 32, max_outage_s=2)
    with caplog.at_level(logging.WARNING):
        buffer.put(record(1, 1.0))  # returns at once: training does not wait
        buffer.put(record(2, 0.5))
        with pytest.raises(SASRecError, match="did not take the epoch metrics in 2 s") as raised:
            buffer.close()
    assert "MLflow did not take the metrics" in caplog.text
    assert "pw-SECRET" not in caplog.text + str(raised.value)
    assert "127.0.0.1" in str(raised.value)
