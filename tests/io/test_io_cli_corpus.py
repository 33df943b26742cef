"""The CLI on every corpus file: exit 0 or 2, at most a one-line error, never a traceback.

Runs quantcore.cli.main in-process (the same function `python -m quantcore` calls) on the corpus
written to a temp dir, for `list FILE` and for analysing FILE (with --tensor when the case names one).
"""

from __future__ import annotations

import io

import pytest

from iocorpus import write_corpus

cli = pytest.importorskip("quantcore.cli", reason="the CLI module is the lead's; not present yet")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")))


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_on_every_corpus_file(corpus):
    assert len(corpus) >= 200
    codes = {0: 0, 2: 0}
    for case, path in corpus:
        for argv in (["list", path], ["analyze", path] + (["--tensor", case.tensor] if case.tensor else [])):
            code, out, err = _run(argv)
            assert code in (0, 2), (case.id, argv, code, err)
            assert "Traceback" not in err + out, (case.id, err)
            if code == 2:
                lines = err.strip().splitlines()
                assert len(lines) == 1 and lines[0].startswith("quantcore: error: "), (case.id, err)
            codes[code] += 1
    print(f"CLI over {len(corpus)} corpus files x 2 commands: exit 0: {codes[0]}, exit 2: {codes[2]}")
