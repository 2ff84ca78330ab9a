"""The generate command line: writes a PNG carrying its settings, refuses bad input with a message."""

from clipkit.cli import main
from clipkit.guidance.images import read_settings


def test_generate_cli_writes_png_with_settings(tmp_path, capsys):
    out = tmp_path / "red.png"
    rc = main(["run", "generate", "--prompt", "a red circle", "--steps", "2", "--size", "32", "--cutouts", "2",
               "--seed", "7", "--model", "tiny-clip", "--pretrained", "random", "--out", str(out)])
    assert rc == 0 and out.is_file()
    s = read_settings(out)["settings"]
    assert (s["method"], s["prompt"], s["seed"], s["steps"], s["model"]) == ("generate", "a red circle", 7, 2,
                                                                              "tiny-clip")
    assert "wrote" in capsys.readouterr().out


def test_generate_cli_reports_errors_without_traceback(tmp_path, capsys):
    rc = main(["run", "generate", "--prompt", " ", "--model", "tiny-clip", "--pretrained", "random",
               "--out", str(tmp_path / "x.png")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: empty prompt") and "Traceback" not in err
    rc = main(["run", "generate", "--model", "ViT-B-32", "--pretrained", str(tmp_path / "missing.pt"),
               "--out", str(tmp_path / "y.png")])
    assert rc == 2 and "missing.pt" in capsys.readouterr().err
    rc = main(["run", "generate", "--steps", "0", "--model", "tiny-clip", "--pretrained", "random",
               "--out", str(tmp_path / "z.png")])
    assert rc == 2 and "steps=0" in capsys.readouterr().err
