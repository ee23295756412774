"""Downloads that survive faults: a real HTTP server on 127.0.0.1 with Range support that
drops connections, answers 500, or sends fewer bytes than it announced, on request."""

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sasrec.data import download
from sasrec.data.download import cache_path, fetch_to_cache
from sasrec.errors import SASRecError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SERVERS: dict[str, http.server.ThreadingHTTPServer] = {}


class FaultyHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at any path; each request takes the next fault from `faults`."""

    faults: list[str]
    requests_seen: list[tuple[str, str | None]]

    def log_message(self, format: str, *args: object) -> None:
        del format, args

    def do_GET(self) -> None:
        self.requests_seen.append((self.path, self.headers.get("Range")))
        fault = self.faults.pop(0) if self.faults else "ok"
        if fault in ("500", "404"):
            self.send_error(int(fault))
            return
        start = 0
        if self.headers.get("Range") and fault != "ignore-range":
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault == "drop":  # half the body, then the connection goes away
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if fault == "short":  # announced more than it sends
            self.wfile.write(body[:-1000])
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def faulty_server() -> Iterator[tuple[str, list[str], list]]:
    faults: list[str] = []
    seen: list[tuple[str, str | None]] = []
    handler = type("Handler", (FaultyHandler,), {"faults": faults, "requests_seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/data/reviews.jsonl.gz"
    SERVERS[url] = server
    yield url, faults, seen
    server.shutdown()
    server.server_close()


def range_start(header: str) -> int:
    return int(header.removeprefix("bytes=").rstrip("-"))


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(download, "RETRY_BACKOFF_SECONDS", 0.01)


def test_dropped_connection_resumes_with_a_range_request(faulty_server, tmp_path):
    url, faults, seen = faulty_server
    faults += ["drop", "drop"]
    local = fetch_to_cache(url, tmp_path)
    assert local.read_bytes() == PAYLOAD
    # Each retry asks only for what is missing.
    assert [r for _, r in seen] == [
        None,
        f"bytes={len(PAYLOAD) // 2}-",
        f"bytes={len(PAYLOAD) * 3 // 4}-",
    ]
    assert not local.with_name(local.name + ".part").exists()


def test_server_error_is_retried(faulty_server, tmp_path):
    url, faults, seen = faulty_server
    faults += ["500"]
    assert fetch_to_cache(url, tmp_path).read_bytes() == PAYLOAD
    assert len(seen) == 2


def test_404_is_not_retried_and_names_the_url(faulty_server, tmp_path):
    url, faults, seen = faulty_server
    faults += ["404"]
    with pytest.raises(SASRecError, match=r"reviews\.jsonl\.gz failed: HTTP 404"):
        fetch_to_cache(url, tmp_path)
    assert len(seen) == 1
    assert not cache_path(url, tmp_path).exists()


def test_a_body_shorter_than_announced_is_detected_and_completed(faulty_server, tmp_path):
    url, faults, seen = faulty_server
    faults += ["short"]
    assert fetch_to_cache(url, tmp_path).read_bytes() == PAYLOAD
    assert 0 < range_start(seen[1][1]) <= len(PAYLOAD) - 1000


def test_persistent_faults_fail_clearly_and_a_later_run_resumes(faulty_server, tmp_path):
    url, faults, seen = faulty_server
    faults += ["500"] * download.DOWNLOAD_ATTEMPTS
    with pytest.raises(SASRecError, match="failed after 5 attempts: HTTP 500"):
        fetch_to_cache(url, tmp_path)
    assert not cache_path(url, tmp_path).exists()
    # A killed run: half a file is left behind; the next run continues it.
    partial = cache_path(url, tmp_path).with_name("reviews.jsonl.gz.part")
    partial.write_bytes(PAYLOAD[:300_000])
    seen.clear()
    assert fetch_to_cache(url, tmp_path).read_bytes() == PAYLOAD
    assert seen == [("/data/reviews.jsonl.gz", "bytes=300000-")]


def test_server_without_ranges_restarts_from_zero(faulty_server, tmp_path):
    url, faults, _ = faulty_server
    partial = cache_path(url, tmp_path).with_name("reviews.jsonl.gz.part")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"x" * 1000)
    faults += ["ignore-range"]
    assert fetch_to_cache(url, tmp_path).read_bytes() == PAYLOAD


def test_sha256_in_the_url_is_checked(faulty_server, tmp_path):
    url, _, _ = faulty_server
    good = hashlib.sha256(PAYLOAD).hexdigest()
    assert fetch_to_cache(f"{url}#sha256={good}", tmp_path / "a").read_bytes() == PAYLOAD
    with pytest.raises(SASRecError, match=f"expected {'0' * 64}"):
        fetch_to_cache(f"{url}#sha256={'0' * 64}", tmp_path / "b")
    assert not any(p.is_file() for p in (tmp_path / "b").rglob("*"))


def test_second_run_works_offline_from_the_cache(faulty_server, tmp_path):
    url, _, seen = faulty_server
    fetch_to_cache(url, tmp_path)
    SERVERS[url].shutdown()  # the network is gone
    SERVERS[url].server_close()
    assert Path(fetch_to_cache(url, tmp_path)).read_bytes() == PAYLOAD
    assert len(seen) == 1
