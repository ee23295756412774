"""The per-epoch metrics buffer when no MLflow server answers at all."""

import logging

import pytest

from conftest import free_port
from sasrec.errors import SASRecError
from sasrec.tracking import BufferedMetricsLogger


def test_a_server_away_too_long_is_one_error_and_no_message_shows_the_login(monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://alice:pw-SECRET@127.0.0.1:{free_port()}"  # nothing listens there
    buffer = BufferedMetricsLogger(uri, "0" * 32, max_outage_s=2)
    with caplog.at_level(logging.WARNING):
        buffer({"train_loss": 1.0}, 1)  # returns at once: training does not wait
        buffer({"train_loss": 0.5}, 2)
        with pytest.raises(SASRecError, match="MLflow did not answer for 2 s") as raised:
            buffer.close()
    assert "MLflow did not take the metrics" in caplog.text
    assert "pw-SECRET" not in caplog.text + str(raised.value)
    assert "127.0.0.1" in str(raised.value)
