"""Property and fuzz tests for every reader.

Valid files round-trip: the store holds exactly the written id tokens, each user's events in
(timestamp, file) order, whatever the BOM, line endings, compression or blank lines. Mutated
files (bytes inserted, deleted or flipped, truncation, stray delimiters, empty files) give either
a correct result or a `SinkrecError` with a one-line message; never another exception, a hang,
or a line dropped without a logged count.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sinkrec.data.formats import read_interactions
from sinkrec.data.sequences import build_store, load_store
from sinkrec.errors import DataError, SinkrecError

ROUND_TRIP = settings(max_examples=20, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FUZZ = settings(max_examples=35, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---- tokens --------------------------------------------------------------------------------
def _chars(excluded: str) -> st.SearchStrategy[str]:
    """Any encodable character but NUL, BOM and the format's own separators."""
    return st.characters(codec="utf-8", exclude_characters="\x00\ufeff" + excluded)


NUMERIC = st.one_of(st.integers(0, 10**30).map(str), st.integers(0, 99).map(lambda v: f"00{v}"))


def bare_token(excluded: str = "") -> st.SearchStrategy[str]:
    """Tokens without whitespace (whitespace-separated formats)."""
    text = st.text(_chars(excluded).filter(lambda c: not c.isspace()), min_size=1, max_size=6)
    return st.one_of(NUMERIC, text)


def field_token(excluded: str = "") -> st.SearchStrategy[str]:
    """Tokens for delimited files: inner spaces allowed, none around (surrounding space is not an id)."""
    text = st.text(_chars("\r\n" + excluded), min_size=1, max_size=6).filter(lambda t: t.strip() == t != "")
    return st.one_of(NUMERIC, text)


# ---- formats -------------------------------------------------------------------------------
Row = tuple[str, str, int]  # user, item, timestamp


def _csv_text(header: list[str] | None, rows: list[list[str]], delimiter: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _s3rec(rows: list[Row]) -> str:
    """Consecutive events of one user share a line, as in S3-Rec files."""
    lines: list[list[str]] = []
    for user, item, _ in rows:
        if lines and lines[-1][0] == user:
            lines[-1].append(item)
        else:
            lines.append([user, item])
    return "".join(" ".join(line) + "\n" for line in lines)


def _jsonl(rows: list[Row], literal: bool) -> str:
    def value(token: str) -> object:
        """Plain integers are written as JSON numbers, to check they come back as the same text."""
        return int(token) if token.isascii() and token.isdigit() and token == str(int(token)) else token

    records = [{"user_id": value(u), "item_id": value(i), "timestamp": t} for u, i, t in rows]
    return "".join((repr(r) if literal else json.dumps(r, ensure_ascii=False)) + "\n" for r in records)


@dataclass
class Spec:
    name: str
    fmt: str
    token: st.SearchStrategy[str]
    render: Callable[[list[Row]], str]
    timed: bool = True
    columns: dict[str, str] | None = None
    kind: str = "csv"  # how lines map to events: 'sasrec', 's3rec', 'line' (one each) or 'csv'
    header: int = 1


SPECS = {
    "sasrec": Spec("log.txt", "sasrec", bare_token(), lambda rows: "".join(f"{u} {i}\n" for u, i, _ in rows),
                   timed=False, kind="sasrec", header=0),
    "s3rec": Spec("log.txt", "s3rec", bare_token(), _s3rec, timed=False, kind="s3rec", header=0),
    "recbole": Spec("data.inter", "recbole", field_token("\t\""), lambda rows: _csv_text(
        ["user_id:token", "item_id:token", "rating:float", "timestamp:float"],
        [[u, i, "4", str(t)] for u, i, t in rows], "\t")),
    "movielens-dat": Spec("ratings.dat", "movielens-dat", bare_token(":"),
                          lambda rows: "".join(f"{u}::{i}::5::{t}\n" for u, i, t in rows), kind="line", header=0),
    "movielens-csv": Spec("ratings.csv", "movielens-csv", field_token("\t"), lambda rows: _csv_text(
        ["userId", "movieId", "rating", "timestamp"], [[u, i, "2.5", str(t)] for u, i, t in rows], ",")),
    "csv": Spec("events.csv", "csv", field_token("\t"), lambda rows: _csv_text(
        ["user_id", "item_id", "timestamp"], [[u, i, str(t)] for u, i, t in rows], ",")),
    "tsv": Spec("events.tsv", "csv", field_token(), lambda rows: _csv_text(
        ["timestamp", "item_id", "user_id"], [[str(t), i, u] for u, i, t in rows], "\t")),
    "csv-positional": Spec("u.data", "csv", field_token(), lambda rows: _csv_text(
        None, [[u, i, "3", str(t)] for u, i, t in rows], "\t"), columns={"user": "0", "item": "1", "timestamp": "3"},
        header=0),
    "jsonl": Spec("events.jsonl", "jsonl", field_token(), lambda rows: _jsonl(rows, False), kind="line", header=0),
    "jsonl-literal": Spec("steam.json", "jsonl", field_token(), lambda rows: _jsonl(rows, True), kind="line",
                          header=0),
}


@st.composite
def event_rows(draw, token: st.SearchStrategy[str]) -> list[Row]:
    users = draw(st.lists(token, min_size=1, max_size=4, unique=True))
    items = draw(st.lists(token, min_size=1, max_size=6, unique=True))
    times = st.integers(0, 4).map(lambda t: 1_600_000_000 + t * 3600)  # ties are common
    return draw(st.lists(st.tuples(st.sampled_from(users), st.sampled_from(items), times), min_size=1, max_size=25))


@st.composite
def spec_and_rows(draw, names=tuple(SPECS)):
    spec = SPECS[draw(st.sampled_from(names))]
    return spec, draw(event_rows(spec.token))


# ---- helpers ---------------------------------------------------------------------------------
@contextmanager
def time_limit(seconds: float):
    """Fail (TimeoutError, not a SinkrecError) instead of hanging; a no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(*_):
        raise TimeoutError(f"reader took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def encode(text: str, bom: bool, crlf: bool, gz: bool) -> bytes:
    data = (text.replace("\n", "\r\n") if crlf else text).encode("utf-8")
    data = (b"\xef\xbb\xbf" if bom else b"") + data
    return gzip.compress(data) if gz else data


def with_blanks(text: str, where: list[int], spaces: bool) -> tuple[str, int]:
    """Insert blank lines after the given line positions; returns the text and how many."""
    lines = text.split("\n")[:-1]
    blank = "  " if spaces else ""
    count = 0
    for position in sorted(set(where), reverse=True):
        lines.insert(min(position, len(lines)), blank)
        count += 1
    return "\n".join(lines) + "\n", count


def sequences(store) -> dict[str, list[str]]:
    return {str(store.user_ids[u]): store.decode_items(store.sequence(u)) for u in range(store.n_users)}


def expected_sequences(rows: list[Row], timed: bool) -> dict[str, list[str]]:
    order = sorted(range(len(rows)), key=lambda k: (rows[k][2] if timed else 0, k))
    out: dict[str, list[str]] = {}
    for k in order:
        out.setdefault(rows[k][0], []).append(rows[k][1])
    return out


def check_error(exc: SinkrecError) -> None:
    message = str(exc)
    assert message.strip(), "empty error message"
    assert len(message.splitlines()) == 1, f"multi-line error message: {message!r}"


# ---- round trip ------------------------------------------------------------------------------
@ROUND_TRIP
@given(case=spec_and_rows(), bom=st.booleans(), crlf=st.booleans(), gz=st.booleans(),
       blanks=st.lists(st.integers(0, 30), max_size=3), spaces=st.booleans())
def test_valid_files_round_trip(tmp_path, caplog, case, bom, crlf, gz, blanks, spaces):
    spec, rows = case
    caplog.clear()
    caplog.set_level(logging.INFO, logger="sinkrec")
    text, n_blank = with_blanks(spec.render(rows), [b + spec.header for b in blanks], spaces)
    path = tmp_path / (spec.name + (".gz" if gz else ""))
    path.write_bytes(encode(text, bom, crlf, gz))

    ev = read_interactions(path, spec.fmt, spec.columns)
    assert ev.users.tolist() == [u for u, _, _ in rows]
    assert ev.items.tolist() == [i for _, i, _ in rows]
    if spec.timed:
        assert ev.timestamps.tolist() == [float(t) for _, _, t in rows]
    else:
        assert ev.timestamps is None
    blank_notes = [n for n in ev.notes if "blank line" in n]
    assert blank_notes == ([f"skipped {n_blank} blank line(s)"] if n_blank else [])
    assert all(n in caplog.text for n in blank_notes)

    if len({i for _, i, _ in rows}) < 2:
        with pytest.raises(DataError, match="only one distinct item"):
            load_store(path, spec.fmt, spec.columns, min_events=1)
        return
    store = load_store(path, spec.fmt, spec.columns, min_events=1)  # through the on-disk cache
    assert all(type(token) is str for token in [*store.user_ids, *store.item_ids])
    assert set(store.user_ids) == {u for u, _, _ in rows} and set(store.item_ids) == {""} | {i for _, i, _ in rows}
    assert sequences(store) == expected_sequences(rows, spec.timed)
    assert sequences(load_store(path, spec.fmt, spec.columns, min_events=1)) == sequences(store)


@ROUND_TRIP
@given(case=spec_and_rows(("sasrec", "s3rec", "movielens-dat", "movielens-csv", "recbole", "jsonl")))
def test_auto_detection_agrees_or_refuses(tmp_path, case):
    """Reading with format 'auto' gives the same events as the right reader, or refuses a mix."""
    spec, rows = case
    path = tmp_path / spec.name
    path.write_text(spec.render(rows), encoding="utf-8")
    expected = read_interactions(path, spec.fmt)
    try:
        ev = read_interactions(path)
    except SinkrecError as exc:
        assert spec.fmt == "s3rec" and "mixed field counts" in str(exc)
        return
    assert ev.users.tolist() == expected.users.tolist() and ev.items.tolist() == expected.items.tolist()


# ---- mutations -------------------------------------------------------------------------------
FRAGMENTS = [b" ", b",", b"::", b"\t", b'"', b"\n", b"\r\n", b"\r", b"\xff", b"\x00", b"\xef\xbb\xbf", b"{",
             b"}", b":", b"\xc3", b"\n\n", b"  \n", b"-1", b"nan", b"1e999", b"x y z", b"\\"]


@st.composite
def mutate(draw, data: bytes) -> bytes:
    for op in draw(st.lists(st.sampled_from(["insert", "fragment", "delete", "flip", "truncate", "duplicate",
                                             "empty"]), min_size=1, max_size=3)):
        at = draw(st.integers(0, len(data)))
        if op == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
        elif op == "fragment":
            data = data[:at] + draw(st.sampled_from(FRAGMENTS)) + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 8)):]
        elif op == "flip" and at < len(data):
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
        elif op == "truncate":
            data = data[:at]
        elif op == "duplicate":
            lines = data.split(b"\n")
            k = draw(st.integers(0, len(lines) - 1))
            lines.insert(k, lines[k])
            data = b"\n".join(lines)
        elif op == "empty":
            data = draw(st.sampled_from([b"", b"\n", b"\xef\xbb\xbf", b"\r\n\r\n", b" "]))
    return data


def _decoded_lines(data: bytes, gz: bool) -> list[str] | None:
    """The file's lines as an independent reading sees them, or None if it is not valid text."""
    try:
        raw = gzip.decompress(data) if gz else data
        text = raw[3:].decode() if raw.startswith(b"\xef\xbb\xbf") else raw.decode()
    except (OSError, EOFError, UnicodeDecodeError):
        return None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def check_accounting(spec: Spec, ev, data: bytes, gz: bool, log_text: str) -> None:
    """Every non-blank line became events (checked against a naive parse where the format is
    simple); every blank line is in a logged count."""
    lines = _decoded_lines(data, gz)
    assert lines is not None, "a file that is not valid (gzipped) UTF-8 was accepted"
    assert not any("\x00" in line for line in lines), "a NUL byte was accepted"
    content = [line for line in lines if line.strip()]
    n_blank = len(lines) - len(content)
    if spec.kind == "sasrec":
        assert ev.users.tolist() == [line.split()[0] for line in content]
        assert ev.items.tolist() == [line.split()[1] for line in content]
    elif spec.kind == "s3rec":
        assert ev.items.tolist() == [item for line in content for item in line.split()[1:]]
    elif spec.kind == "line":
        assert len(ev) == len(content)
    elif not any('"' in line for line in lines):
        assert len(ev) == len(content) - spec.header
    else:
        assert len(ev) <= len(content) - spec.header
        return  # quoted fields may span lines: blank lines inside them are data
    blank_notes = [n for n in ev.notes if "blank line" in n]
    assert blank_notes == ([f"skipped {n_blank} blank line(s)"] if n_blank else [])
    assert all(n in log_text for n in blank_notes)


def check_events(ev) -> None:
    assert ev.users.dtype.kind == ev.items.dtype.kind == "U"
    assert len(ev.users) == len(ev.items) > 0
    for token in ev.users.tolist() + ev.items.tolist():
        assert token and token == token.strip() and "\x00" not in token
    if ev.timestamps is not None:
        assert len(ev.timestamps) == len(ev) and np.isfinite(ev.timestamps).all() and (ev.timestamps >= 0).all()


def check_store(ev) -> None:
    try:
        store = build_store(ev, 1)
    except DataError as exc:
        check_error(exc)
        assert "only one distinct item" in str(exc)
        return
    assert len(store.items) == len(ev) and store.n_items >= 2  # min_events=1 drops nothing
    assert sorted(store.decode_items(store.items)) == sorted(ev.items.tolist())


@FUZZ
@given(case=spec_and_rows(), gz=st.booleans(), crlf=st.booleans(), data=st.data())
def test_mutated_files_give_a_result_or_a_clear_error(tmp_path, caplog, case, gz, crlf, data):
    spec, rows = case
    caplog.clear()
    caplog.set_level(logging.INFO, logger="sinkrec")
    clean = encode(spec.render(rows), bom=False, crlf=crlf, gz=False)
    mutated = data.draw(mutate(clean))
    if gz:
        mutated = gzip.compress(mutated)
        if data.draw(st.booleans()):  # damage the compressed stream itself
            mutated = data.draw(mutate(mutated))
    path = tmp_path / (spec.name + (".gz" if gz else ""))
    path.write_bytes(mutated)
    for fmt in (spec.fmt, "auto") if spec.columns is None else (spec.fmt,):
        try:
            with time_limit(20):
                ev = read_interactions(path, fmt, spec.columns)
        except SinkrecError as exc:
            check_error(exc)
            assert spec.name in str(exc)
            event(f"{fmt}: error")
            continue
        event(f"{fmt}: read")
        check_events(ev)
        if fmt == spec.fmt:
            check_accounting(spec, ev, mutated, gz, caplog.text)
        check_store(ev)


# ---- Parquet ---------------------------------------------------------------------------------
@ROUND_TRIP
@given(rows=event_rows(field_token()), damage=st.integers(0, 10**6), junk=st.binary(min_size=1, max_size=8))
def test_parquet_round_trip_and_damage(tmp_path, rows, damage, junk):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"user_id": [u for u, _, _ in rows], "item_id": [i for _, i, _ in rows],
                          "timestamp": [t for _, _, t in rows]})
    path = tmp_path / "events.parquet"
    frame.to_parquet(path)
    ev = read_interactions(path)
    assert ev.users.tolist() == frame.user_id.tolist() and ev.items.tolist() == frame.item_id.tolist()
    assert ev.timestamps.tolist() == [float(t) for t in frame.timestamp]
    blob = path.read_bytes()
    at = damage % len(blob)
    path.write_bytes(blob[:at] + junk + blob[at + len(junk):])
    try:
        check_events(read_interactions(path))
    except SinkrecError as exc:
        check_error(exc)
