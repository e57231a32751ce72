import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from xfer.config import StudyConfig
from xfer.report import experiments


class Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.tables, self.cells, self.text = [], 0, [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs).get("src", ""))
        if tag == "table":
            self.tables += 1

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def tiny_study(synth_pack, lenet_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    args = StudyConfig(name="tiny", data=str(synth_pack), source=str(lenet_onnx), modes=("frozen", "reuse"), seeds=(0,),
                       epochs=1, batch_size=32, lr=1e-3, head=(32, 16), per_image_limit=5, bench_threads=(1,), out=str(out))
    results = experiments.main(args)
    return out / "tiny", results


def test_results_and_report(tiny_study):
    root, results = tiny_study
    saved = json.loads((root / "results.json").read_text())
    assert len(saved["runs"]) == 4
    assert set(saved["summary"]) == {"random", "loco"}
    assert saved["summary"]["loco"]["frozen"]["splits"] == ["loco:aia"]
    html = (root / "report.html").read_text()
    p = Collector()
    p.feed(html)
    assert p.tables >= 5
    assert p.imgs and all(src.startswith("data:image/png;base64,") for src in p.imgs)  # self-contained
    text = " ".join(p.text)
    for protocol in ("random", "loco"):
        for mode in ("frozen", "reuse"):
            s = saved["summary"][protocol][mode]
            assert f"{s['acc_mean']:.3f}" in text and s["n"] == 1
    assert "± 0." not in text  # one seed: a mean, no spread
    assert "0.715" in text and "477.38" in text  # the study's own numbers beside ours
    md = (root / "report.md").read_text()
    for ref in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (root / ref).is_file(), ref


def test_results_json_reads_back_as_the_record(tiny_study):
    """results.json is the record's JSON: read back, it is the same record, nested records and all."""
    from xfer.report.results import StudyResult

    root, results = tiny_study
    back = StudyResult.from_json(json.loads((root / "results.json").read_text()))
    assert back == results
    assert back.summary["random"]["frozen"].acc_mean == results.summary["random"]["frozen"].acc_mean
    assert back.bench.lead.median_s > 0 and back.showcase.mode == "frozen"


def test_the_cli_prints_table1_and_the_files(tiny_study):
    from xfer.report.console import study_text

    _, results = tiny_study
    text = study_text(results)
    assert "Table 1 (random split)" in text and "Table 1 (loco split)" in text and "frozen" in text


def test_rerun_reuses_finished_runs(tiny_study, synth_pack, lenet_onnx, monkeypatch):
    root, _ = tiny_study
    from xfer import train

    monkeypatch.setattr(train, "main", lambda *a, **k: pytest.fail("finished run was retrained"))
    step = experiments.Step("random", "frozen", 0, "random")
    args = StudyConfig(data=str(synth_pack), source=str(lenet_onnx), epochs=1, batch_size=32, lr=1e-3, head=(32, 16),
                       bench_threads=(1,))
    r = experiments.run_step(step, args, root)
    assert r.bench_accuracy == r.test_accuracy


def test_every_figure_decodes(tiny_study):
    import base64
    import io

    from PIL import Image

    root, _ = tiny_study
    p = Collector()
    p.feed((root / "report.html").read_text())
    assert p.imgs
    for src in p.imgs:
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        img.load()
        assert min(img.size) > 50


@pytest.mark.skipif(not shutil.which("chromium"), reason="Chromium is not installed (.ci/run installs it where apt can)")
@pytest.mark.parametrize("width,name", [(1280, "desktop"), (390, "phone")])
def test_report_renders_in_chromium(tiny_study, tmp_path, width, name):
    """Headless Chromium loads the page from file:// with no console error; the screenshot lands beside the report."""
    root, _ = tiny_study
    shot = root / f"screenshot-{name}.png"
    r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path}/u",
                        "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", f"--window-size={width},3000",
                        (root / "report.html").as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file() and shot.stat().st_size > 10_000
    console_errors = [line for line in r.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()]
    assert not console_errors, console_errors


def test_spread_needs_two_runs():
    from xfer.tables import spread

    assert spread(0.91234, 0.0, 1) == "0.912"
    assert spread(0.91234, 0.01, 3) == "0.912 ± 0.010"


def test_three_sources_side_by_side(synth_pack, lenet_onnx, tmp_path):
    import shutil

    others = (tmp_path / "other.onnx", tmp_path / "third.onnx")
    for o in others:
        shutil.copy(lenet_onnx, o)
    res = experiments.main(StudyConfig(name="three", data=str(synth_pack), source=str(lenet_onnx),
                                       compare_source=tuple(map(str, others)), modes=("frozen",), seeds=(0,),
                                       protocols=("random",), epochs=1, batch_size=32, head=(16,), per_image_limit=5,
                                       bench_threads=(1,), bench_images=50, out=str(tmp_path / "reports")))
    assert res.summary_compare is not None and res.summaries_compare is not None
    assert [s["random"]["frozen"].n for s in res.by_source] == [1, 1, 1] and len(res.sources) == 3
    assert res.sources[0].dataset == "sklearn-digits"
    assert sorted({r.index for r in res.runs}) == [0, 1, 2]
    assert (tmp_path / "reports" / "three" / "runs" / "compare2" / "random" / "frozen-s0.onnx").is_file()
    html = (tmp_path / "reports" / "three" / "report.html").read_text()
    assert "Table 1 by pretraining source" in html and "third (mxnet, sklearn-digits" in html
