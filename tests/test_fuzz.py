"""Seeded fuzzing: random command lines built from the real parser's flags, and
corrupted copies of every data file, must end in exit 0, 1 or 2 with one line
of error, never hang, and write JSON lines with finite numbers.

Everything is drawn from `random.Random(fixed seed)`, so a failure names its
case and reproduces.  Most cases run in this interpreter through the program's
public functions (the parser, open_session, load_catalog, Session, LogWriter),
a few as real subprocesses; the big variants are marked slow."""
import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import tempfile

import pytest

import fake_llm_training as flt
from conftest import run_program

PROG = "fake_llm_training"
CASE_SECONDS = 20          # an in-process case that runs longer than this is a hang

# Values a flag may be given: good ones, and the mistakes people (and fuzzers) make
GOOD = {
    "--seed": ["1", "42", "22", "999999", "0", "9223372036854775807"],
    "--speed": ["1", "1000", "1e6", "1e9", "0.5"],
    "--start-at": ["2026-01-01", "2025-06-30T12:00:00Z", "1700000000", "2026-03-01T00:00:00+02:00"],
    "--model": ["Llama-3.1-405B", "Llama-3.1-70B", "llama-3.1-8b", "GPT-2-124M", "Mixtral-8x7B"],
    "--gpu-type": ["H100", "A100-80GB", "V100", "L40S", "B200", "H100-PCIe"],
    "--gpus": ["1", "8", "16", "64", "576", "2048", "4096"],
    "--exit-after": ["1s", "2s"], "--exit-after-sim": ["1m", "2h", "1d"], "--exit-after-runs": ["1", "2"],
    "--rank": ["0", "7", "8", "4095"], "--data-dir": [flt.DATA_DIR], "-l": ["1", "3600"], "--node": ["0", "1"],
}
BAD = ["", " ", "\n", "x\ny", "-1", "0", "nan", "inf", "-inf", "5e-324", "1e400", "99999999999999999999",
       "2026-02-30", "2099-01-01", "\u00e9\u2028", "1h1", "\x00", "--", "3.5", "0x10"]


def parser_options(parser):
    """(option string, choices or None, takes a value) of every flag of the real parser."""
    out = []
    for action in parser._actions:
        for flag in action.option_strings:
            if flag in ("-h", "--help", "--version", "--tmux", "--tmux-layout"):
                continue
            out.append((flag, action.choices, action.nargs != 0))
    return out


def random_argv(rng, smi=False):
    parser = flt.build_smi_parser(PROG) if smi else flt.build_parser(PROG)
    options = parser_options(parser)
    argv = []
    for _ in range(rng.randint(0, 5)):
        flag, choices, takes = rng.choice(options)
        argv.append(flag)
        if not takes:
            continue
        pool = list(choices or GOOD.get(flag, ["1"]))
        argv.append(rng.choice(pool) if rng.random() < 0.7 else rng.choice(BAD))
    if rng.random() < 0.05:
        argv.append(rng.choice(["--bogus", "x\ny", "stray"]))
    return (["nvidia-smi"] if smi else []) + argv


@contextlib.contextmanager
def deadline(seconds, what):
    """Fail (not hang) when a case runs past `seconds`."""
    def expire(signum, frame):
        raise AssertionError("hang: %r ran past %d s" % (what, seconds))
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def finite_json(line):
    def refuse(name):
        raise ValueError("non-finite number %s in %r" % (name, line[:200]))
    return json.loads(line, parse_constant=refuse)


def check_error_text(status, err, case):
    """Exit 1: one line; exit 2: the usage line and one error line."""
    lines = err.splitlines()
    if status == 1:
        assert len(lines) == 1 and lines[0].startswith(PROG), (case, err)
    elif status == 2:
        assert len(lines) == 2 and lines[0].startswith("usage:") and ": error: " in lines[1], (case, err)


def advance_in_process(session, fmt, seconds=900.0):
    """Write `seconds` of the session's log in-process; jsonl lines must parse with finite numbers."""
    out = io.StringIO()
    writer = flt.LogWriter(session, out, fmt, 1.7e9)
    tau = 0.0
    for _ in range(6):
        _, tau = writer.advance(tau, seconds, flt.STREAM_CHUNK_STEPS)
        if tau >= seconds:
            break
    if fmt == "jsonl":
        for line in out.getvalue().splitlines():
            finite_json(line)
    return out.getvalue()


def in_process_case(argv):
    """What the program does with argv up to its first output, in this interpreter: the exit
    status and stderr of a refusal, or 0 after writing some of the session's log."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        smi = argv[:1] == ["nvidia-smi"]
        parser = flt.build_smi_parser(PROG) if smi else flt.build_parser(PROG)
        try:
            args = parser.parse_args(argv[1:] if smi else argv)
            if smi:
                args.list_models = args.list_gpus = False
        except flt.UsageError as exc:
            return flt.fail_usage(PROG, exc), err.getvalue()
        session, status = flt.open_session(args, PROG, io.StringIO(), smi=smi)
        if session is None:
            return status, err.getvalue()
        advance_in_process(session, "jsonl" if getattr(args, "format", None) == "jsonl" else "plain")
    return 0, err.getvalue()


def command_line_cases(seed, count):
    rng = random.Random(seed)
    cases = [random_argv(rng, smi=rng.random() < 0.15) for _ in range(count)]
    counts = {0: 0, 1: 0, 2: 0}
    for argv in cases:
        with deadline(CASE_SECONDS, argv):
            status, err = in_process_case(argv)
        assert status in (0, 1, 2), (argv, status, err)
        check_error_text(status, err, argv)
        counts[status] += 1
    return counts


# -- corrupted data files ----------------------------------------------------

NUMBER = re.compile(r"(?<=\|)(\s*)(-?\d+(?:\.\d+)?(?:e-?\d+)?)(\s*)(?=\||$)", re.M)
BAD_NUMBERS = ["0", "-1", "nan", "inf", "1e-300", "1e300", "99999999999999999999", "0.0", "", "1e5000"]


def corrupt(rng, data):
    """One corruption of a file's bytes, and its name."""
    how = rng.choice(("truncate", "flip", "bom", "crlf", "lone_cr", "number", "number", "number",
                      "drop_cell", "extra_cell", "separator", "pattern"))
    if how == "truncate":
        return data[:rng.randrange(len(data))], how
    if how == "flip":
        i = rng.randrange(len(data))
        return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:], how
    if how == "bom":
        return b"\xef\xbb\xbf" + data, how
    if how == "crlf":
        return data.replace(b"\n", b"\r\n"), how
    text = data.decode("utf-8")
    lines = text.split("\n")
    body = [i for i, line in enumerate(lines) if "|" in line and not line.startswith("#")][1:]
    i = rng.choice(body) if body else 0
    if how == "lone_cr":
        lines[i] = lines[i].replace("|", "\r|", 1)
    elif how == "separator":
        lines[i] = lines[i].replace(" | ", rng.choice([" \u2028 | ", " \x85| ", " |\x0c "]), 1)
    elif how == "number":
        spots = list(NUMBER.finditer(lines[i]))
        if spots:
            m = rng.choice(spots)
            lines[i] = lines[i][:m.start(2)] + rng.choice(BAD_NUMBERS) + lines[i][m.end(2):]
    elif how == "drop_cell":
        lines[i] = "|".join(lines[i].split("|")[:-1])
    elif how == "extra_cell":
        lines[i] += " | 7"
    else:
        lines[i] = rng.choice(["{n[0]}", "{n.foo}", "{n:c}", "{x}", "{n}{n}", "h{n:>99999d}"]) + lines[i][lines[i].find("|"):]
    return "\n".join(lines).encode("utf-8"), how


def data_cases(seed, count, tmp):
    rng = random.Random(seed)
    names = sorted(flt.TABLES)
    counts = {}
    for case in range(count):
        work = os.path.join(tmp, "data%d" % case)
        shutil.copytree(flt.DATA_DIR, work)
        name = rng.choice(names)
        path = os.path.join(work, name)
        with open(path, "rb") as f:
            data, how = corrupt(rng, f.read())
        with open(path, "wb") as f:
            f.write(data)
        what = (seed, case, name, how)
        with deadline(CASE_SECONDS, what):
            try:
                catalog = flt.load_catalog(work)
            except flt.DataError as exc:
                assert re.match(r"^.+\.txt:\d+: \S", str(exc)) and "\n" not in flt.one_line(exc), (what, exc)
                outcome = "exit 1"
            else:
                try:
                    session = flt.Session(catalog, rng.randrange(1000), {}, "often")
                    advance_in_process(session, "jsonl", 600.0)
                    outcome = "ran"
                except flt.ConfigError:
                    outcome = "exit 2"
        counts[(how, outcome)] = counts.get((how, outcome), 0) + 1
        shutil.rmtree(work)
    return counts


def subprocess_cases(seed, count, tmp):
    """Real runs: random command lines, some with a corrupted --data-dir."""
    rng = random.Random(seed)
    counts = {0: 0, 1: 0, 2: 0}
    for case in range(count):
        argv = [a.replace("\x00", "") for a in random_argv(rng, smi=rng.random() < 0.2)]   # no argv holds NUL
        if rng.random() < 0.3:
            work = os.path.join(tmp, "sub%d" % case)
            shutil.copytree(flt.DATA_DIR, work)
            name = rng.choice(sorted(flt.TABLES))
            with open(os.path.join(work, name), "rb") as f:
                data, _ = corrupt(rng, f.read())
            with open(os.path.join(work, name), "wb") as f:
                f.write(data)
            argv += ["--data-dir", work]
        argv += ["--exit-after", "1s", "--speed", rng.choice(["1", "1e6", "1e9"])]
        if argv[0] != "nvidia-smi":
            argv += ["--format", rng.choice(["plain", "jsonl"])]
        out = run_program(argv, timeout=60)
        assert out.returncode in (0, 1, 2), (argv, out.returncode, out.stderr)
        check_error_text(out.returncode, out.stderr, argv)
        formats = [b for a, b in zip(argv, argv[1:]) if a == "--format"]
        listing = "--list-models" in argv or "--list-gpus" in argv                  # a table, whatever the format
        if out.returncode == 0 and formats[-1:] == ["jsonl"] and not listing:     # the last --format wins
            for line in out.stdout.splitlines():
                finite_json(line)
        counts[out.returncode] += 1
    return counts


def test_fuzz_quick_command_lines():
    counts = command_line_cases(1901, 40)
    assert counts[0] and counts[2], counts          # the draw made both runs and refusals


def test_fuzz_quick_data_files(tmp_path):
    counts = data_cases(1902, 24, str(tmp_path))
    assert any(o == "exit 1" for _, o in counts) and any(o == "ran" for _, o in counts), counts


def test_fuzz_quick_subprocesses(tmp_path):
    counts = subprocess_cases(1903, 4, str(tmp_path))
    assert sum(counts.values()) == 4


@pytest.mark.slow
def test_fuzz_command_lines():
    counts = command_line_cases(19, 300)
    print("command lines by exit status:", counts)
    assert counts[0] and counts[2], counts


@pytest.mark.slow
def test_fuzz_data_files(tmp_path):
    counts = data_cases(190, 200, str(tmp_path))
    print("data files by corruption and outcome:", sorted(counts.items()))
    assert sum(n for (_, o), n in counts.items() if o == "exit 1") >= 50, counts


@pytest.mark.slow
def test_fuzz_subprocesses(tmp_path):
    counts = subprocess_cases(1900, 16, str(tmp_path))
    print("subprocesses by exit status:", counts)
    assert sum(counts.values()) == 16
