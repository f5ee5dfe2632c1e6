"""The outbox that carries run data to MLflow: order, outages, refusals, the spool and its replay."""

import threading

import pytest
from mlflow.exceptions import RestException
from mlflow.tracking import MlflowClient

from crnn.cli import main
from crnn.outbox import Batch, Outbox, read_spool


class Server:
    """A send function standing in for the network: down (ConnectionError) until ``up`` is set."""

    def __init__(self, up: bool = True):
        self.up = threading.Event()
        if up:
            self.up.set()
        self.received: list[Batch] = []
        self.attempts = 0

    def __call__(self, batch: Batch) -> None:
        self.attempts += 1
        if not self.up.is_set():
            raise ConnectionError("connection refused")
        self.received.append(batch)


def metric(step: int) -> Batch:
    return Batch(metrics=[("loss", float(step), 1000 + step, step)])


def steps_received(server: Server) -> list[int]:
    return [m[3] for batch in server.received for m in batch.metrics]


def test_values_arrive_in_order_and_the_report_counts_them(tmp_path):
    server = Server()
    outbox = Outbox(server, tmp_path / "spool.jsonl")
    for step in range(1, 51):
        outbox.put(metric(step))
    outbox.put(Batch(params={"lr": "0.1"}, tags={"t": "x"}))
    report = outbox.close(timeout_seconds=10)
    assert steps_received(server) == list(range(1, 51))
    assert server.received[-1].params == {"lr": "0.1"}
    assert (report.sent, report.delayed, report.unsent, report.spool) == (52, 0, 0, None)
    assert not (tmp_path / "spool.jsonl").exists()


def test_an_outage_holds_the_values_and_sends_them_when_the_server_returns(tmp_path):
    server = Server(up=False)
    outbox = Outbox(server, tmp_path / "spool.jsonl", retry_seconds=0.05)
    for step in range(1, 21):
        outbox.put(metric(step))  # never blocks, whatever the server does
    assert not outbox.flush(timeout_seconds=0.5)
    assert server.attempts >= 2 and not server.received
    server.up.set()
    report = outbox.close(timeout_seconds=10)
    assert steps_received(server) == list(range(1, 21))
    assert len(server.received) < 20  # the backlog went in merged requests
    assert report.delayed == report.sent == 20 and report.outage_seconds >= 0.4
    assert "20 of them delayed" in report.describe()


def test_a_refused_batch_is_counted_and_the_rest_still_go(tmp_path):
    sent: list[Batch] = []

    def send(batch: Batch) -> None:
        if "bad" in batch.params:
            raise RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "Changing param values"})
        sent.append(batch)

    outbox = Outbox(send, tmp_path / "spool.jsonl")
    outbox.put(Batch(params={"bad": "2"}))
    assert outbox.flush(5)
    outbox.put(metric(1))
    report = outbox.close(5)
    assert report.rejected == 1 and report.sent == 1 and [b.metrics for b in sent] == [metric(1).metrics]


def test_what_is_left_at_close_is_spooled_and_replays_into_a_real_store(tmp_path, sqlite_tracking, capsys):
    client = MlflowClient(sqlite_tracking)
    run_id = client.create_run(client.create_experiment("outbox")).info.run_id
    spool = tmp_path / f"{run_id}.jsonl"
    outbox = Outbox(Server(up=False), spool, retry_seconds=0.05)
    for step in range(1, 6):
        outbox.put(metric(step))
    outbox.put(Batch(params={"preset": "tiny"}))
    outbox.put(Batch(status="FINISHED", end_time=5000))
    report = outbox.close(timeout_seconds=0.3)
    assert report.sent == 0 and report.unsent == 5 + 1 + 1 and report.spool == spool
    assert "not sent, kept in" in report.describe()
    assert [b.status for b in read_spool(spool)][-1] == "FINISHED"
    with pytest.raises(RuntimeError, match="closed"):
        outbox.put(metric(9))

    assert main(["tracking-replay", str(spool), "--tracking-uri", sqlite_tracking]) == 0
    assert "sent 7 values" in capsys.readouterr().out
    run = client.get_run(run_id)
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3, 4, 5]
    assert run.data.params == {"preset": "tiny"} and run.info.status == "FINISHED"


def test_the_end_of_a_run_is_never_merged_ahead_of_later_values(tmp_path):
    server = Server(up=False)
    outbox = Outbox(server, tmp_path / "spool.jsonl", retry_seconds=0.05)
    outbox.put(metric(1))
    outbox.put(Batch(status="FINISHED", end_time=1))
    outbox.put(metric(2))
    server.up.set()
    outbox.close(5)
    assert [b.status for b in server.received][-2:] == ["FINISHED", None]
