"""Readers keep the user's exact id tokens, refuse ambiguous or degenerate data with a clear
`SinkrecError`, and count + log everything they skip."""

import gzip
import json
import logging

import numpy as np
import pytest
import torch

from sinkrec.config import DataConfig
from sinkrec.data import load_dataset
from sinkrec.data.formats import Interactions, detect_format, read_interactions
from sinkrec.data.sequences import CACHE_VERSION, Split, build_store, cache_dir, load_store
from sinkrec.errors import DataError, DataFormatError, SinkrecError
from sinkrec.recommend import Recommender

from .conftest import shared_file


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def sequences(store):
    return {str(store.user_ids[u]): store.decode_items(store.sequence(u)) for u in range(store.n_users)}


# ---- ids are strings ---------------------------------------------------------------------
def test_numeric_looking_ids_stay_distinct_tokens(tmp_path):
    path = write(tmp_path, "a.txt", "007 7\n007 007\n007 07\n7 1\n7 2\n7 3\n")
    store = load_store(path, min_events=1, use_cache=False)
    assert store.user_ids.tolist() == ["007", "7"]
    assert store.item_ids.tolist() == ["", "007", "07", "1", "2", "3", "7"]
    assert all(type(token) is str for token in [*store.user_ids, *store.item_ids])
    assert sequences(store) == {"007": ["7", "007", "07"], "7": ["1", "2", "3"]}
    assert store.n_items == 6


def test_ids_beyond_int64_are_kept_exactly(tmp_path):
    huge = "9" * 30
    path = write(tmp_path, "big.txt", f"{huge} 1\n{huge} {huge}\n{huge} 18446744073709551616\n")
    store = load_store(path, min_events=1, use_cache=False)
    assert sequences(store) == {huge: ["1", huge, "18446744073709551616"]}


def test_integer_ids_keep_numeric_index_order(tmp_path):
    """Re-indexed files (items 1..n) keep index == id, as with the integer ids of earlier versions."""
    path = write(tmp_path, "n.txt", "".join(f"1 {i}\n" for i in (10, 2, 1, 33)))
    store = load_store(path, min_events=1, use_cache=False)
    assert store.item_ids.tolist() == ["", "1", "2", "10", "33"]
    assert store.items.tolist() == [3, 2, 1, 4]


def test_every_reader_returns_string_tokens(tmp_path):
    cases = [
        ("a.txt", "1 05\n", None, None),
        ("b.txt", "1 05 6\n", "s3rec", None),
        ("r.dat", "1::05::3::5\n", None, None),
        ("r.csv", "userId,movieId,rating,timestamp\n1,05,2,3\n", None, None),
        ("x.inter", "user_id:token\titem_id:token\n1\t05\n", None, None),
        ("g.csv", "1,05\n", "csv", {"user": "0", "item": "1"}),
        ("j.jsonl", '{"user_id": 1, "item_id": "05"}\n', None, None),
    ]
    for name, text, fmt, columns in cases:
        ev = read_interactions(write(tmp_path, name, text), fmt or "auto", columns)
        assert ev.users.dtype.kind == ev.items.dtype.kind == "U", name
        assert ev.items.tolist()[0] == "05" and ev.users.tolist()[0] == "1", name


def test_integer_arrays_become_decimal_tokens():
    ev = Interactions(np.array([1, 2]), np.array([3, 40], dtype=np.uint32), None, "gen")
    assert ev.users.tolist() == ["1", "2"] and ev.items.tolist() == ["3", "40"]
    with pytest.raises(DataError, match="ids must be strings or integers"):
        Interactions(np.array([1.5]), np.array([2]), None, "gen")


def test_recommendations_come_back_in_the_users_tokens():
    class Fixed(torch.nn.Module):
        supports_streaming = False

        def score_users(self, batch):
            return torch.tensor([[0.0, 1.0, 3.0, 2.0, 5.0]])

    rec = Recommender(Fixed(), ["", "007", "7", "a b", "9" * 30], max_len=5)
    out = rec.recommend(["007"], k=3)
    assert out["items"] == ["9" * 30, "7", "a b"]


# ---- format detection ----------------------------------------------------------------------
def test_one_stray_line_does_not_turn_a_sasrec_file_into_s3rec(tmp_path):
    lines = [f"{u // 10} {u}\n" for u in range(999)] + ["5 6 7\n"]
    path = write(tmp_path, "log.txt", "".join(lines))
    expected = (r"log.txt, line 1000: mixed field counts: lines 1-999 have 2 fields, line 1000 has 3 "
                r"\(999 line\(s\) with 2 fields, 1 with more\)")
    with pytest.raises(DataFormatError, match=expected):
        read_interactions(path)
    with pytest.raises(DataFormatError, match=expected):
        detect_format(path)
    with pytest.raises(DataFormatError, match="line 1000: expected 'user item'.*use format 's3rec'"):
        read_interactions(path, "sasrec")
    assert len(read_interactions(path, "s3rec")) == 1001


def test_detected_format_is_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sinkrec")
    read_interactions(write(tmp_path, "a.txt", "1 2\n1 3\n"))
    read_interactions(write(tmp_path, "b.txt", "1 2 3\n2 3 4 5\n"))
    text = caplog.text
    assert "a.txt: read as format 'sasrec'" in text and "b.txt: read as format 's3rec'" in text


def test_a_table_read_as_s3rec_is_flagged(tmp_path):
    path = write(tmp_path, "u.data", "".join(f"{u}\t{u + 1}\t3\t88125094{u % 10}\n" for u in range(12)))
    ev = read_interactions(path)
    assert any("every line has 4 fields" in n and "format 'csv'" in n for n in ev.notes)


# ---- encoding ------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_non_utf8_names_file_line_and_byte(tmp_path, gz):
    data = b"1 2\n1 3\n1 caf\xe9\n"
    name = "bad.txt.gz" if gz else "bad.txt"
    path = write(tmp_path, name, gzip.compress(data) if gz else data)
    with pytest.raises(DataFormatError) as info:
        read_interactions(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "line 3: not UTF-8 text" in message
    assert "column 6" in message and "byte 13" in message
    assert ("uncompressed" in message) == gz


def test_utf16_and_nul_bytes(tmp_path):
    path = write(tmp_path, "w.csv", "user_id,item_id\n1,2\n".encode("utf-16"))
    with pytest.raises(DataFormatError, match="line 1: not UTF-8 text.*UTF-16"):
        read_interactions(path)
    path = write(tmp_path, "n.txt", b"1 2\n1 3\x00\n")
    with pytest.raises(DataFormatError, match=r"line 2: NUL character at column 4"):
        read_interactions(path)


def test_bom_and_crlf_read_like_plain_text(tmp_path):
    plain = read_interactions(write(tmp_path, "p.csv", "user_id,item_id,timestamp\na,x,1\nb,y,2\n"))
    other = read_interactions(write(tmp_path, "q.csv", b"\xef\xbb\xbfuser_id,item_id,timestamp\r\na,x,1\r\nb,y,2\r\n"))
    assert plain.users.tolist() == other.users.tolist() and plain.items.tolist() == other.items.tolist()
    assert plain.timestamps.tolist() == other.timestamps.tolist()


def test_damaged_gzip_is_a_clear_error(tmp_path):
    data = gzip.compress(b"".join(b"%d %d\n" % (u, u + 1) for u in range(5000)))
    path = write(tmp_path, "t.txt.gz", data[: len(data) // 2])
    with pytest.raises(DataFormatError, match="t.txt.gz: cannot read the file.*end-of-stream"):
        read_interactions(path)
    with pytest.raises(DataFormatError, match="cannot read the file: Not a gzipped file"):
        read_interactions(write(tmp_path, "n.txt.gz", b"1 2\n"))


# ---- delimited / JSON strictness -------------------------------------------------------------
@pytest.mark.parametrize("name, text, columns, match", [
    ("a.csv", "user_id,item_id\n1,2\n1,2,3\n", None, r"line 3: expected 2 fields \(as on line 1\), got 3"),
    ("b.csv", "1,2,3\n1,2\n", {"user": "0", "item": "1"}, r"line 2: expected 3 fields \(as on line 1\), got 2"),
    ("c.csv", "user_id,item_id\n1, \n", None, r"line 2: empty item id"),
    ("d.csv", 'user_id,item_id\n1,"2\n', None, r"line 2: malformed CSV"),
    ("e.csv", 'user_id,item_id\n1,"2"x\n', None, r"line 2: malformed CSV"),
    ("f.jsonl", '{"user_id": true, "item_id": 1}\n', None, r"line 1: user id must be a string or an integer"),
    ("g.jsonl", '{"user_id": 1, "item_id": 1.5}\n', None, r"line 1: item id must be a string or an integer"),
    ("h.jsonl", '{"user_id": 1, "item_id": 2, "timestamp": 1}\n{"user_id": 1, "item_id": 3}\n', None,
     r"line 2: field 'timestamp' \(timestamp\) missing"),
    ("i.jsonl", "[1, 2]\n", None, r"line 1: expected one JSON object per line, got list"),
    ("j.jsonl", "[" * 100000 + "\n", None, r"line 1: expected one JSON object"),
    ("k.dat", "1::::3::4\n", None, r"line 1: empty item id"),
    ("l.inter", "user_id:token\titem_id:token\n", None, "no interactions found"),
])
def test_delimited_and_json_errors(tmp_path, name, text, columns, match):
    path = write(tmp_path, name, text)
    with pytest.raises(DataFormatError, match=match) as info:
        read_interactions(path, "auto" if columns is None else "csv", columns)
    assert "\n" not in str(info.value) and name in str(info.value)


def test_json_ids_and_missing_default_timestamp(tmp_path):
    text = '{"user_id": 12345678901234567890123, "item_id": "007"}\n{"user_id": "u", "item_id": " 7 "}\n'
    ev = read_interactions(write(tmp_path, "j.jsonl", text))
    assert ev.users.tolist() == ["12345678901234567890123", "u"] and ev.items.tolist() == ["007", "7"]
    assert ev.timestamps is None


# ---- degenerate data sets ----------------------------------------------------------------------
def test_every_user_with_three_events_is_refused_at_load_time(tmp_path):
    path = write(tmp_path, "three.txt", "".join(f"{u} {u * 3 + k}\n" for u in range(20) for k in range(3)))
    with pytest.raises(DataError, match="no user has more than 3 events.*4 or more"):
        load_dataset(DataConfig(dataset=str(path)))


def test_no_user_left_and_single_item_are_refused(tmp_path):
    with pytest.raises(DataError, match=r"short.txt: no user has at least 3 events \(2 user\(s\) in the file\)"):
        load_store(write(tmp_path, "short.txt", "1 2\n2 3\n"), use_cache=False)
    with pytest.raises(DataError, match="one.txt: only one distinct item"):
        load_store(write(tmp_path, "one.txt", "1 2\n1 2\n1 2\n2 2\n2 2\n2 2\n2 2\n"), use_cache=False)


def test_split_refuses_short_users_with_a_data_error():
    ev = Interactions(np.array(["a", "a", "b", "b", "b", "b"]), np.array(list("xyxyzx")), None, "t")
    with pytest.raises(DataError, match="min_events"):
        Split(build_store(ev, 1))


# ---- nothing dropped silently -------------------------------------------------------------------
def test_skipped_lines_and_users_are_counted_and_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sinkrec")
    path = write(tmp_path, "s.txt", "1 2\n\n1 3\n1 4\n  \n2 5\n1 6\n")
    store = load_store(path, use_cache=True)
    assert "skipped 2 blank line(s)" in store.notes
    assert "dropped 1 user(s) with fewer than 3 events (1 events)" in store.notes
    for message in store.notes:
        assert message in caplog.text
    caplog.clear()
    again = load_store(path, use_cache=True)  # from the cache: the notes are logged again
    assert again.notes == store.notes and "dropped 1 user(s)" in caplog.text


def test_cache_version_and_string_ids_survive_the_cache(tmp_path):
    assert CACHE_VERSION >= 3  # 3: ids as UTF-8 blob + offsets
    path = write(tmp_path, "c.txt", "u 007\nu 7\nu 07\n")
    first = load_store(path)
    cached = list((cache_dir() / "stores").glob("c.txt-*.npz"))
    assert len(cached) == 1
    second = load_store(path)
    assert second.item_ids.tolist() == first.item_ids.tolist() == ["", "007", "07", "7"]
    cached[0].write_bytes(b"damaged")  # a broken cache is rebuilt, not fatal
    assert load_store(path).item_ids.tolist() == first.item_ids.tolist()


def test_cache_holds_ids_as_plain_numbers_and_a_bad_one_is_rebuilt(tmp_path, caplog):
    path = write(tmp_path, "d.txt", "u 007\nu é\nu " + "z" * 500 + "\n")
    first = load_store(path)
    [cached] = (cache_dir() / "stores").glob("d.txt-*.npz")
    with np.load(cached, allow_pickle=False) as data:  # nothing in it needs pickle
        arrays = {name: data[name] for name in data.files}
    assert arrays["item_ids_blob"].dtype == np.uint8 and arrays["item_ids_offsets"].dtype == np.int64
    assert all(array.dtype.kind != "O" for array in arrays.values())
    arrays["item_ids_offsets"] = arrays["item_ids_offsets"] + np.arange(len(arrays["item_ids_offsets"])) % 2
    np.savez(cached, **arrays)  # offsets that split "é" or overrun the blob: the cache is rebuilt
    assert load_store(path).item_ids.tolist() == first.item_ids.tolist() == ["", "007", "z" * 500, "é"]
    assert "ignoring unreadable cache" in caplog.text


def test_errors_are_sinkrec_errors_with_one_line():
    error = DataFormatError("f.txt", 3, "bad\nthing")
    assert isinstance(error, SinkrecError) and str(error) == "f.txt, line 3: bad thing"


# ---- real files ------------------------------------------------------------------------------
@pytest.mark.parametrize("relative, fmt", [
    ("ml-1m-sasrec/ml-1m.txt", "sasrec"),
    ("lastfm-s3rec/LastFM.txt", "s3rec"),
    ("amazon-beauty-s3rec/Beauty.txt", "s3rec"),
])
def test_shared_whitespace_files_are_detected(relative, fmt):
    assert detect_format(shared_file(relative)) == fmt


def test_shared_ml100k_tokens_match_the_file():
    path = shared_file("ml-100k/ml-100k.inter")
    ev = read_interactions(path)
    with open(path, encoding="utf-8") as handle:
        next(handle)
        first = next(handle).rstrip("\n").split("\t")
    assert ev.users[0] == first[0] and ev.items[0] == first[1]
    assert json.dumps(ev.users[:3].tolist())  # plain strings
