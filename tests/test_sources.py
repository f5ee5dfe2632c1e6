"""Every source against a real server on loopback: HTTP (dropped connections, 5xx, wrong bytes), S3 (moto in
server mode), a mirror, and the catalog's download path end to end."""

import hashlib
import http.server
import io
import json
import tarfile

import pytest

from crnn.data.catalog import DatasetEntry, RemoteFile, Split, load_catalog
from crnn.data.download import download_all
from crnn.data.fetch import ChecksumError, RetryPolicy, fetch
from tests.loopback_api import serve_handler

FAST_RETRY = RetryPolicy(attempts=4, first_delay_s=0.01, timeout_s=10)
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``; the first ``server.drops`` responses stop halfway and close the connection,
    the first ``server.failures`` answer 503. Honours ``Range: bytes=N-``."""

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        if server.failures > 0:
            server.failures -= 1
            self.send_error(503)
            return
        asked = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        start = 0 if server.ignore_range else asked
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.drops > 0:
            server.drops -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = serve_handler(_Handler)
    server.files, server.requests, server.drops, server.failures = {}, [], 0, 0
    server.ignore_range = False
    yield server
    server.shutdown()
    server.server_close()


def test_dropped_connections_are_resumed_with_range_requests(http_server, tmp_path):
    http_server.files["/data.bin"] = PAYLOAD
    http_server.drops = 2
    dest = fetch(f"{http_server.base}/data.bin", tmp_path / "data.bin",
                 sha256=hashlib.sha256(PAYLOAD).hexdigest(), retry=FAST_RETRY)
    assert dest.read_bytes() == PAYLOAD
    ranges = [r for _, r in http_server.requests]
    assert ranges[0] is None
    assert ranges[1] == f"bytes={len(PAYLOAD) // 2}-"  # resumed where the first response stopped
    assert len(ranges) == 3
    assert list(tmp_path.iterdir()) == [dest]


def test_a_server_that_ignores_ranges_gets_the_file_started_over(http_server, tmp_path):
    http_server.files["/data.bin"] = PAYLOAD
    http_server.drops, http_server.ignore_range = 1, True
    dest = fetch(f"{http_server.base}/data.bin", tmp_path / "data.bin",
                 sha256=hashlib.sha256(PAYLOAD).hexdigest(), retry=FAST_RETRY)
    assert dest.read_bytes() == PAYLOAD  # not the first half twice


def test_credentials_in_urls_are_kept_out_of_records_and_errors(http_server, tmp_path):
    from crnn.data.fetch import redact

    assert redact("https://user:secret@host:8443/a/b.zip?X-Amz-Signature=abc") == "https://host:8443/a/b.zip"
    assert redact("/plain/path.zip") == "/plain/path.zip"
    secret_base = http_server.base.replace("http://", "http://reader:hunter2@")
    with pytest.raises(ConnectionError) as err:
        fetch(f"{secret_base}/nope.bin?token=hunter2", tmp_path / "x", retry=FAST_RETRY)
    assert "hunter2" not in str(err.value)
    archive = _svtp_archive()
    http_server.files["/m/SVTP/svtp.tar.gz"] = archive
    download_all([_entry(archive)], tmp_path / "raw", mirror=f"{secret_base}/m")
    assert "hunter2" not in (tmp_path / "raw" / "datasets.json").read_text()


def test_server_errors_are_retried(http_server, tmp_path):
    http_server.files["/data.bin"] = PAYLOAD
    http_server.failures = 2
    fetch(f"{http_server.base}/data.bin", tmp_path / "data.bin", md5=hashlib.md5(PAYLOAD).hexdigest(),
          retry=FAST_RETRY)
    assert len(http_server.requests) == 3


def test_wrong_checksum_fails_cleanly_and_leaves_nothing_to_trust(http_server, tmp_path):
    http_server.files["/data.bin"] = PAYLOAD
    with pytest.raises(ChecksumError) as err:
        fetch(f"{http_server.base}/data.bin", tmp_path / "data.bin", sha256="ab" * 32, retry=FAST_RETRY)
    assert "ab" * 32 in str(err.value) and hashlib.sha256(PAYLOAD).hexdigest() in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_and_exhausted_retries_are_clear_errors(http_server, tmp_path):
    with pytest.raises(ConnectionError, match="HTTP 404"):
        fetch(f"{http_server.base}/nope.bin", tmp_path / "x", retry=FAST_RETRY)
    http_server.files["/data.bin"] = PAYLOAD
    http_server.failures = 10
    with pytest.raises(ConnectionError, match="HTTP 503"):
        fetch(f"{http_server.base}/data.bin", tmp_path / "x", retry=FAST_RETRY)


@pytest.fixture
def s3(monkeypatch):
    """A real S3-compatible server (moto in server mode) on loopback, and a client configured like a user's."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket="datasets")
    yield client
    server.stop()


def test_s3_source_fetches_with_endpoint_and_credentials_from_the_environment(s3, tmp_path):
    s3.put_object(Bucket="datasets", Key="raw/data.bin", Body=PAYLOAD)
    dest = fetch("s3://datasets/raw/data.bin", tmp_path / "data.bin", sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert dest.read_bytes() == PAYLOAD
    with pytest.raises(FileNotFoundError, match=r"s3://datasets/raw/absent\.bin: S3 answered (404|NoSuchKey)"):
        fetch("s3://datasets/raw/absent.bin", tmp_path / "absent.bin")
    assert not (tmp_path / "absent.bin").exists()


def _svtp_archive() -> bytes:
    from tests.layouts import word_png

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in {"svtp/gt.txt": b"1.jpg WYNDHAM\n", "svtp/1.jpg": word_png("WYNDHAM")}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _entry(archive: bytes) -> DatasetEntry:
    return DatasetEntry("SVTP", "svtp", "benchmark",
                        (RemoteFile("svtp.tar.gz", "https://example.invalid/svtp.tar.gz",
                                    sha256=hashlib.sha256(archive).hexdigest()),),
                        {"test": Split("svtp/gt.txt")})


def test_s3_endpoint_from_mlflows_variable_when_boto3s_is_unset(s3, tmp_path, monkeypatch):
    """A MinIO that serves MLflow's artifacts (MLFLOW_S3_ENDPOINT_URL) serves an s3:// mirror too."""
    import os

    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", os.environ["AWS_ENDPOINT_URL"])
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    s3.put_object(Bucket="datasets", Key="raw/data.bin", Body=PAYLOAD)
    assert fetch("s3://datasets/raw/data.bin", tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_mirror_over_http_keeps_checksums_and_is_not_fetched_twice(http_server, tmp_path):
    archive = _svtp_archive()
    http_server.files["/mirror/SVTP/svtp.tar.gz"] = archive
    records = download_all([_entry(archive)], tmp_path, mirror=f"{http_server.base}/mirror")
    assert records[0]["files"][0]["url"] == f"{http_server.base}/mirror/SVTP/svtp.tar.gz"
    assert (tmp_path / "SVTP" / "svtp" / "gt.txt").read_text() == "1.jpg WYNDHAM\n"
    listing = json.loads((tmp_path / "datasets.json").read_text())["datasets"]
    assert listing[0]["splits"]["test"]["index"] == "SVTP/svtp/gt.txt"

    download_all([_entry(archive)], tmp_path, mirror=f"{http_server.base}/mirror")
    assert len(http_server.requests) == 1  # present and verified: not fetched again

    http_server.files["/mirror/SVTP/svtp.tar.gz"] = archive[:-10] + b"0123456789"
    (tmp_path / "archives" / "SVTP" / "svtp.tar.gz").write_bytes(b"tampered")
    with pytest.raises(ChecksumError):
        download_all([_entry(archive)], tmp_path, mirror=f"{http_server.base}/mirror")
    assert not (tmp_path / "archives" / "SVTP" / "svtp.tar.gz").exists()
    assert (tmp_path / "SVTP" / "svtp" / "gt.txt").is_file()  # what was good stays


def test_mirror_on_s3(s3, tmp_path):
    archive = _svtp_archive()
    s3.put_object(Bucket="datasets", Key="mirror/SVTP/svtp.tar.gz", Body=archive)
    records = download_all([_entry(archive)], tmp_path, mirror="s3://datasets/mirror")
    assert records[0]["files"][0]["url"] == "s3://datasets/mirror/SVTP/svtp.tar.gz"
    assert (tmp_path / "SVTP" / "svtp" / "1.jpg").is_file()


def test_catalog_lists_every_standard_dataset_with_its_splits():
    catalog = load_catalog()
    assert {"mjsynth", "IIIT5K", "SVT", "IC03", "IC13", "IC15", "SVTP", "CUTE80", "lmdb-evaluation",
            "lmdb-training"} <= set(catalog)
    for name in ("mjsynth", "IIIT5K", "SVT"):  # the three whose md5 is published
        assert len(catalog[name].files[0].md5) == 32
    assert set(catalog["IC13"].splits) == {"test_857", "test_1015"}
    assert catalog["IC15"].splits["test_2077"].unfiltered
    assert set(catalog["lmdb-evaluation"].splits) == {
        "IIIT5k_3000", "SVT", "IC03_860", "IC03_867", "IC13_857", "IC13_1015", "IC15_1811", "IC15_2077",
        "SVTP", "CUTE80"}
    assert set(catalog["lmdb-training"].splits) == {"MJ_train", "MJ_valid", "MJ_test", "ST"}
    for entry in catalog.values():
        assert entry.files and entry.splits and entry.page


@pytest.fixture
def https_server(http_server, tmp_path, monkeypatch):
    """The same loopback server behind TLS, with a certificate made for the test and trusted through
    ``REQUESTS_CA_BUNDLE`` (as a user would trust an internal CA)."""
    import datetime
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    http_server.socket = context.wrap_socket(http_server.socket, server_side=True)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_file))
    http_server.base = http_server.base.replace("http://", "https://")
    return http_server


def test_https_source_with_a_dropped_connection(https_server, tmp_path):
    https_server.files["/data.bin"] = PAYLOAD
    https_server.drops = 1
    dest = fetch(f"{https_server.base}/data.bin", tmp_path / "out" / "data.bin",
                 sha256=hashlib.sha256(PAYLOAD).hexdigest(), retry=FAST_RETRY)
    assert dest.read_bytes() == PAYLOAD
    assert [r for _, r in https_server.requests] == [None, f"bytes={len(PAYLOAD) // 2}-"]


def test_a_corrupt_member_is_reported_by_download_and_counted_by_convert(tmp_path):
    import zipfile

    from crnn.data.convert import convert_all
    from tests.layouts import word_png

    good, bad = word_png("HOTEL", 1), word_png("WYNDHAM", 2)
    archive = tmp_path / "svtp.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("svtp/gt.txt", b"1.png HOTEL\n2.png WYNDHAM\n")
        zf.writestr("svtp/1.png", good)
        zf.writestr("svtp/2.png", bad)
    archive.write_bytes(archive.read_bytes().replace(bad[-40:], bytes(40)))  # same size, wrong CRC
    entry = DatasetEntry("SVTP", "svtp", "benchmark",
                         (RemoteFile("svtp.zip", archive.as_uri(),
                                     sha256=hashlib.sha256(archive.read_bytes()).hexdigest()),),
                         {"test": Split("svtp/gt.txt")})
    record = download_all([entry], tmp_path / "raw")[0]
    assert record["extraction_skipped"] == {"svtp.zip": {"corrupt_member": 1}}
    manifest = convert_all(tmp_path / "raw", tmp_path / "data")["SVTP/test"]
    assert manifest["num_samples"] == 1 and manifest["skipped"] == {"missing_image": 1}


def test_catalog_paths_must_stay_inside_the_dataset(tmp_path):
    bad = {"datasets": {"x": {"format": "svtp", "role": "benchmark", "files": [{"name": "x.zip", "url": "u"}],
                              "splits": {"test": {"index": "../../etc/passwd"}}}}}
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="index '../../etc/passwd' must be a relative path"):
        load_catalog(path)


@pytest.mark.parametrize("name", ["", ".", "..", "../models", "a/b", "a\\b"])
def test_a_custom_dataset_name_must_be_a_plain_folder_name(name):
    """The dataset's folder is replaced by its extraction: a name that is a path would replace another."""
    from crnn.data.catalog import custom_entry

    with pytest.raises(ValueError, match="--name .*plain name"):
        custom_entry("https://example.org/my.tar.gz", "svtp", name=name)
    assert custom_entry("https://example.org/my.tar.gz", "svtp", name="my-set_2.0").name == "my-set_2.0"


def test_a_file_without_a_published_checksum_is_named_in_a_warning_and_copied_whole(tmp_path, caplog):
    source = tmp_path / "gt.txt"
    source.write_text('word_1.png, "a"\n')
    entry = DatasetEntry(name="plain", format="ic13", role="benchmark",
                         files=(RemoteFile("gt.txt", source.as_uri()),), splits={"test": Split()})
    download_all([entry], tmp_path / "raw", mirror=None, source=None)
    assert "plain: gt.txt has no published checksum" in caplog.text
    assert (tmp_path / "raw" / "plain" / "gt.txt").read_text() == source.read_text()
    assert [p.name for p in (tmp_path / "raw" / "plain").iterdir() if p.name.startswith(".gt.txt")] == []
