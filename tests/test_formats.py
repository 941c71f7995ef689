import gzip
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinkrec.data.formats import detect_format, read_interactions
from sinkrec.errors import DataFormatError

HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def write(tmp_path, name, text, gz=False):
    path = tmp_path / name
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_sasrec_and_s3rec(tmp_path):
    ev = read_interactions(write(tmp_path, "a.txt", "1 5\n1 6\n\n2 5\n"))
    assert ev.users.tolist() == ["1", "1", "2"] and ev.items.tolist() == ["5", "6", "5"] and ev.timestamps is None
    assert ev.notes == ["skipped 1 blank line(s)"]
    ev = read_interactions(write(tmp_path, "b.txt", "1 5 6 7\n2 8 9\n"))
    assert ev.users.tolist() == ["1", "1", "1", "2", "2"] and ev.items.tolist() == ["5", "6", "7", "8", "9"]


def test_recbole_inter(tmp_path):
    text = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t881250949\n1\t11\t3\t881250950\n"
    ev = read_interactions(write(tmp_path, "x.inter", text))
    assert ev.items.tolist() == ["10", "11"] and ev.timestamps.tolist() == [881250949.0, 881250950.0]


def test_movielens_dat_gz_and_csv(tmp_path):
    ev = read_interactions(write(tmp_path, "ratings.dat.gz", "1::1193::5::978300760\n2::661::3::978302109\n", gz=True))
    assert ev.users.tolist() == ["1", "2"] and ev.timestamps.tolist() == [978300760.0, 978302109.0]
    ev = read_interactions(write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n"))
    assert detect_format(tmp_path / "ratings.csv") == "movielens-csv"
    assert ev.items.tolist() == ["31"]


def test_generic_csv_mapping_string_ids_and_dates(tmp_path):
    path = write(tmp_path, "log.csv", "who,what,when\nalice,sku-1,2021-01-02\nbob,sku-2,2021-01-03T10:00:00\n")
    ev = read_interactions(path, columns={"user": "who", "item": "what", "timestamp": "when"})
    assert ev.users.tolist() == ["alice", "bob"] and ev.items.tolist() == ["sku-1", "sku-2"]
    assert ev.timestamps[1] > ev.timestamps[0]
    headless = write(tmp_path, "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    ev = read_interactions(headless, "csv", {"user": "0", "item": "1", "timestamp": "3"})
    assert ev.items.tolist() == ["242", "302"]


def test_jsonl_python_literal(tmp_path):
    path = write(tmp_path, "steam.json", "{'username': 'a', 'product_id': '7', 'date': '2011-10-05'}\n")
    ev = read_interactions(path, columns={"user": "username", "item": "product_id", "timestamp": "date"})
    assert ev.items.tolist() == ["7"] and ev.timestamps[0] > 0


@pytest.mark.parametrize("name, text, fmt, columns, match", [
    ("e.txt", "", "sasrec", None, "no interactions"),
    ("e.txt", "\n\n", "auto", None, "empty file"),
    ("s.txt", "1 2\n1\n", "sasrec", None, r"line 2: expected 'user item' \(2 fields\), got 1"),
    ("s.txt", "1 2\n1 2 3\n", "sasrec", None, r"line 2: expected 'user item'.*use format 's3rec'"),
    ("s.txt", "1 2\n1 3\n1 2 3\n", "auto", None, r"line 3: mixed field counts: lines 1-2 have 2 fields, "
                                                  r"line 3 has 3"),
    ("r.dat", "1::2::3::4\n1::2::3::-5\n", "auto", None, r"line 2: timestamp '-5'"),
    ("r.dat", "1::2::3\n", "auto", None, r"line 1: expected 'UserID::MovieID"),
    ("c.csv", "user_id,item\n1,2\n", "csv", {"user": "user_id", "item": "item_id"}, "unknown column 'item_id'"),
    ("c.csv", "u,i,t\n1,2,3\n1,2,soon\n", "csv", {"user": "u", "item": "i", "timestamp": "t"}, r"line 3: timestamp"),
    ("x.inter", "user_id:token\titem_id:token\n1\n", "auto", None,
     r"line 2: expected 2 fields \(as on line 1\), got 1"),
])
def test_malformed_files_name_file_line_and_problem(tmp_path, name, text, fmt, columns, match):
    path = write(tmp_path, name, text)
    with pytest.raises(DataFormatError, match=match) as info:
        read_interactions(path, fmt, columns)
    assert name in str(info.value)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataFormatError, match="file not found"):
        read_interactions(tmp_path / "nope.txt")
    with pytest.raises(DataFormatError, match="unknown format 'xml'"):
        read_interactions(write(tmp_path, "a.txt", "1 2\n"), "xml")


ids = st.integers(min_value=0, max_value=10**9)


@HYP
@given(rows=st.lists(st.tuples(ids, ids), min_size=1, max_size=50))
def test_sasrec_roundtrip(tmp_path, rows):
    path = write(tmp_path, "h.txt", "".join(f"{u} {i}\n" for u, i in rows))
    ev = read_interactions(path, "sasrec")
    assert ev.users.tolist() == [str(u) for u, _ in rows] and ev.items.tolist() == [str(i) for _, i in rows]


@HYP
@given(rows=st.lists(st.tuples(ids, ids, st.floats(0, 2e9)), min_size=1, max_size=30),
       bad_at=st.integers(0, 29), garbage=st.sampled_from(["a::b", "1::2::3", "1::::3::4", "1::2::3::-1",
                                                          "1::2::3::nan", "::::"]))
def test_movielens_dat_garbage_line_is_reported(tmp_path, rows, bad_at, garbage):
    lines = [f"{u}::{i}::4::{t}" for u, i, t in rows]
    bad_at = min(bad_at, len(lines))
    lines.insert(bad_at, garbage)
    path = write(tmp_path, "ratings.dat", "\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as info:
        read_interactions(path)
    assert f"line {bad_at + 1}" in str(info.value)


@HYP
@given(tokens=st.lists(st.text(alphabet="0123456789ab -", min_size=1, max_size=8), min_size=1, max_size=20))
def test_s3rec_never_crashes_with_an_unclear_error(tmp_path, tokens):
    path = write(tmp_path, "g.txt", "\n".join(tokens) + "\n")
    try:
        ev = read_interactions(path, "s3rec")
    except DataFormatError as exc:
        assert "g.txt" in str(exc)
    else:
        assert len(ev.users) == len(ev.items) > 0
        assert ev.items.dtype.kind == "U" and all(ev.items) and all(ev.users)


@pytest.mark.parametrize("header, user, item, time", [
    ("user_id,item_id,timestamp", "user_id", "item_id", "timestamp"),
    ("userId,movieId,rating,ts", "userId", "movieId", "ts"),
    ("UserID,ItemID,Date", "UserID", "ItemID", "Date"),
    ("uid,iid", "uid", "iid", None),
    ("USER,product_id,datetime", "USER", "product_id", "datetime"),
    ("user,item,time,extra", "user", "item", "time"),
    ("extra,item_id,user_id", "user_id", "item_id", None),
])
def test_csv_recognises_common_header_names(tmp_path, caplog, header, user, item, time):
    names = header.split(",")
    values = {user: "u1", item: "i9", time: "2021-01-02", "rating": "4"}
    row = ",".join(values.get(name, "x") for name in names)
    path = write(tmp_path, "log.tsv" if "Date" in header else "log.csv",
                 (header + "\n" + row + "\n").replace(",", "\t" if "Date" in header else ","))
    with caplog.at_level("INFO"):
        ev = read_interactions(path)
    assert ev.users.tolist() == ["u1"] and ev.items.tolist() == ["i9"]
    assert (ev.timestamps is None) == (time is None)
    chosen = [r.getMessage() for r in caplog.records if "columns chosen" in r.getMessage()]
    assert chosen and f"user={user!r}" in chosen[0] and f"item={item!r}" in chosen[0]


def test_csv_header_preference_and_explicit_mapping_wins(tmp_path):
    path = write(tmp_path, "a.csv", "user,user_id,item,time,timestamp\nA,a,i,1,2\n")
    ev = read_interactions(path)
    assert ev.users.tolist() == ["a"] and ev.timestamps.tolist() == [2.0]  # user_id over user, timestamp over time
    ev = read_interactions(path, columns={"user": "user", "item": "item"})
    assert ev.users.tolist() == ["A"] and ev.timestamps is None


def test_csv_without_recognisable_header_says_how_to_map(tmp_path):
    path = write(tmp_path, "a.csv", "who,what\nalice,x\n")
    with pytest.raises(DataFormatError, match=r"a.csv, line 1: no user or item column in the header.*data.columns"):
        read_interactions(path)
    with pytest.raises(DataFormatError, match=r"line 1: no item column"):
        read_interactions(write(tmp_path, "b.csv", "UserId,what\nalice,x\n"))
    headless = write(tmp_path, "c.csv", "1,2,3\n4,5,6\n")
    with pytest.raises(DataFormatError, match="0-based indices"):
        read_interactions(headless)
    with pytest.raises(DataFormatError, match="empty file"):
        read_interactions(write(tmp_path, "d.csv", "\n"), "csv")


def test_formats_package_keeps_its_public_names():
    import sinkrec.data.formats as formats

    for name in formats.__all__:
        assert hasattr(formats, name), name
    assert set(formats.READERS) == {"sasrec", "s3rec", "recbole", "movielens-dat", "movielens-csv", "csv", "parquet",
                                    "jsonl"}
    folder = Path(formats.__file__).parent
    sizes = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
    assert max(sizes.values()) < 400, sizes
