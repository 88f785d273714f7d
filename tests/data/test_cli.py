"""``python -m ablate.data``: Hydra overrides (data=<preset>, data.<key>=..., experiment=...)
composed from conf/, prepared through the real code path; one `error:` line (exit 2) for any bad
argument or input, never a traceback."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.errors import assert_one_error_line

from ablate.data import DataConfig, prepare_command, read_shard, resolve_dataset, write_shard
from ablate.data.__main__ import main, normalize_overrides, parse_count
from ablate.errors import ConfigError, DataError

SHARD = 9000


@pytest.fixture(scope="module")
def src(tmp_path_factory, docs):
    path = tmp_path_factory.mktemp("cli") / "docs.jsonl"
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    return path


def cli(*args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ablate.data", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_prepare_files_subprocess(src, tmp_path, docs, dh):
    """The documented form, in a fresh process: worker processes, a progress bar in tokens/s,
    count suffixes, then the result checked as a training job would load it."""
    r = cli(
        "data=files",
        f"data.data_files={src}",
        "data.path=prepared",
        "data.shard_tokens=9k",
        "data.val_fraction=0.3",
        "data.workers=2",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "tok/s" in r.stderr  # tqdm's rate
    assert r.stdout.startswith("data files: local files;") and "ready: one eval" in r.stdout
    out = tmp_path / "prepared"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["complete"] and meta["spec"]["shard_tokens"] == SHARD
    assert meta["spec"]["data_files"] == [str(src)] and meta["spec"]["tokenizer"] == "gpt2"
    assert [s["file"] for s in meta["shards"]][:2] == [
        "data_val_000000.bin",
        "data_train_000001.bin",
    ]
    from ablate.data.split import is_val

    train = np.concatenate([np.asarray(read_shard(out / s["file"])) for s in meta["shards"][1:]])
    val = np.asarray(read_shard(out / meta["shards"][0]["file"]))
    # training: the documents hashed to it, then the validation ones that share a span with it
    want = [d for d in docs if not is_val(d, 0.3)]
    got = dh.split_docs(train)
    assert got[: len(want)] == want
    assert sorted(got[len(want) :] + dh.split_docs(val)) == sorted(
        d for d in docs if is_val(d, 0.3)
    )
    # a rerun finds it done: same files, nothing rewritten
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.rglob("*")}
    r = cli(
        "-q",
        "data=files",
        f"data.data_files={src}",
        "data.path=prepared",
        "data.shard_tokens=9000",
        "data.val_fraction=0.3",
        cwd=tmp_path,
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*")} == mtimes


@pytest.mark.parametrize(
    "args,expect",
    [
        (
            ["--source", "files"],
            "--source: not understood; give Hydra overrides such as data=finewebedu",
        ),
        (["prepare"], "prepare: not understood"),
        (["model=gpt2"], "model=gpt2: python -m ablate.data takes only data=<preset>"),
        (
            ["data=nope"],
            "data=nope: no such data; the data options are: embedded, files, finewebedu, shards, textdir",
        ),
        (["data.total_tokens=ten"], "data.total_tokens=ten: not a token count"),
        (["data.shard_tokens=-5"], "data.shard_tokens=-5: not a token count"),
        (["data.bogus=1"], "data.bogus is not a config key"),
        (["data=files"], "data.data_files: the files source needs a glob"),
        (["data=files", "data.data_files=nothing*.jsonl"], "nothing*.jsonl: no file matches"),
        (["data=textdir"], "data.path: the textdir source needs a folder"),
        (["data=shards", "data.path=none_*.bin"], "none_*.bin: no shard matches this glob"),
        (["data=files", "data.path=a,b"], "data.path=a,b: lists several values"),
        (["info"], "info: the following arguments are required: path"),
        (["info", "nowhere"], "nowhere: no shard matches this glob"),
    ],
)
def test_bad_arguments_one_error_line(capsys, tmp_path, monkeypatch, args, expect):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(capsys, *args)
    assert code == 2 and out == ""
    assert_one_error_line(err, expect)
    assert not (tmp_path / "data").exists()


def test_bad_argument_subprocess_has_no_traceback(tmp_path):
    r = cli("data=files", "data.data_files=missing.jsonl", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "error: missing.jsonl: no file matches; set "
        "data.data_files to existing .jsonl/.parquet/.txt "
        "files or a glob that matches them"
    ]


def test_help(capsys):
    code, out, err = run_main(capsys, "--help")
    assert code == 0 and err == ""
    for text in (
        "data=finewebedu",
        "data.total_tokens",
        "data=files data.data_files=",
        "data=textdir",
        "data=shards",
        "info",
        "tokens/s",
    ):
        assert text in out, text


def test_counts_and_overrides():
    assert parse_count("100M") == 100_000_000 and parse_count("10B") == 10**10
    assert parse_count("2.5k") == 2500 and parse_count("1_000") == 1000
    for bad in ("0", "1.5", "x", "-3", "10T"):
        with pytest.raises(ValueError):
            parse_count(bad)
    assert normalize_overrides(
        [
            "data=finewebedu",
            "data.total_tokens=1B",
            "data.shard_tokens=50M",
            "data.total_tokens=null",
        ]
    ) == [
        "data=finewebedu",
        "data.total_tokens=1000000000",
        "data.shard_tokens=50000000",
        "data.total_tokens=null",
    ]
    with pytest.raises(ConfigError, match="seed=1: python -m ablate.data takes only"):
        normalize_overrides(["seed=1"])


def test_experiment_selects_its_data(capsys, monkeypatch, tmp_path):
    """experiment=ra_ablation means FineWebEdu at block 1024: not prepared here, so the
    error says where and gives the command."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("ablate.data.prepare.open_documents", _no_hub)
    code, _, err = run_main(capsys, "experiment=ra_ablation")
    assert code == 2 and "HuggingFaceFW/fineweb-edu (sample-10BT, train): cannot stream" in err
    code, out, err = run_main(capsys, "-q", "experiment=smoke")
    assert code == 0 and out.startswith("data embedded:") and "block_size 128" in out


def _no_hub(spec):
    from ablate.data.prepare import _hf_error

    raise _hf_error(spec, ConnectionError("Couldn't reach the Hub"))
    yield  # pragma: no cover


def test_missing_data_message_command_prepares_it(src, tmp_path, monkeypatch, capsys):
    """The command the 'not prepared' error proposes, run as given, makes data that resolves."""
    monkeypatch.chdir(tmp_path)
    cfg = DataConfig(
        source="files",
        path="my corpus/out",
        data_files=str(src),
        shard_tokens=SHARD,
        total_tokens=4 * SHARD,
        val_fraction=0.3,
    )
    with pytest.raises(DataError) as e:
        resolve_dataset(cfg, 50304)
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / "my corpus/out") + ": no prepared files shards here")
    command = msg.split("prepare them with: ", 1)[1]
    assert command == prepare_command(cfg)
    argv = shlex.split(command)
    assert argv[:4] == ["python", "-m", "ablate.data", "data=files"]
    code, out, err = run_main(capsys, "-q", *argv[3:])
    assert code == 0, err
    ds = resolve_dataset(cfg, 50304)
    chunks = [p for p in ds.train_paths if not p.endswith("data_train_moved.bin")]
    assert ds.meta["streamed_tokens"] <= 4 * SHARD and len(chunks) == 3
    assert ds.meta["spec"]["val_fraction"] == 0.3


def test_not_prepared_command_for_finewebedu_round_trips(tmp_path, monkeypatch):
    """Non-default keys appear as overrides that compose back to the same data config."""
    from ablate.data.__main__ import compose

    cfg = DataConfig(
        source="finewebedu",
        path="x/y z",
        total_tokens=10**9,
        hf_config="sample-100BT",
        shard_tokens=5 * 10**7,
        val_fraction=0.02,
    )
    command = prepare_command(cfg)
    assert command.startswith("python -m ablate.data data=finewebedu ")
    composed = compose(shlex.split(command)[3:]).data
    keys = ("source", "path", "total_tokens", "hf_config", "shard_tokens", "hf_path", "split")
    for key in (*keys, "val_fraction"):
        assert getattr(composed, key) == getattr(cfg, key), key
    preset = compose(["data=finewebedu"]).data
    assert prepare_command(preset) == "python -m ablate.data data=finewebedu"
    assert preset.val_fraction == 0.01  # the preset's share is left out, another one is not
    assert prepare_command(DataConfig(source="finewebedu")).endswith(" data.val_fraction=0.1")


def test_info(src, tmp_path, capsys):
    from ablate.data import prepare as P

    out = tmp_path / "p"
    spec = P.PrepareSpec(
        source="files", data_files=[str(src)], file_format="json", shard_tokens=SHARD
    )
    meta = P.prepare(out, spec, workers=0, progress=False)
    code, text, err = run_main(capsys, "info", str(out), "--verify")
    assert code == 0 and f"tokens={meta['tokens']:,}" in text
    assert text.count(" ok\n") == len(meta["shards"])
    victim = out / meta["shards"][1]["file"]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    code, text, err = run_main(capsys, "info", str(out), "--verify")
    assert code == 2 and err.startswith(f"error: {victim}: sha256 differs from meta.json")
    code, text, err = run_main(capsys, "info", str(out / "*.bin"))
    assert code == 0 and "data shards:" in text
    write_shard(tmp_path / "a_val.bin", np.arange(10))
    write_shard(tmp_path / "bad.bin", np.arange(10))
    (tmp_path / "bad.bin").write_bytes((tmp_path / "bad.bin").read_bytes()[:-4])
    code, text, err = run_main(capsys, "info", str(tmp_path / "*.bin"))
    assert code == 2 and err.startswith(f"error: {tmp_path / 'bad.bin'}: header says 10 tokens")


def suggested_commands(err: str) -> list[list[str]]:
    """The commands an error line proposes (each between backticks), as argv lists."""
    return [shlex.split(c) for c in err.split("`")[1::2]]


def assert_accepted(argv: list[str]) -> None:
    """The command's own parser and composition take ``argv`` (run, not just read): the data
    command's overrides, or the matrix's (composed and checked as the matrix does)."""
    assert argv[:2] == ["python", "-m"], argv
    if argv[2] == "ablate.data":
        from ablate.data.__main__ import compose

        assert not compose(argv[3:]).data.problems()
    else:
        from ablate.compose import build_jobs
        from ablate.matrix.__main__ import parse_argv

        assert argv[2] == "ablate.matrix", argv
        overrides, multirun, _ = parse_argv(argv[3:])
        build_jobs(overrides, multirun)


def test_val_shard_smaller_than_one_eval_is_refused_after_prepare(src, tmp_path, capsys):
    """The default model (block 128, 8 val windows) needs 1025 validation tokens; the docs at
    val_fraction 0.1 leave one validation document of 194 tokens. Every fix printed is a command
    its own parser accepts; the computed share, run as printed, holds one eval."""
    out = tmp_path / "small"
    args = ["-q", "data=files", f"data.data_files={src}", f"data.path={out}"]
    code, _, err = run_main(capsys, *args, "data.shard_tokens=1000")
    assert code == 2, err
    assert_one_error_line(err)
    assert err.startswith(
        f"error: {out / 'data_val_000000.bin'}: validation holds 194 tokens in 1 document(s); "
        "one eval of data.val_windows=8 windows x model.block_size=128 needs 1,025"
    ), err
    commands = suggested_commands(err)
    assert [c[2] for c in commands] == ["ablate.data", "ablate.matrix", "ablate.matrix"], err
    for argv in commands:
        assert_accepted(argv)
    assert "data.val_windows=1" in commands[1] and "model.block_size=24" in commands[2]
    assert "for the matrix" in err.split("`")[2] and "for the matrix" in err.split("`")[4]
    share = next(a for a in commands[0] if a.startswith("data.val_fraction="))
    kept = int(err.split("it keeps ", 1)[1].split(" ", 1)[0].replace(",", ""))
    code, out_text, err = run_main(capsys, "-q", *commands[0][3:])
    assert code == 0, err
    meta = json.loads((Path(f"{out}-val{share.split('=')[1]}") / "meta.json").read_text())
    assert meta["val_tokens"] == kept >= 1025
    code, out_text, err = run_main(capsys, *args, "data.shard_tokens=1000", "data.val_windows=1")
    assert code == 0 and "one eval = 1 windows" in out_text


def _few_documents(path: Path, n: int, words: int) -> list[float]:
    """n documents of about ``words`` words each; returns their split keys."""
    from ablate.data.split import doc_key

    texts = [
        f"Document {i} about topic {i}. " + f"Plain words on topic {i}. " * words for i in range(n)
    ]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return [doc_key(t) for t in texts]


def test_a_corpus_all_in_validation_gets_the_share_that_splits_it(tmp_path, capsys):
    # Every document hashed below val_fraction: the advice is computed from the corpus (its
    # documents' keys and sizes), and the command it gives then prepares data that trains.
    keys = _few_documents(tmp_path / "few.jsonl", 8, 40)
    share = min(0.99, max(keys) + 0.005)
    common = [f"data.data_files={tmp_path / 'few.jsonl'}", "data.val_windows=2", "-q"]
    code, _, err = run_main(
        capsys, "data=files", f"data.path={tmp_path / 'a'}", f"data.val_fraction={share}", *common
    )
    assert code == 2, err
    assert_one_error_line(err, "all 8 document(s) went to validation")
    assert "total_tokens" not in err, err
    suggested = shlex.split(err.split("prepare into another folder: ", 1)[1])
    assert suggested[:3] == ["python", "-m", "ablate.data"]
    new_share = float(
        next(a for a in suggested if a.startswith("data.val_fraction=")).split("=")[1]
    )
    assert min(keys) < new_share <= max(keys)  # some documents on each side
    code, out, err = run_main(capsys, *suggested[3:], *common)
    assert code == 0, err
    assert "ready: one eval = 2 windows" in out + err


def test_a_corpus_too_small_to_split_says_so_with_its_sizes(tmp_path, capsys):
    keys = _few_documents(tmp_path / "few.jsonl", 3, 10)
    share = min(0.99, max(keys) + 0.005)
    code, _, err = run_main(
        capsys,
        "data=files",
        f"data.data_files={tmp_path / 'few.jsonl'}",
        f"data.path={tmp_path / 'b'}",
        f"data.val_fraction={share}",
        "-q",
    )
    assert code == 2, err
    assert_one_error_line(err, "the whole corpus holds", "in 3 document(s); one eval needs")
    assert "add documents, or run this command again with a lower data.val_windows" in err
    assert "model.block_size, an option of python -m ablate.matrix only" in err
    assert "total_tokens" not in err
    # as said: this command takes data.val_windows, and with 1 window the split is computed
    code, _, err = run_main(
        capsys,
        "data=files",
        f"data.data_files={tmp_path / 'few.jsonl'}",
        f"data.path={tmp_path / 'b'}",
        f"data.val_fraction={share}",
        "data.val_windows=1",
        "-q",
    )
    assert code == 2 and "prepare into another folder: python -m ablate.data" in err, err


def test_workers_0_tokenizes_in_this_process_and_below_0_is_refused(
    src, tmp_path, capsys, monkeypatch
):
    """data.workers=0 is documented as "tokenize in-process": accepted, and no pool is started."""
    from ablate.data import prepare as P

    def no_pool(*a, **k):
        raise AssertionError("data.workers=0 started a process pool")

    monkeypatch.setattr(P.mp, "Pool", no_pool)
    out = tmp_path / "p"
    args = ["-q", "data=files", f"data.data_files={src}", f"data.path={out}", "data.val_windows=1"]
    code, _, err = run_main(capsys, *args, "data.workers=-1")
    assert code == 2 and err == "error: data.workers=-1 must be at least 0\n"
    assert not out.exists()
    code, _, err = run_main(capsys, *args, "data.workers=0")
    assert code == 0, err
    assert json.loads((out / "meta.json").read_text())["tokens"] > 0


BOILERPLATE = " ".join(
    f"Clause {i}: the licensee shall keep this notice, the copyright line and the list of "
    "conditions in every copy."
    for i in range(8)
)


def _near_duplicates(folder: Path, val_fraction: float) -> tuple[list[str], list[bool]]:
    """Ten license-like texts sharing a long clause block, eight texts of their own, as .txt
    files; salted until some (not all) license texts and no other text hash to validation.
    Returns (texts, which are license texts)."""
    from ablate.data.split import is_val

    for salt in range(1000):
        lic = [
            f"License {salt}-{i}, version {i}.\n{BOILERPLATE}\nSpecific terms {i}: "
            + " ".join(f"term{i}x{j}" for j in range(60))
            for i in range(10)
        ]
        own = [
            f"Note {salt}-{i}.\n" + " ".join(f"word{i}y{j} stands alone" for j in range(80))
            for i in range(8)
        ]
        if 1 <= sum(is_val(t, val_fraction) for t in lic) < 10 and not any(
            is_val(t, val_fraction) for t in own
        ):
            break
    folder.mkdir()
    for i, t in enumerate(lic + own):
        (folder / f"{i:02d}.txt").write_text(t)
    return lic + own, [True] * len(lic) + [False] * len(own)


def test_near_duplicate_validation_moves_to_training_and_the_lines_say_so(tmp_path, capsys):
    """data=files on text files whose validation documents all share a clause block with
    training: they move to training (a line says how many, as it happens), the done line and
    meta.json count every token, and the error that follows names the cause and fixes that the
    commands they name accept: the computed val_fraction (run: it holds what it claims) and
    data=textdir on the same folder (resolved: it holds what it claims)."""
    from ablate.data import get_gpt2_encoding
    from ablate.data.split import is_val

    texts, licensed = _near_duplicates(tmp_path / "corpus", 0.3)
    enc = get_gpt2_encoding()
    sizes = [1 + len(enc.encode_ordinary(t)) for t in texts]
    total = sum(sizes)
    moved = [i for i, t in enumerate(texts) if is_val(t, 0.3)]
    moved_tokens = sum(sizes[i] for i in moved)
    assert moved and all(licensed[i] for i in moved)
    r = cli(
        "data=files",
        f"data.data_files={tmp_path / 'corpus'}/*.txt",
        f"data.path={tmp_path / 'out'}",
        "data.val_fraction=0.3",
        "data.workers=0",
        cwd=tmp_path,
    )
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.splitlines()
    out = tmp_path / "out"
    assert any(
        line.endswith(
            f"INFO {out}: moved {len(moved)} of {len(moved)} validation documents "
            f"({moved_tokens} tokens) to training (data_train_moved.bin): each shares a 64-token "
            "span with training (near-duplicates); validation keeps 0 tokens"
        )
        for line in lines
    ), r.stderr
    done = next(line for line in lines if f"{out}: done, " in line)
    assert (
        f"done, 3 shards, {total} tokens (val 0, train {total}, of which {moved_tokens} moved "
        "from validation) in "
    ) in done, done
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tokens"] == meta["streamed_tokens"] == meta["train_tokens"] == total
    assert sum(s["tokens"] for s in meta["shards"]) == total
    assert (meta["split"]["removed_documents"], meta["split"]["removed_tokens"]) == (
        len(moved),
        moved_tokens,
    )
    err = lines[-1] + "\n"
    assert_one_error_line(
        err,
        f"{out / 'data_val_000000.bin'}: validation holds 0 tokens in 0 document(s); one eval of "
        "data.val_windows=8 windows x model.block_size=128 needs 1,025; "
        f"{len(moved)} validation document(s) ({moved_tokens:,} tokens) shared 64-token spans "
        "with training and are in training; ",
    )
    commands = suggested_commands(err)
    assert [c[:4] for c in commands] == [
        ["python", "-m", "ablate.data", "data=files"],
        ["python", "-m", "ablate.data", "data=textdir"],
    ], err  # 0 validation tokens: no eval size of the matrix fits
    for argv in commands:
        assert_accepted(argv)
    claims = [int(p.split(" ", 1)[0].replace(",", "")) for p in err.split("it keeps ")[1:]]
    code, _, e = run_main(capsys, "-q", *commands[0][3:])
    assert code == 0, e
    share = next(a for a in commands[0] if a.startswith("data.val_fraction=")).split("=")[1]
    meta = json.loads((Path(f"{out}-val{share}") / "meta.json").read_text())
    assert meta["val_tokens"] == claims[0] >= 1025 and meta["tokens"] == total
    textdir = resolve_dataset(
        DataConfig(source="textdir", path=str(tmp_path / "corpus"), val_fraction=0.3), 50304
    )
    assert textdir.val_tokens == claims[1] >= 1025


def test_a_textdir_validation_smaller_than_one_eval_gets_the_share_that_holds_one(tmp_path, capsys):
    """Ten text files of 202 tokens: textdir's split holds 1,010 validation tokens, one eval
    needs 1,025; the share printed, run as printed, holds what it claims, and each fix is a
    command its parser accepts."""
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(10):
        (folder / f"{i}.txt").write_text(" ".join(f"word{i}y{j} alone" for j in range(40)) + "\n")
    code, _, err = run_main(capsys, "-q", "data=textdir", f"data.path={folder}")
    assert code == 2, err
    assert_one_error_line(err, "validation holds 1,010 tokens in 5 document(s)", "needs 1,025")
    commands = suggested_commands(err)
    assert [c[2] for c in commands] == ["ablate.data", "ablate.matrix", "ablate.matrix"], err
    for argv in commands:
        assert_accepted(argv)
    claimed = int(err.split("it keeps ", 1)[1].split(" ", 1)[0].replace(",", ""))
    code, text, err = run_main(capsys, *commands[0][3:])
    assert code == 0, err
    assert f"{claimed:,} val tokens" in text and claimed >= 1025
